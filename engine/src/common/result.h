// Result<T>: a value or an Error, for fallible functions.
#ifndef CRUCIBLE_COMMON_RESULT_H_
#define CRUCIBLE_COMMON_RESULT_H_

#include <string>
#include <utility>
#include <variant>

#include "common/check.h"

namespace crucible {

enum class ErrorCode {
  kInvalidArgument,  ///< the user gave something wrong
  kNotFound,
  kAlreadyExists,
  kIo,               ///< the file system or the database failed
  kStorageFull,      ///< SQLITE_FULL / ENOSPC
  kBusy,             ///< another writer holds the run
  kUnavailable,      ///< a backend could not be reached or loaded
  kVersion,          ///< an ABI or schema version mismatch
  kFenced,           ///< another engine took the run over: this one must not write
  kInternal,
};

/// What went wrong, for a human.
struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
};

/// A value or an Error. Thread-safety: as the value it holds.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    CRUCIBLE_CHECK(ok(), "value() of an error Result");
    return std::get<0>(v_);
  }
  const T& value() const& {
    CRUCIBLE_CHECK(ok(), "value() of an error Result");
    return std::get<0>(v_);
  }
  T&& value() && {
    CRUCIBLE_CHECK(ok(), "value() of an error Result");
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }

  const Error& error() const {
    CRUCIBLE_CHECK(!ok(), "error() of an ok Result");
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

/// Result of a function that returns nothing on success.
struct Ok {};
using Status = Result<Ok>;

inline Error MakeError(ErrorCode code, std::string message) { return Error{code, std::move(message)}; }

}  // namespace crucible

#endif  // CRUCIBLE_COMMON_RESULT_H_

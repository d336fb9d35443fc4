// WorkflowSpec: a workflow file as written, with source positions; no graph yet.
//
// The loader turns TOML into this; the planner turns this into a Plan.
// Thread-safety: plain values, no synchronisation.
#ifndef CRUCIBLE_LOADER_WORKFLOW_SPEC_H_
#define CRUCIBLE_LOADER_WORKFLOW_SPEC_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/diagnostic.h"

namespace crucible::loader {

/// A value and where it was written.
template <typename T>
struct Located {
  T value{};
  SourcePos pos;
};

enum class When { kOnSuccess, kOnFailure, kAlways };

/// One entry of `retry_on`.
struct RetryOn {
  enum class Kind { kTimeout, kOomKilled, kExited, kExitCode };
  Kind kind = Kind::kExited;
  int exit_code = 0;  ///< for kExitCode
};

/// `for_each`: absent, a list (`{{item}}`), or a table of axes (`{{NAME}}`, cartesian product).
struct ForEach {
  enum class Kind { kNone, kList, kAxes };
  Kind kind = Kind::kNone;
  /// kList: items as strings (TOML integers/floats/bools are converted to their text).
  std::vector<std::string> items;
  /// kAxes: in file order; each axis has at least one value.
  std::vector<std::pair<std::string, std::vector<std::string>>> axes;
  SourcePos pos;
};

/// One key of a `[backends.NAME]` or `[steps.NAME]` table, untyped until the
/// engine checks it against the options the plugin declares.
struct RawOption {
  std::string key;
  nlohmann::json value;  ///< string, integer, float, boolean, array or object
  SourcePos pos;
};

/// A `[backends.NAME]` / `[steps.NAME]` table.
struct RawOptionTable {
  std::vector<RawOption> options;
  SourcePos pos;  ///< of the table itself
};

/// The step keys that `[defaults]` may set too. Absent keys are nullopt/empty.
struct StepFields {
  std::optional<Located<std::vector<std::string>>> run;
  std::optional<Located<std::string>> shell;
  std::optional<Located<When>> when;
  /// Merged key by key with [defaults] (the step wins); file order kept.
  std::vector<std::pair<std::string, Located<std::string>>> env;
  std::optional<Located<std::vector<Located<std::string>>>> inputs;
  std::optional<Located<int64_t>> timeout_ms;
  std::optional<Located<int64_t>> retries;
  std::optional<Located<std::vector<RetryOn>>> retry_on;
  std::optional<Located<int64_t>> retry_delay_ms;
  std::optional<Located<int64_t>> cpu_millicores;  ///< resources.cpu
  std::optional<Located<int64_t>> memory_bytes;    ///< resources.memory
  std::optional<Located<std::string>> image;
  std::optional<Located<std::string>> backend;
  /// Per-backend sub-tables (`[steps.kubernetes]`), by backend name.
  std::map<std::string, RawOptionTable> backend_options;
};

/// One `[[steps]]` entry.
struct StepSpec : StepFields {
  Located<std::string> id;
  std::vector<Located<std::string>> needs;
  ForEach for_each;
  SourcePos pos;  ///< of the `[[steps]]` header
};

/// A whole workflow file.
struct WorkflowSpec {
  std::string file;          ///< path as the user gave it (used in diagnostics)
  std::string dir;           ///< absolute, canonical directory of the file
  std::string source_sha256; ///< hex digest of the file's bytes
  Located<std::string> name;
  std::string description;
  Located<std::string> backend{"localproc", {}};  ///< [workflow] backend
  std::optional<Located<int64_t>> max_parallel;
  bool fail_fast = false;
  std::optional<Located<int64_t>> timeout_ms;  ///< deadline of the whole run
  /// [params]: name -> default value as text, file order.
  std::vector<std::pair<std::string, Located<std::string>>> params;
  StepFields defaults;
  /// [env], file order.
  std::vector<std::pair<std::string, Located<std::string>>> env;
  /// [backends.NAME], by name.
  std::map<std::string, RawOptionTable> backends;
  std::vector<StepSpec> steps;
  SourcePos workflow_pos;  ///< of [workflow], for errors about the whole file
};

}  // namespace crucible::loader

#endif  // CRUCIBLE_LOADER_WORKFLOW_SPEC_H_

// SHA-256 of bytes, as lowercase hex (OpenSSL's EVP underneath).
#ifndef CRUCIBLE_COMMON_SHA256_H_
#define CRUCIBLE_COMMON_SHA256_H_

#include <string>
#include <string_view>

namespace crucible {

/// Lowercase hex SHA-256 digest of `data`.
std::string Sha256Hex(std::string_view data);

}  // namespace crucible

#endif  // CRUCIBLE_COMMON_SHA256_H_

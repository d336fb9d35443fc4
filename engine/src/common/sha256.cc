#include "common/sha256.h"

#include <openssl/evp.h>

#include "common/check.h"

namespace crucible {

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  int ok = EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  CRUCIBLE_CHECK(ok == 1, "EVP_Digest(sha256) failed");
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

}  // namespace crucible

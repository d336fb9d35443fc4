#include "common/check.h"

#include <cstdio>
#include <cstdlib>

namespace crucible {

void CheckFailed(const char* file, int line, const char* expr, const char* message) {
  std::fprintf(stderr, "crucible-engine: internal error at %s:%d: %s (%s)\n", file, line, message, expr);
  std::abort();
}

}  // namespace crucible

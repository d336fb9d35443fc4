// CRUCIBLE_CHECK: asserts an invariant our own code guarantees.
// The environment (files, databases, plugins) is handled, never checked.
#ifndef CRUCIBLE_COMMON_CHECK_H_
#define CRUCIBLE_COMMON_CHECK_H_

namespace crucible {
[[noreturn]] void CheckFailed(const char* file, int line, const char* expr, const char* message);
}  // namespace crucible

#define CRUCIBLE_CHECK(cond, message)                                  \
  do {                                                                 \
    if (!(cond)) ::crucible::CheckFailed(__FILE__, __LINE__, #cond, message); \
  } while (0)

#endif  // CRUCIBLE_COMMON_CHECK_H_

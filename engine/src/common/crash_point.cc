#include "common/crash_point.h"

#ifdef CRUCIBLE_CRASH_POINTS
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace crucible {

void CrashPoint(const char* name) {
  static const std::string target = [] {
    const char* v = std::getenv("CRUCIBLE_CRASH_AT");
    return std::string(v ? v : "");
  }();
  if (target.empty()) return;
  std::string wanted = target;
  long nth = 1;
  if (size_t colon = target.rfind(':'); colon != std::string::npos) {
    wanted = target.substr(0, colon);
    nth = std::strtol(target.c_str() + colon + 1, nullptr, 10);
  }
  if (wanted != name) return;
  static long hits = 0;
  if (++hits < nth) return;
  ::kill(::getpid(), SIGKILL);
  ::_exit(137);  // not reached
}

}  // namespace crucible
#endif

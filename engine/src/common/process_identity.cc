#include "common/process_identity.h"
#include <stdexcept>
#include <cerrno>
#include <signal.h>

#include <unistd.h>

#include <climits>
#include <fstream>
#include <sstream>

namespace crucible {

std::string ProcessStartTime(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!in || !std::getline(in, line)) return "";
  // Field 2 (comm) is in parentheses and may hold spaces: count fields after its last ')'.
  size_t close = line.rfind(')');
  if (close == std::string::npos) return "";
  std::istringstream rest(line.substr(close + 1));
  std::string field;
  // After comm come fields 3, 4, ...; field 22 is the 20th of them.
  for (int i = 3; i <= 22; ++i) {
    if (!(rest >> field)) return "";
  }
  return field;
}

std::string HostName() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

bool ProcessGone(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!in || !std::getline(in, line)) return true;
  size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

bool SameStart(const std::string& recorded, const std::string& now) {
  if (recorded.empty() || now.empty()) return false;
  try {
    long long a = std::stoll(recorded), b = std::stoll(now);
    return a - b <= 1 && b - a <= 1;
  } catch (const std::exception&) {
    return false;
  }
}

bool ProcessAlive(pid_t pid, const std::string& start) {
  return pid > 0 && !ProcessGone(pid) && SameStart(start, ProcessStartTime(pid));
}

}  // namespace crucible

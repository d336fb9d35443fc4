#include "cli/terminal.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>

namespace crucible::cli {

bool IsTerminal(int fd) { return isatty(fd) == 1; }

int TerminalWidth(int fd, int fallback) {
  struct winsize ws {};
  if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return fallback;
}

std::string EscapeControlBytes(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) {
    auto c = static_cast<unsigned char>(bytes[i]);
    if (c == '\n' || c == '\t') {
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else if (c == 0xc2 && i + 1 < bytes.size() && static_cast<unsigned char>(bytes[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(bytes[i + 1]) <= 0x9f) {
      // A C1 control in UTF-8 (CSI is U+009B): terminals may act on it.
      auto c1 = static_cast<unsigned char>(bytes[i + 1]);
      out += "\\u00";
      out += kHex[c1 >> 4];
      out += kHex[c1 & 0xf];
      ++i;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

namespace {

std::string FormatTime(int64_t epoch_ms, const char* fmt, bool utc) {
  time_t secs = static_cast<time_t>(epoch_ms / 1000);
  struct tm tm {};
  if (utc) {
    gmtime_r(&secs, &tm);
  } else {
    localtime_r(&secs, &tm);
  }
  char buf[64];
  size_t n = strftime(buf, sizeof buf, fmt, &tm);
  return std::string(buf, n);
}

}  // namespace

std::string FormatClock(int64_t epoch_ms) { return FormatTime(epoch_ms, "%H:%M:%S", false); }

std::string FormatLocalDateTime(int64_t epoch_ms) { return FormatTime(epoch_ms, "%Y-%m-%d %H:%M:%S", false); }

std::string FormatIsoUtc(int64_t epoch_ms) {
  char ms[8];
  snprintf(ms, sizeof ms, ".%03dZ", static_cast<int>(((epoch_ms % 1000) + 1000) % 1000));
  return FormatTime(epoch_ms, "%Y-%m-%dT%H:%M:%S", true) + ms;
}

std::string FormatElapsed(int64_t ms) {
  if (ms < 0) ms = 0;
  char buf[32];
  if (ms < 60'000) {
    snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000.0);
  } else if (ms < 3'600'000) {
    snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(ms / 60'000), static_cast<int>((ms / 1000) % 60));
  } else {
    snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(ms / 3'600'000), static_cast<int>((ms / 60'000) % 60));
  }
  return buf;
}

}  // namespace crucible::cli

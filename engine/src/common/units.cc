#include "common/units.h"

#include <cmath>
#include <cstddef>
#include <string_view>

namespace crucible {

namespace {

/// Largest value any parser here returns: far beyond any sensible limit, far below overflow.
constexpr long double kMaxValue = 4.0e18L;

/// A decimal number at the start of `s` ("12", "1.5", ".5" is refused); advances `pos`.
std::optional<long double> ParseDecimal(std::string_view s, size_t& pos) {
  size_t start = pos;
  long double value = 0;
  while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
    value = value * 10 + (s[pos] - '0');
    if (value > kMaxValue) return std::nullopt;
    ++pos;
  }
  if (pos == start) return std::nullopt;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t frac_start = pos;
    long double scale = 0.1L;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      value += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (pos == frac_start) return std::nullopt;
  }
  return value;
}

}  // namespace

std::optional<int64_t> ParseDuration(const std::string& text) {
  std::string_view s = text;
  if (s.empty()) return std::nullopt;
  if (s == "0") return 0;
  // Units from largest to smallest; each may appear once, in this order.
  struct Unit {
    std::string_view name;
    long double ms;
  };
  static constexpr Unit kUnits[] = {{"d", 86400000.0L}, {"h", 3600000.0L}, {"m", 60000.0L},
                                    {"s", 1000.0L},     {"ms", 1.0L}};
  constexpr int kUnitCount = sizeof(kUnits) / sizeof(kUnits[0]);
  size_t pos = 0;
  int next_unit = 0;
  long double total = 0;
  while (pos < s.size()) {
    std::optional<long double> number = ParseDecimal(s, pos);
    if (!number) return std::nullopt;
    size_t unit_start = pos;
    while (pos < s.size() && s[pos] >= 'a' && s[pos] <= 'z') ++pos;
    std::string_view unit = s.substr(unit_start, pos - unit_start);
    int found = -1;
    for (int i = next_unit; i < kUnitCount; ++i) {
      if (kUnits[i].name == unit) {
        found = i;
        break;
      }
    }
    if (found < 0) return std::nullopt;
    total += *number * kUnits[found].ms;
    if (total > kMaxValue) return std::nullopt;
    next_unit = found + 1;
  }
  return static_cast<int64_t>(std::llround(total));
}

std::optional<int64_t> ParseMemory(const std::string& text) {
  std::string_view s = text;
  size_t pos = 0;
  std::optional<long double> number = ParseDecimal(s, pos);
  if (!number) return std::nullopt;
  std::string_view suffix = s.substr(pos);
  struct Suffix {
    std::string_view name;
    long double factor;
  };
  static constexpr Suffix kSuffixes[] = {
      {"", 1.0L},
      {"k", 1e3L},
      {"M", 1e6L},
      {"G", 1e9L},
      {"T", 1e12L},
      {"P", 1e15L},
      {"Ki", 1024.0L},
      {"Mi", 1024.0L * 1024},
      {"Gi", 1024.0L * 1024 * 1024},
      {"Ti", 1024.0L * 1024 * 1024 * 1024},
      {"Pi", 1024.0L * 1024 * 1024 * 1024 * 1024},
  };
  for (const Suffix& candidate : kSuffixes) {
    if (candidate.name != suffix) continue;
    // Fractions round up to whole bytes (as Kubernetes does), ignoring float noise.
    long double bytes = std::ceil(*number * candidate.factor - 1e-6L);
    if (bytes > kMaxValue) return std::nullopt;
    return static_cast<int64_t>(bytes);
  }
  return std::nullopt;
}

std::optional<int64_t> ParseCpuMillicores(const std::string& text) {
  std::string_view s = text;
  size_t pos = 0;
  std::optional<long double> number = ParseDecimal(s, pos);
  if (!number) return std::nullopt;
  std::string_view suffix = s.substr(pos);
  long double millicores;
  if (suffix.empty()) {
    millicores = *number * 1000;
  } else if (suffix == "m") {
    millicores = *number;
  } else {
    return std::nullopt;
  }
  if (millicores > kMaxValue) return std::nullopt;
  return static_cast<int64_t>(std::llround(millicores));
}

std::string FormatDuration(int64_t ms) {
  if (ms < 0) return "-" + FormatDuration(ms == INT64_MIN ? INT64_MAX : -ms);
  if (ms == 0) return "0s";
  if (ms < 1000) return std::to_string(ms) + "ms";
  std::string out;
  int64_t days = ms / 86400000;
  int64_t hours = ms / 3600000 % 24;
  int64_t minutes = ms / 60000 % 60;
  int64_t seconds = ms / 1000 % 60;
  int64_t millis = ms % 1000;
  if (days > 0) out += std::to_string(days) + "d";
  if (hours > 0) out += std::to_string(hours) + "h";
  if (minutes > 0) out += std::to_string(minutes) + "m";
  if (seconds > 0 || millis > 0) {
    out += std::to_string(seconds);
    if (millis > 0) {
      std::string frac = std::to_string(millis + 1000).substr(1);  // three digits
      while (!frac.empty() && frac.back() == '0') frac.pop_back();
      out += "." + frac;
    }
    out += "s";
  }
  return out;
}

}  // namespace crucible

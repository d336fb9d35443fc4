// Parsing of the format's units: durations, memory quantities, CPU.
#ifndef CRUCIBLE_COMMON_UNITS_H_
#define CRUCIBLE_COMMON_UNITS_H_

#include <cstdint>
#include <optional>
#include <string>

namespace crucible {

/// "250ms", "30s", "5m", "1h30m", "2d" -> milliseconds. nullopt when malformed
/// or negative. (Integers of seconds are handled by the caller: TOML types them.)
std::optional<int64_t> ParseDuration(const std::string& text);

/// Kubernetes quantity for memory: "256Mi", "1Gi", "500M", "1024" -> bytes.
std::optional<int64_t> ParseMemory(const std::string& text);

/// CPU: "500m" -> 500 millicores, "2" or "0.5" -> 2000 / 500.
std::optional<int64_t> ParseCpuMillicores(const std::string& text);

/// 1500 -> "1.5s", 90000 -> "1m30s"; for messages.
std::string FormatDuration(int64_t ms);

}  // namespace crucible

#endif  // CRUCIBLE_COMMON_UNITS_H_

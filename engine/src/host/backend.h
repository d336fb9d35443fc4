// Backend: the engine's view of one backend instance (one per run per backend).
//
// PluginBackend adapts a loaded plugin's C table to this; tests use
// FakeBackend. The scheduler sees only this interface.
//
// Thread-safety: called from the scheduler thread only; the Waker given at
// creation may be signalled from any thread.
#ifndef CRUCIBLE_HOST_BACKEND_H_
#define CRUCIBLE_HOST_BACKEND_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "crucible/backend_abi.h"
#include "common/result.h"

namespace crucible::host {

/// A typed, validated option value for a plugin.
struct OptionValue {
  std::string name;
  crucible_option_type type = CRUCIBLE_OPTION_UNSET;
  std::string string_value;
  int64_t int_value = 0;   ///< INT, BOOL (0/1), DURATION (ms)
  double float_value = 0;
  std::vector<std::string> list;
  std::vector<std::pair<std::string, std::string>> map;
};

/// Everything one attempt needs, in engine types (mirrors crucible_attempt_launch).
struct LaunchSpec {
  uint64_t attempt_key = 0;
  std::string run_id;
  std::string step_id;
  uint32_t attempt = 1;
  std::vector<std::string> argv;
  std::vector<std::pair<std::string, std::string>> env;
  std::vector<std::pair<std::string, std::string>> inputs;  ///< (absolute source, relative dest)
  std::optional<std::string> upstream_json;
  std::string work_dir;
  std::string log_path;
  uint64_t log_cap_bytes = 64ull << 20;
  uint64_t output_cap_bytes = 4096;
  int64_t timeout_ms = 0;
  int64_t cpu_millicores = 0;
  int64_t memory_bytes = 0;
  bool keep_work = false;
  std::string image;
  std::vector<OptionValue> step_options;
};

/// A finished attempt (mirrors crucible_attempt_result, with owned strings).
struct AttemptResult {
  uint64_t attempt_key = 0;
  crucible_outcome outcome = CRUCIBLE_OUTCOME_UNSET;
  crucible_reason reason = CRUCIBLE_REASON_UNSET;
  int exit_code = -1;
  int signal = 0;
  int64_t started_at_ms = 0;
  int64_t ended_at_ms = 0;
  uint64_t log_bytes_kept = 0;
  uint64_t log_bytes_dropped = 0;
  std::optional<std::string> outputs_text;
  std::string message;
};

/// The reason as stored and shown ("exited", "timeout", ...); "" for none.
inline const char* ReasonName(crucible_reason r) {
  switch (r) {
    case CRUCIBLE_REASON_EXITED: return "exited";
    case CRUCIBLE_REASON_TIMEOUT: return "timeout";
    case CRUCIBLE_REASON_OOM_KILLED: return "oom_killed";
    case CRUCIBLE_REASON_CANCELLED: return "cancelled";
    case CRUCIBLE_REASON_BACKEND_ERROR: return "backend_error";
    case CRUCIBLE_REASON_LOST: return "lost";
    case CRUCIBLE_REASON_SIGNALED: return "signaled";
    case CRUCIBLE_REASON_UNSET:
    case CRUCIBLE_REASON_NONE: return "";
  }
  return "";
}

/// An attempt an earlier engine recorded as running (mirrors crucible_adopt_item).
struct AdoptItem {
  uint64_t attempt_key = 0;
  std::string handle;  ///< "" when never recorded
  std::string step_id;
  uint32_t attempt = 0;
};

/// One backend instance serving one run.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual const std::string& name() const = 0;
  /// How many more attempts it accepts now; negative: no limit of its own.
  virtual int64_t Capacity() = 0;
  /// Starts one attempt; returns the durable handle. kUnavailable: infrastructure.
  virtual Result<std::string> Start(const LaunchSpec& launch) = 0;
  /// Appends finished attempts to `out`; waits at most timeout_ms when none is ready.
  virtual Status Poll(int timeout_ms, std::vector<AttemptResult>& out) = 0;
  /// Asks one attempt to stop; its result still arrives through Poll.
  virtual void Cancel(uint64_t attempt_key, int64_t grace_ms) = 0;
  /// Follows attempts of an earlier engine: each arrives through Poll when it
  /// ends, or as lost when it is gone. false: unsupported (the caller records
  /// them lost).
  virtual Result<bool> Adopt(const std::vector<AdoptItem>& /*items*/) { return false; }
};

}  // namespace crucible::host

#endif  // CRUCIBLE_HOST_BACKEND_H_

// What goes into an executor for one attempt and what comes back: the launch
// script and the tar sent to the supervisor's stdin, the demultiplexing of the
// exec's stream, the supervisor's control channel, and the capped log.
#ifndef CRUCIBLE_PLUGINS_COMPOSE_ATTEMPT_IO_H_
#define CRUCIBLE_PLUGINS_COMPOSE_ATTEMPT_IO_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace crucible::plugins::compose {

/// s in single quotes for POSIX sh (any bytes but NUL).
std::string ShellQuote(const std::string& s);

/// The NAME.launch file the supervisor sources: timeout and grace in seconds,
/// the output cap, the argv, and _launch() exporting env. Throws
/// std::invalid_argument for an environment name a shell cannot export.
std::string BuildLaunchScript(int64_t timeout_ms, int64_t grace_ms, uint64_t output_cap,
                              const std::vector<std::string>& argv,
                              const std::vector<std::pair<std::string, std::string>>& env);

/// Whether s is valid UTF-8 (what a JSON string of the Engine API can carry unchanged).
bool IsValidUtf8(const std::string& s);

/// A file to put into the attempt's directory: from a host file or given bytes.
struct TarEntry {
  std::string dest;                    ///< relative to the archive root
  std::optional<std::string> source;   ///< host path to read
  std::string bytes;                   ///< content when source is unset
  int mode = 0644;
};

/// A tar (pax) of the entries, with their parent directories. Throws std::runtime_error.
std::string BuildTar(const std::vector<TarEntry>& entries);

/// Splits Docker's multiplexed exec stream (8-byte frame headers) into its streams.
class FrameDemux {
 public:
  /// stream: 1 stdout, 2 stderr.
  using Sink = std::function<void(int stream, const char* data, size_t len)>;
  explicit FrameDemux(Sink sink) : sink_(std::move(sink)) {}
  void Feed(const char* data, size_t len);

 private:
  Sink sink_;
  unsigned char header_[8] = {};
  size_t header_len_ = 0;
  uint64_t remaining_ = 0;
  int stream_ = 0;
};

/// The supervisor's control channel (supervisor.sh), or its report read back, parsed.
struct ControlReport {
  std::string label;  ///< crucible:RUN/STEP#N, from the report file
  long supervisor_pid = 0;
  long step_pid = 0;
  bool alive = false;  ///< the read-back found the supervisor running
  bool setup_failed = false;
  bool exited = false;
  int rc = -1;      ///< the step's exit code; -1 when a signal ended it
  int signal = 0;   ///< the signal that ended it (rc -1); 0 with rc -1: unknown
  std::string why;  ///< none, timeout, cancelled
  long oom_before = 0;
  long oom_after = 0;
  std::optional<std::string> output;
  std::optional<bool> scrub_ok;
};

/// Lines, then, after "crucible-output", the output bytes to the end (at most max_output).
class ControlParser {
 public:
  explicit ControlParser(uint64_t max_output = 1 << 20) : output_left_(max_output) {}
  void Feed(const char* data, size_t len);
  const ControlReport& report() const { return report_; }
  bool has_pid() const { return report_.supervisor_pid > 0; }

 private:
  void Line(const std::string& line);
  ControlReport report_;
  std::string line_;
  uint64_t output_left_;
  bool in_output_ = false;
};

/// The attempt's log: created on the first byte; within the cap, the output
/// as written; beyond it, the first half of the cap, a marker line with the
/// count of dropped bytes, and the last bytes written (common/log_ring.h: the
/// tail is a ring inside the file, so a flood costs no memory).
class CappedLog {
 public:
  CappedLog(std::string path, uint64_t cap) : path_(std::move(path)), cap_(cap) {}
  ~CappedLog();
  CappedLog(const CappedLog&) = delete;
  CappedLog& operator=(const CappedLog&) = delete;
  void Write(const char* data, size_t len);
  /// Puts head, marker and tail in order (when bytes were dropped) and closes.
  void Finish();
  /// Bytes of output in the log and not in it; final once Finish() returned.
  uint64_t kept() const { return kept_; }
  uint64_t dropped() const { return dropped_; }

 private:
  std::string path_;
  uint64_t cap_;
  int fd_ = -1;
  bool failed_ = false;   ///< the log could not be opened or written: the rest is dropped
  uint64_t written_ = 0;  ///< output placed in the log (the ring's stream position)
  uint64_t lost_ = 0;     ///< output that could not be written at all
  uint64_t kept_ = 0;
  uint64_t dropped_ = 0;
};

}  // namespace crucible::plugins::compose

#endif  // CRUCIBLE_PLUGINS_COMPOSE_ATTEMPT_IO_H_

// What the localproc plugin (in the engine) and its run's supervisor say to
// each other over a unix stream socket.
//
// A frame is a 4-byte little-endian length and that many bytes of JSON; the
// first frame from the plugin is a "hello" that may carry the engine's wake
// eventfd (SCM_RIGHTS). Attempts are named by "<step id>#<attempt>", which the
// engine knows even for an attempt whose handle it never recorded.
//
//   plugin -> supervisor                      supervisor -> plugin
//   {"op":"hello"} (+ wake fd)                {"op":"hello","pid":P,"start":T}
//   {"op":"env","entries":[...]}              {"op":"result","id":..,"result":{..}}
//   {"op":"start","id":..,"launch":{..}}      {"op":"adopted","unknown":[ids]}
//   {"op":"cancel","id":..,"grace_ms":G}      {"op":"bye"} (after shutdown)
//   {"op":"adopt","ids":[ids]}
//   {"op":"shutdown"}
//
// Thread-safety: FrameReader is used from one thread at a time.
#ifndef CRUCIBLE_PLUGINS_LOCALPROC_PROTOCOL_H_
#define CRUCIBLE_PLUGINS_LOCALPROC_PROTOCOL_H_

#include <sys/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "crucible/backend_sdk.hpp"

namespace crucible::plugins::localproc::proto {

using Json = nlohmann::json;

/// Largest frame either side accepts.
inline constexpr uint32_t kMaxFrame = 256u << 20;

/// The abstract socket name a supervisor listens on ("\0crucible-localproc-P-T").
std::string SocketName(pid_t pid, const std::string& start);
/// The journal of finished attempts a supervisor keeps beside the run's logs.
std::string JournalPath(const std::string& logs_dir, pid_t pid, const std::string& start);
/// The cgroups a supervisor made (one path a line), beside its journal: what
/// ReapDeadSupervisors() kills and removes should the supervisor be killed.
std::string CgroupsPath(const std::string& logs_dir, pid_t pid, const std::string& start);
/// Field 22 of /proc/PID/stat (start time in clock ticks since boot); empty
/// when no such process runs (a zombie does not).
std::string StartTimeOf(pid_t pid);
/// Whether the process pid with that start time runs now.
bool ProcessRuns(pid_t pid, const std::string& start);
/// For each supervisor of the run (logs_dir) that is gone without removing its
/// cgroups (it was killed): kills what still runs in them (a step's daemonised
/// grandchildren, which outlive it) and removes them.
void ReapDeadSupervisors(const std::string& logs_dir);
/// The handle every attempt of a supervisor carries.
std::string Handle(pid_t pid, const std::string& start);
/// Parses Handle(); false when it is not one.
bool ParseHandle(const std::string& handle, pid_t* pid, std::string* start);

/// A length-prefixed frame around payload.
std::string Frame(const std::string& payload);
/// Writes all of data to a socket (waiting for room when it is non-blocking); false on error.
bool WriteAll(int fd, const std::string& data);
/// Sends the first frame with fd attached (SCM_RIGHTS) when fd >= 0.
bool SendWithFd(int sock, const std::string& frame, int fd);

/// Collects frames from a stream socket.
class FrameReader {
 public:
  enum class Read { kData, kAgain, kEof, kError };
  /// Reads what is there (a socket or a file; non-blocking: until EAGAIN). Takes one passed fd, if any, into *fd.
  Read ReadSome(int sock, int* fd = nullptr);
  /// The next complete frame's payload, if any; nullopt also for a frame over kMaxFrame (then broken()).
  std::optional<std::string> Next();
  bool broken() const { return broken_; }

 private:
  std::string buf_;
  size_t pos_ = 0;
  bool broken_ = false;
};

// The two messages of every attempt are binary, not JSON (building and
// parsing a JSON document cost the engine about 100,000 instructions per
// no-op step): a payload starting with 'S' starts an attempt, one starting
// with 'R' is a result (also the journal's records). Strings are a 4-byte
// length and their bytes, integers 8 bytes, little-endian. Every other
// message is a JSON object (its payload starts with '{').

/// The payload of a start: id, then the launch.
std::string EncodeStart(const std::string& id, const sdk::Launch& launch);
/// false when the payload is not a whole start.
bool DecodeStart(const std::string& payload, std::string* id, sdk::Launch* launch);
/// The payload of a result (orphan: killed because no engine followed it; journal only).
std::string EncodeResult(const std::string& id, const sdk::Result& result, bool orphan = false);
/// false when the payload is not a whole result.
bool DecodeResult(const std::string& payload, std::string* id, sdk::Result* result, bool* orphan);

/// "<step id>#<attempt>".
std::string AttemptId(const std::string& step_id, uint32_t attempt);

}  // namespace crucible::plugins::localproc::proto

#endif  // CRUCIBLE_PLUGINS_LOCALPROC_PROTOCOL_H_

// Store: every run, step instance, attempt and output, in one SQLite file.
//
// The state of record. The scheduler writes every transition here before it
// acts on it (an attempt row exists before its backend's start() is called).
// WAL mode, a busy timeout, write transactions BEGIN IMMEDIATE, a versioned
// schema (PRAGMA user_version) migrated in transactions; a database made by a
// newer crucible-engine is refused.
//
// Thread-safety: a Store is used from one thread. Several processes may open
// the same file (SQLite locks).
#ifndef CRUCIBLE_STORE_STORE_H_
#define CRUCIBLE_STORE_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"

namespace crucible::store {

/// Current schema version (PRAGMA user_version).
inline constexpr int kSchemaVersion = 4;

enum class RunState { kRunning, kSucceeded, kFailed, kCancelled, kInterrupted };
enum class StepState { kPending, kRunning, kSucceeded, kFailed, kSkipped, kCancelled };

/// "running", "succeeded", ... as stored and shown.
const char* ToString(RunState s);
const char* ToString(StepState s);
std::optional<RunState> ParseRunState(const std::string& s);
std::optional<StepState> ParseStepState(const std::string& s);

struct RunRow {
  std::string id;
  std::string workflow;      ///< [workflow] name
  std::string file;          ///< path as given
  std::string source_text;   ///< the workflow file's text at submit
  std::string source_sha256;
  std::string params_json;   ///< params after --set
  RunState state = RunState::kRunning;
  int64_t created_at_ms = 0;
  int64_t ended_at_ms = 0;   ///< 0 while running
  int exit_code = -1;        ///< the engine's exit code, -1 while running
  int step_count = 0;
  int64_t owner_pid = 0;     ///< the engine process running it (0: unknown, a v1 record)
  std::string owner_host;    ///< that process's host name
  std::string owner_start;   ///< that process's start time (field 22 of /proc/PID/stat), to tell a reused pid
  int64_t owner_token = 0;   ///< fencing token: raised by every takeover; writes check it
  int64_t heartbeat_at_ms = 0;  ///< the owner's last heartbeat (its lease runs from here)
};

/// The owner a takeover expects to replace, and who replaces it.
struct OwnerChange {
  int64_t expect_token = 0;
  int64_t pid = 0;
  std::string host;
  std::string start;
  int64_t now_ms = 0;
};

struct StepRow {
  std::string run_id;
  int idx = 0;               ///< TaskId in the plan
  std::string step_id;       ///< instance id
  std::string backend;
  StepState state = StepState::kPending;
  std::string reason;        ///< failed: exited/timeout/...; skipped: upstream_failed/condition_false
  int attempts = 0;
  int exit_code = -1;
  std::string message;       ///< why it ended so, for the user (its last attempt's message, or why it never started)
};

struct AttemptRow {
  std::string run_id;
  int step_idx = 0;
  int number = 0;            ///< 1-based
  std::string state;         ///< "running", "succeeded", "failed", "cancelled"
  std::string reason;        ///< "", exited, timeout, oom_killed, cancelled, backend_error, lost, signaled
  int exit_code = -1;
  int signal = 0;
  int64_t started_at_ms = 0;
  int64_t ended_at_ms = 0;
  std::string log_path;
  int64_t log_bytes = 0;
  int64_t log_dropped = 0;
  std::string handle;        ///< backend handle text, "" until start() returned
  std::string message;
  bool infra = false;        ///< an infrastructure failure, not charged to `retries`
};

struct OutputRow {
  int step_idx = 0;
  std::string step_id;
  std::string key;
  std::string value;
};

/// The store. Open() creates the state directory and the database as needed.
class Store {
 public:
  /// Opens (creating or migrating) `state_dir`/crucible.db.
  static Result<std::unique_ptr<Store>> Open(const std::string& state_dir);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::string& state_dir() const { return state_dir_; }
  const std::string& db_path() const { return db_path_; }

  /// Runs `body` in one BEGIN IMMEDIATE transaction; the writes below join it.
  /// Commits when body returns ok, rolls back otherwise. Not reentrant.
  Status Transaction(const std::function<Status()>& body);

  // Writes. Outside Transaction() each is its own transaction.
  Status CreateRun(const RunRow& run, const std::vector<StepRow>& steps);
  Status InsertAttempt(const AttemptRow& attempt);            ///< write-ahead, before start()
  Status SetAttemptHandle(const std::string& run_id, int step_idx, int number, const std::string& handle);
  Status FinishAttempt(const AttemptRow& attempt);            ///< state, reason, codes, end, log sizes, message
  Status SetStepState(const StepRow& step);                   ///< state, reason, attempts, exit_code, message
  Status PutOutputs(const std::string& run_id, int step_idx, const std::vector<std::pair<std::string, std::string>>& outputs);
  Status FinishRun(const std::string& run_id, RunState state, int64_t ended_at_ms, int exit_code);
  /// Records the engine process that runs (or continues) a run: pid, host name, start time.
  Status SetRunOwner(const std::string& run_id, int64_t pid, const std::string& host, const std::string& start);
  /// Makes the caller the run's owner if its token is still expect_token:
  /// records pid, host and start, a fresh heartbeat, and returns the new
  /// token (expect_token + 1). kBusy when someone else took it meanwhile.
  Result<int64_t> TakeOver(const std::string& run_id, const OwnerChange& change);
  /// Inside a Transaction(): kFenced unless the run's token is still `token`.
  Status CheckOwner(const std::string& run_id, int64_t token);
  /// The owner's heartbeat.
  Status Heartbeat(const std::string& run_id, int64_t now_ms);
  /// Deletes one step's outputs (a step run again starts without its old ones).
  Status ClearOutputs(const std::string& run_id, int step_idx);

  // Reads (indexed).
  Result<std::vector<RunRow>> ListRuns(int limit) const;      ///< newest first, without source_text
  /// By full id or a unique prefix.
  Result<RunRow> GetRun(const std::string& id_or_prefix) const;
  Result<std::vector<StepRow>> GetSteps(const std::string& run_id) const;
  Result<std::vector<AttemptRow>> GetAttempts(const std::string& run_id, std::optional<int> step_idx) const;
  Result<std::vector<OutputRow>> GetOutputs(const std::string& run_id) const;

  /// How many of a run's steps are in each state (states with no step left out), for `runs`.
  Result<std::vector<std::pair<StepState, int>>> CountSteps(const std::string& run_id) const;
  /// Finished runs (succeeded, failed, cancelled) that ended before `ended_before_ms`,
  /// oldest first, without source_text. Running and interrupted runs are never listed.
  Result<std::vector<RunRow>> ListFinishedBefore(int64_t ended_before_ms) const;

  // Pruning.
  /// Deletes a run and (by cascade) its steps, attempts and outputs; kNotFound if absent.
  /// Joins a surrounding Transaction().
  Status DeleteRun(const std::string& run_id);
  /// Gives the space of deleted rows back to the file system: VACUUM, then a
  /// truncating WAL checkpoint. Not inside Transaction().
  Status Compact();

  /// The SQL of the read queries above, for EXPLAIN QUERY PLAN in tests.
  static std::vector<std::string> ReadQueries();
  /// Executes raw SQL on this connection (tests only: PRAGMA max_page_count and the like).
  Status ExecForTesting(const std::string& sql);

 private:
  struct Impl;  // SQLiteCpp lives only in store.cc
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string state_dir_;
  std::string db_path_;
};

}  // namespace crucible::store

#endif  // CRUCIBLE_STORE_STORE_H_

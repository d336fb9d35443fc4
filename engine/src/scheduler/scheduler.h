// Scheduler: runs one Plan to its end on a set of backends, recording every
// transition in the Store before acting on it.
//
// Step instance state machine (the store's StepState):
//
//   pending --(needs finished, `when` true, slot free)--> running
//   pending --(`when` false)--> skipped {upstream_failed | condition_false}
//   pending --(an upstream output key is missing)--> failed {missing_output}, no attempt
//   pending --(cancel, run deadline)--> cancelled {cancelled | timeout}
//   pending --(after fail_fast, `when` = on_success)--> skipped {fail_fast}
//   running --(attempt succeeded)--> succeeded
//   running --(attempt failed, retry allowed)--> running (next attempt after backoff)
//   running --(attempt failed, no retry left)--> failed {exited | timeout | oom_killed | lost | ...}
//   running --(cancel, run deadline, fail_fast)--> cancelled {cancelled | timeout | fail_fast}
//
// Retries: `retries` counts failures matching retry_on; lost / backend_error
// attempts are retried max_infra_retries times without being counted. Backoff
// retry_delay * 2^(attempt-1), capped at 5 minutes, +-10% jitter.
//
// Files: logs at <state_dir>/logs/<run_id>/<SafeName(instance)>.attempt-<N>.log
// (one directory per run), work dirs <state_dir>/work/<run_id>/<SafeName>-<N>
// (created by the backend).
//
// One thread: start() returns at once and completions come back through
// Backend::Poll(); the loop sleeps on a Waker (an eventfd the backends signal
// through the host) or until the next timer (backoff, attempt or run deadline).
//
// Thread-safety: Run() on one thread. RequestCancel() may be called from any
// thread or from a signal handler (it only writes to the eventfd).
#ifndef CRUCIBLE_SCHEDULER_SCHEDULER_H_
#define CRUCIBLE_SCHEDULER_SCHEDULER_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "host/backend.h"
#include "plan/plan.h"
#include "store/store.h"

namespace crucible::scheduler {

/// Exit codes of the engine (the format's "States and exit codes").
enum class ExitCode : int {
  kSuccess = 0,
  kStepFailed = 1,
  kInvalid = 2,
  kBackendUnavailable = 3,
  kInterrupted = 130,
};

class Waker;

/// Wall time in epoch milliseconds and a monotonic clock; fakeable.
class Clock {
 public:
  virtual ~Clock() = default;
  /// Epoch milliseconds, for the record.
  virtual int64_t NowMs() = 0;
  /// Monotonic milliseconds, for deadlines and backoff.
  virtual int64_t MonotonicMs() = 0;
  /// Where the scheduler blocks: waits on `waker` at most timeout_ms (-1: no
  /// bound). Returns true when woken. A fake clock advances its time instead.
  virtual bool Wait(const Waker& waker, int timeout_ms);
};

/// The real clock.
class SystemClock : public Clock {
 public:
  int64_t NowMs() override;
  int64_t MonotonicMs() override;
};

/// An eventfd the backends (any thread) and signal handlers write to, and the
/// scheduler waits on. Async-signal-safe Wake().
class Waker {
 public:
  Waker();
  ~Waker();
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;
  void Wake() const;
  /// Waits until woken or timeout_ms passed (-1: forever); clears the wake.
  /// Returns true when woken.
  bool Wait(int timeout_ms) const;
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

/// Read-only events for progress displays and tests. Called on the scheduler thread.
class Observer {
 public:
  virtual ~Observer() = default;
  virtual void OnRunStarted(const std::string& /*run_id*/, const plan::Plan& /*plan*/) {}
  virtual void OnStepState(plan::TaskId /*task*/, store::StepState /*state*/, const std::string& /*reason*/) {}
  virtual void OnAttemptStarted(plan::TaskId /*task*/, int /*attempt*/, const std::string& /*handle*/) {}
  virtual void OnAttemptFinished(plan::TaskId /*task*/, int /*attempt*/, const host::AttemptResult& /*result*/) {}
  virtual void OnRunFinished(store::RunState /*state*/, ExitCode /*code*/) {}
  /// Called once per loop turn, for live displays.
  virtual void OnTick() {}
  /// Why a step failed without an attempt (a missing upstream output key), for the user.
  virtual void OnStepMessage(plan::TaskId /*task*/, const std::string& /*message*/) {}
};

struct RunOptions {
  std::string run_id;
  std::string workflow_file;     ///< as given, for the record
  std::string source_text;       ///< the file's text at submit
  std::string source_sha256;
  int max_parallel = 0;          ///< 0: the plan's
  bool keep_work = false;
  uint64_t log_cap_bytes = 64ull << 20;
  uint64_t output_cap_bytes = 4096;
  int64_t cancel_grace_ms = 5000;
  int max_infra_retries = 3;
  /// Validated [steps.NAME] options per TaskId for the step's backend; empty: none.
  std::vector<std::vector<host::OptionValue>> step_options;
  /// Continue the finished run `run_id` already in the store (whose steps must be
  /// this plan's) instead of creating one: succeeded steps are kept with their
  /// outputs, every other step runs again from pending, its attempt numbers
  /// continuing after the highest recorded and with a fresh `retries` budget.
  /// workflow_file, source_text and source_sha256 are then unused.
  bool resume_from_store = false;
  /// Continue the run `run_id` whose engine died while it ran (`resume`):
  /// succeeded and otherwise finished steps are kept, attempts recorded as
  /// running are handed to their backends (Backend::Adopt) and followed to
  /// their end or recorded lost, steps waiting for a retry get it now, and
  /// the rest runs as it would have. The run's timeout counts from its start.
  bool resume_running = false;
  /// The run's fencing token (Store::TakeOver); every write transaction
  /// checks it, and a heartbeat renews the lease. 0: a new run (token 1).
  int64_t owner_token = 0;
  /// The owner's lease: a heartbeat every lease_ms / 3; a turn that starts
  /// more than lease_ms / 2 after the last commit checks ownership first.
  /// 0: no lease kept (tests of the loop alone).
  int64_t lease_ms = 0;
};

struct RunSummary {
  store::RunState state = store::RunState::kRunning;
  ExitCode exit_code = ExitCode::kSuccess;
};

/// Runs one plan. Create, Run() once.
class Scheduler {
 public:
  /// `backends` by name: every name in plan.backend_names() must be present.
  Scheduler(const plan::Plan& plan, store::Store& store, std::map<std::string, host::Backend*> backends,
            Clock& clock, const Waker& waker, Observer* observer, RunOptions options);
  ~Scheduler();

  /// Records the run (or, with RunOptions::resume_from_store, reopens the stored
  /// one), runs it to the end, records the end. An error means the store could
  /// not be read or written (the run is left resumable), or, when continuing,
  /// that the stored steps are not this plan's (kInvalid).
  Result<RunSummary> Run();

  /// Stop dispatching, cancel what runs, record cancelled. Async-signal-safe.
  void RequestCancel();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// A new run id: sortable by time, unique ("20261125-153012-a3f9").
std::string NewRunId();

}  // namespace crucible::scheduler

#endif  // CRUCIBLE_SCHEDULER_SCHEDULER_H_

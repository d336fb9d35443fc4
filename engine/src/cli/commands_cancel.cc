// `cancel RUN`: stops a run from another process. A live engine is sent SIGTERM
// (it cancels, records `cancelled`, exits 130). Where the engine is gone, the
// run's local step processes are found through their handles and stopped, and
// the cancel is recorded here; steps of other backends (containers, Jobs) are
// stopped by those backends: the run is taken over as `resume` would, what
// runs is adopted and cancelled at once (CancelThroughBackends).
#include <signal.h>
#include <sys/types.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <map>
#include <set>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "cli/commands.h"
#include "cli/run_view.h"
#include "common/process_identity.h"
#include "store/store.h"

namespace crucible::cli {
namespace {

using Ms = std::chrono::milliseconds;
constexpr int kExitRunCancelled = 130;

int64_t NowMs() {
  return std::chrono::duration_cast<Ms>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
template <typename Cond>
bool PollUntil(Cond cond, Ms timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(Ms(50));
  }
  return true;
}

/// A localproc handle: "supervisor=P start=T" (the run's supervisor, which
/// owns the step processes), or "pid=P start=T pgid=G" (a step process, as
/// recorded before the supervisor existed).
struct LocalHandle {
  pid_t pid = 0;
  std::string start;
  pid_t pgid = 0;  ///< 0: a supervisor
};

std::optional<LocalHandle> ParseLocalHandle(const std::string& handle) {
  int pid = 0, pgid = 0, used = 0;
  unsigned long long start = 0;
  if (std::sscanf(handle.c_str(), "supervisor=%d start=%llu%n", &pid, &start, &used) == 2 &&
      static_cast<size_t>(used) == handle.size() && pid > 0) {
    return LocalHandle{pid, std::to_string(start), 0};
  }
  used = 0;
  if (std::sscanf(handle.c_str(), "pid=%d start=%llu pgid=%d%n", &pid, &start, &pgid, &used) != 3) return std::nullopt;
  if (static_cast<size_t>(used) != handle.size() || pid <= 0 || pgid <= 0) return std::nullopt;
  return LocalHandle{pid, std::to_string(start), pgid};
}

/// Stops a supervisor: on SIGTERM it stops its steps (SIGTERM, SIGKILL after
/// its grace), records them and exits. True when it was running.
bool StopSupervisor(const LocalHandle& h) {
  if (!ProcessAlive(h.pid, h.start)) return false;
  ::kill(h.pid, SIGTERM);
  if (!PollUntil([&] { return ProcessGone(h.pid); }, Ms(60000))) ::kill(h.pid, SIGKILL);
  return true;
}

/// Stops a step's process group (SIGTERM, then SIGKILL after a grace); true when it was running.
bool StopGroup(const LocalHandle& h) {
  if (!ProcessAlive(h.pid, h.start)) return false;
  ::kill(-h.pgid, SIGTERM);
  if (!PollUntil([&] { return ProcessGone(h.pid); }, Ms(2000))) {
    ::kill(-h.pgid, SIGKILL);
    PollUntil([&] { return ProcessGone(h.pid); }, Ms(5000));
  } else {
    ::kill(-h.pgid, SIGKILL);  // what else the group holds; ESRCH when nothing
  }
  return true;
}

int Fail(const std::string& message) {
  std::cerr << "crucible-engine: error: " << message << "\n";
  return kExitFailed;
}

/// The engine is gone: stop the attempts' processes and record the run cancelled.
int CancelOrphaned(store::Store& store, const store::RunRow& run) {
  Result<std::vector<store::AttemptRow>> attempts = store.GetAttempts(run.id, std::nullopt);
  if (!attempts.ok()) return Fail(attempts.error().message);
  Result<std::vector<store::StepRow>> steps = store.GetSteps(run.id);
  if (!steps.ok()) return Fail(steps.error().message);
  const std::string gone = "cancelled by `crucible-engine cancel`; its engine was gone";
  int stopped = 0;
  std::set<pid_t> stopped_supervisors;
  std::vector<store::AttemptRow> finished;
  for (const store::AttemptRow& a : *attempts) {
    if (a.state != "running") continue;
    store::AttemptRow f = a;
    f.state = "cancelled";
    f.reason = "cancelled";
    f.ended_at_ms = NowMs();
    f.message = gone;
    if (std::optional<LocalHandle> h = ParseLocalHandle(a.handle)) {
      if (h->pgid == 0) {
        // One supervisor serves many attempts: stop it once.
        if (stopped_supervisors.insert(h->pid).second && StopSupervisor(*h)) ++stopped;
      } else if (StopGroup(*h)) {
        ++stopped;
      }
    } else {
      f.message = gone + "; its handle \"" + a.handle + "\" is not a local process, so it could not be stopped from here";
    }
    finished.push_back(std::move(f));
  }
  int64_t now = NowMs();
  Status s = store.Transaction([&]() -> Status {
    for (const store::AttemptRow& f : finished) {
      Status w = store.FinishAttempt(f);
      if (!w.ok()) return w;
    }
    for (const store::StepRow& step : *steps) {
      if (step.state != store::StepState::kRunning && step.state != store::StepState::kPending) continue;
      store::StepRow c = step;
      c.state = store::StepState::kCancelled;
      c.reason = "cancelled";
      for (const store::AttemptRow& f : finished) {
        if (f.step_idx == step.idx) c.message = f.message;  // how its attempt was stopped, or could not be
      }
      Status w = store.SetStepState(c);
      if (!w.ok()) return w;
    }
    return store.FinishRun(run.id, store::RunState::kCancelled, now, kExitRunCancelled);
  });
  if (!s.ok()) return Fail(s.error().message);
  std::cout << "cancelled run " << run.id << " (its engine was gone; stopped " << stopped << " step process"
            << (stopped == 1 ? "" : "es") << ")\n";
  return kExitOk;
}

/// Whether an attempt still recorded running belongs to a backend other than
/// localproc, whose processes this command cannot stop itself.
bool NeedsBackends(store::Store& store, const store::RunRow& run) {
  Result<std::vector<store::AttemptRow>> attempts = store.GetAttempts(run.id, std::nullopt);
  Result<std::vector<store::StepRow>> steps = store.GetSteps(run.id);
  if (!attempts.ok() || !steps.ok()) return false;
  std::map<int, std::string> backend;
  for (const store::StepRow& step : *steps) backend[step.idx] = step.backend;
  for (const store::AttemptRow& a : *attempts) {
    if (a.state != "running") continue;
    auto it = backend.find(a.step_idx);
    if (it != backend.end() && it->second != "localproc" && !ParseLocalHandle(a.handle)) return true;
  }
  return false;
}

}  // namespace

int CmdCancel(const GlobalOptions& g, const std::string& run_arg) {
  Result<std::unique_ptr<store::Store>> opened = OpenExistingStore(g.state_dir);
  if (!opened.ok()) {
    std::cerr << "crucible-engine: error: " << opened.error().message << "\n";
    return opened.error().code == ErrorCode::kNotFound ? kExitUsage : kExitFailed;
  }
  store::Store& store = **opened;
  Result<store::RunRow> found = store.GetRun(run_arg);
  if (!found.ok()) {
    std::cerr << "crucible-engine: error: " << found.error().message << "\n";
    return found.error().code == ErrorCode::kNotFound || found.error().code == ErrorCode::kInvalidArgument
               ? kExitUsage
               : kExitFailed;
  }
  const store::RunRow& run = *found;
  if (run.state != store::RunState::kRunning && run.state != store::RunState::kInterrupted) {
    std::cout << "run " << run.id << " had already finished (" << store::ToString(run.state)
              << "): nothing to cancel\n";
    return kExitOk;
  }
  if (run.state == store::RunState::kRunning) {
    if (run.owner_pid <= 0) {
      return Fail("run " + run.id + " is running but its engine is not recorded (a run started before `cancel` " +
                  "existed): stop that engine with SIGTERM");
    }
    if (run.owner_host != HostName()) {
      return Fail("run " + run.id + " is run by an engine on host \"" + run.owner_host + "\" (pid " +
                  std::to_string(run.owner_pid) + "): cancel it there");
    }
    pid_t owner = static_cast<pid_t>(run.owner_pid);
    bool alive = ProcessAlive(owner, run.owner_start);
    if (alive) {
      if (::kill(owner, SIGTERM) != 0 && errno != ESRCH) {
        return Fail("cannot signal the engine of run " + run.id + " (pid " + std::to_string(owner) +
                    "): " + std::strerror(errno));
      }
      bool over = PollUntil(
          [&] {
            Result<store::RunRow> now = store.GetRun(run.id);
            return now.ok() && now->state != store::RunState::kRunning;
          },
          Ms(30000));
      if (over) {
        std::cout << "cancelled run " << run.id << " (its engine, pid " << owner << ", stopped it)\n";
        return kExitOk;
      }
      if (!ProcessGone(owner)) {
        return Fail("the engine of run " + run.id + " (pid " + std::to_string(owner) +
                    ") was sent SIGTERM but has not recorded the cancel within 30 s");
      }
      // It died without recording the end: finish the job from here.
    }
  }
  if (NeedsBackends(store, run)) {
    int code = CancelThroughBackends(g, run.id);
    if (code != kExitRunCancelled) return code == kExitOk ? kExitFailed : code;
    std::cout << "cancelled run " << run.id << " (its engine was gone; its backends stopped its steps)\n";
    return kExitOk;
  }
  return CancelOrphaned(store, run);
}

}  // namespace crucible::cli

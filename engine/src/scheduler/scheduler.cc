// The scheduler's loop. Design notes:
// - One thread. Every store write of a turn is buffered in `writes_` and
//   committed in one transaction: the completions and new attempt rows before
//   any Backend::Start of the turn (write-ahead), the handles after.
// - Per-step counters of unfinished needs; a finished step decrements its
//   dependents, so no event scans the whole plan (only cancel and fail_fast do, once).
// - Ready steps wait in one queue per backend, so a saturated backend never
//   makes the loop walk the steps of another.
// - Timers (backoff, run deadline, attempt safety deadlines) sit in a heap with
//   lazy invalidation; the loop waits on the Waker until the earliest one.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <queue>
#include <random>
#include <system_error>
#include <unordered_map>

#include "common/crash_point.h"
#include "common/process_identity.h"
#include "scheduler/scheduler.h"
#include "scheduler/step_io.h"

namespace crucible::scheduler {

namespace {

using plan::TaskId;
using store::RunState;
using store::StepState;

/// Longest backoff between two attempts.
constexpr int64_t kMaxBackoffMs = 5 * 60 * 1000;
/// How long past timeout + grace an attempt may stay silent before the engine cancels it.
constexpr int64_t kSafetyMarginMs = 30 * 1000;
/// How often to ask a full backend again when nothing of ours runs there.
constexpr int kCapacityRecheckMs = 100;
/// Buffered store writes that force a commit even while the loop is busy.
constexpr size_t kMaxBufferedWrites = 4096;
/// How long handle rows may wait for the next commit when nothing else is
/// buffered: a short step's completion usually comes first and carries them
/// in its write-ahead commit, saving a commit per step; a long one gets its
/// handle recorded this much after its start (the attempt row itself is
/// always committed before start()).
constexpr int64_t kHandleFlushDelayMs = 3;

/// Attempt keys, unique within the process.
std::atomic<uint64_t> g_next_attempt_key{0};

/// The "sched" logger, shared with the default logger's sinks; created once.
std::shared_ptr<spdlog::logger> Log() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    try {
      if (auto existing = spdlog::get("sched")) return existing;
      auto def = spdlog::default_logger();
      auto made = std::make_shared<spdlog::logger>("sched", def->sinks().begin(), def->sinks().end());
      made->set_level(def->level());
      spdlog::register_logger(made);
      return made;
    } catch (const spdlog::spdlog_ex&) {
      return spdlog::get("sched") ? spdlog::get("sched") : spdlog::default_logger();
    }
  }();
  return logger;
}


/// Whether a failure matches the step's retry_on (empty: every failure).
bool MatchesRetryOn(const std::vector<plan::RetryOn>& retry_on, const std::string& reason, int exit_code, int signal) {
  if (retry_on.empty()) return true;
  for (const auto& r : retry_on) {
    switch (r.kind) {
      case plan::RetryOn::Kind::kTimeout:
        if (reason == "timeout") return true;
        break;
      case plan::RetryOn::Kind::kOomKilled:
        if (reason == "oom_killed") return true;
        break;
      case plan::RetryOn::Kind::kExited:
        if (reason == "exited") return true;
        break;
      case plan::RetryOn::Kind::kExitCode:
        if (exit_code == r.exit_code && reason == "exited") return true;
        if (signal > 0 && 128 + signal == r.exit_code) return true;
        break;
    }
  }
  return false;
}

enum class StopCause { kNone, kCancel, kTimeout };

}  // namespace

struct Scheduler::Impl {
  Impl(const plan::Plan& p, store::Store& s, std::map<std::string, host::Backend*> b, Clock& c, const Waker& w,
       Observer* o, RunOptions opts)
      : plan(p), store(s), backend_map(std::move(b)), clock(c), waker(w), observer(o), opt(std::move(opts)) {}

  /// One step instance's run-time state.
  struct Task {
    StepState state = StepState::kPending;
    std::string reason;
    std::string message;   ///< why it ended so (recorded with the step)
    std::string last_message;  ///< its last attempt's, while it waits for a retry
    int remaining_needs = 0;
    int attempts = 0;      ///< attempt numbers used so far
    int retries_used = 0;  ///< charged to `retries`
    int infra_used = 0;    ///< infrastructure retries
    int exit_code = -1;
    bool waiting = false;  ///< running, between two attempts
    uint64_t wait_gen = 0;
    size_t backend = 0;
    Outputs outputs;
  };

  /// An attempt whose row says running.
  struct Live {
    TaskId task = 0;
    int number = 0;
    size_t backend = 0;
    int64_t started_ms = 0;
    std::string log_path;
    std::string handle;
    std::vector<std::string> secrets;
    std::string cancel_cause;  ///< why we asked it to stop: cancelled, timeout, fail_fast, safety
    bool started = false;      ///< Backend::Start returned a handle
    size_t handle_write = SIZE_MAX;  ///< index in `writes` of the handle row, while buffered
    uint64_t handle_flush = 0;       ///< the flush generation that write belongs to
  };

  struct Timer {
    enum class Kind { kBackoff, kSafety, kRunDeadline };
    int64_t due = 0;
    Kind kind = Kind::kBackoff;
    TaskId task = 0;
    uint64_t key = 0;  ///< attempt key (safety) or wait generation (backoff)
    bool operator>(const Timer& o) const { return due > o.due; }
  };

  /// An attempt prepared this turn, started after the write-ahead commit.
  struct Prepared {
    uint64_t key = 0;
    host::LaunchSpec launch;
  };

  const plan::Plan& plan;
  store::Store& store;
  std::map<std::string, host::Backend*> backend_map;
  Clock& clock;
  const Waker& waker;
  Observer* observer;
  RunOptions opt;

  std::atomic<int> cancel_requests{0};
  int cancels_handled = 0;

  std::vector<Task> tasks;
  std::vector<std::vector<TaskId>> dependents;
  std::vector<host::Backend*> backends;
  std::vector<std::deque<TaskId>> queues;  ///< ready, by backend
  std::unordered_map<uint64_t, Live> live;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers;
  std::vector<TaskId> newly_ready;
  std::vector<std::string> upstream_entries;  ///< UpstreamJson's rendered entry per finished need ("" until used)
  std::vector<std::function<Status()>> writes;
  size_t handle_writes = 0;       ///< how many of `writes` only record a handle
  uint64_t flush_gen = 0;         ///< counts Flush() calls: tells whether a buffered write is still there
  int64_t handles_since_ms = -1;  ///< monotonic time the oldest buffered handle was queued; -1: none
  size_t finished = 0;
  int waiting_count = 0;
  int max_parallel = 1;
  bool fail_fast_triggered = false;
  bool any_failed = false;
  bool user_cancelled = false;
  bool abandoned = false;
  StopCause stop = StopCause::kNone;
  std::mt19937_64 rng{std::random_device{}()};
  std::string logs_root;
  std::string work_root;
  std::string run_id;
  int64_t token = 0;                 ///< fencing token checked by every commit; 0: none
  int64_t last_commit_mono = 0;      ///< monotonic ms of the last commit (or of the start)
  int64_t last_heartbeat_mono = 0;   ///< monotonic ms the last heartbeat was queued
  std::vector<std::vector<host::AdoptItem>> adopt_items;  ///< resume: running attempts, by backend

  // ---- store buffering ----

  Status Flush() {
    if (writes.empty()) return Ok{};
    auto status = store.Transaction([this]() -> Status {
      Status owned = CheckFence();
      if (!owned.ok()) return owned;
      for (auto& w : writes) {
        Status s = w();
        if (!s.ok()) return s;
      }
      return Ok{};
    });
    writes.clear();
    handle_writes = 0;
    handles_since_ms = -1;
    ++flush_gen;
    if (status.ok()) {
      last_commit_mono = clock.MonotonicMs();
      CRUCIBLE_CRASH_POINT("after-commit");
    }
    return status;
  }

  /// Fencing, inside a transaction: an engine that lost the run (taken over
  /// while it was frozen) writes nothing.
  Status CheckFence() { return token > 0 ? store.CheckOwner(run_id, token) : Status(Ok{}); }

  void QueueHeartbeat() {
    last_heartbeat_mono = clock.MonotonicMs();
    writes.push_back([this] { return store.Heartbeat(run_id, clock.NowMs()); });
  }

  /// Values of the {{env.NAME}} placeholders a step uses, for masking (resume).
  std::vector<std::string> CollectSecrets(TaskId t) {
    std::vector<std::string> secrets;
    plan::Template::Context ctx;
    ctx.run_id = run_id;
    ctx.output = [](TaskId, const std::string&) -> std::optional<std::string> { return std::string(); };
    ctx.env = [&secrets](const std::string& name) -> std::optional<std::string> {
      const char* value = std::getenv(name.c_str());
      if (!value) return std::nullopt;
      secrets.emplace_back(value);
      return std::string(value);
    };
    const auto& ps = plan.step(t);
    std::string missing;
    for (const auto& tmpl : ps.argv) {
      if (!tmpl.is_literal()) (void)tmpl.Render(ctx, &missing);
    }
    for (const auto& [name, tmpl] : ps.env) {
      if (!tmpl.is_literal()) (void)tmpl.Render(ctx, &missing);
    }
    return secrets;
  }

  /// True when every buffered write is a handle row that may wait a little longer.
  bool OnlyFreshHandlesBuffered(int64_t now) const {
    return !writes.empty() && writes.size() == handle_writes && handles_since_ms >= 0 &&
           now - handles_since_ms < kHandleFlushDelayMs;
  }

  void WriteStep(TaskId t) {
    const Task& task = tasks[t];
    store::StepRow row;
    row.run_id = run_id;
    row.idx = static_cast<int>(t);
    row.step_id = plan.step(t).id;
    row.backend = plan.step(t).backend;
    row.state = task.state;
    row.reason = task.reason;
    row.attempts = task.attempts;
    row.exit_code = task.exit_code;
    row.message = task.message;
    writes.push_back([this, row = std::move(row)] { return store.SetStepState(row); });
  }

  // ---- state transitions ----

  static bool FailedLike(const Task& t) {
    return t.state == StepState::kFailed || t.state == StepState::kCancelled ||
           (t.state == StepState::kSkipped && t.reason != "condition_false");
  }

  void Finish(TaskId t, StepState state, const std::string& reason, const std::string& message = "") {
    Task& task = tasks[t];
    CRUCIBLE_CHECK(task.state == StepState::kPending || task.state == StepState::kRunning,
                   "finished a step that had already finished");
    if (task.waiting) {
      task.waiting = false;
      --waiting_count;
    }
    task.state = state;
    task.reason = reason;
    // A step stopped while it waited for a retry keeps what its last attempt said.
    task.message = message.empty() && state != StepState::kSucceeded ? task.last_message : message;
    ++finished;
    WriteStep(t);
    Log()->debug("step finished run={} step={} state={} reason={} attempts={}", run_id, plan.step(t).id,
                 store::ToString(state), reason, task.attempts);
    if (observer) observer->OnStepState(t, state, reason);
    for (TaskId d : dependents[t]) {
      if (--tasks[d].remaining_needs == 0 && tasks[d].state == StepState::kPending) newly_ready.push_back(d);
    }
    if (state == StepState::kFailed) {
      any_failed = true;
      if (plan.fail_fast() && !fail_fast_triggered) TriggerFailFast();
    }
  }

  /// Decides, for a step whose needs all finished, whether it runs.
  void OnReady(TaskId t) {
    if (tasks[t].state != StepState::kPending) return;
    if (stop != StopCause::kNone) {
      Finish(t, StepState::kCancelled, StopReason());
      return;
    }
    const auto& ps = plan.step(t);
    bool all_succeeded = true;
    bool any_failed_need = false;
    for (TaskId n : ps.needs) {
      if (tasks[n].state != StepState::kSucceeded) all_succeeded = false;
      if (FailedLike(tasks[n])) any_failed_need = true;
    }
    bool run = true;
    std::string reason;
    switch (ps.when) {
      case plan::When::kOnSuccess:
        run = all_succeeded;
        reason = any_failed_need ? "upstream_failed" : "condition_false";
        if (run && fail_fast_triggered) {
          run = false;
          reason = "fail_fast";
        }
        break;
      case plan::When::kOnFailure:
        run = any_failed_need;
        reason = "condition_false";
        break;
      case plan::When::kAlways:
        break;
    }
    if (run) {
      queues[tasks[t].backend].push_back(t);
    } else {
      Finish(t, StepState::kSkipped, reason);
    }
  }

  /// Decides the steps made ready, in the order they became ready (OnReady may add more).
  void ProcessReady() {
    for (size_t i = 0; i < newly_ready.size(); ++i) OnReady(newly_ready[i]);
    newly_ready.clear();
  }

  std::string StopReason() const { return stop == StopCause::kTimeout ? "timeout" : "cancelled"; }

  void TriggerFailFast() {
    fail_fast_triggered = true;
    Log()->debug("fail_fast run={}", run_id);
    for (auto& [key, l] : live) {
      if (l.cancel_cause.empty()) {
        l.cancel_cause = "fail_fast";
        if (l.started) backends[l.backend]->Cancel(key, opt.cancel_grace_ms);
      }
    }
    for (TaskId t = 0; t < tasks.size(); ++t) {
      if (tasks[t].waiting) Finish(t, StepState::kCancelled, "fail_fast");
    }
    for (auto& q : queues) {
      std::deque<TaskId> keep;
      std::vector<TaskId> drop;
      for (TaskId t : q) {
        if (tasks[t].state != StepState::kPending) continue;
        if (plan.step(t).when == plan::When::kOnSuccess) {
          drop.push_back(t);
        } else {
          keep.push_back(t);
        }
      }
      q = std::move(keep);
      for (TaskId t : drop) Finish(t, StepState::kSkipped, "fail_fast");
    }
  }

  /// Cancel or run deadline: nothing new starts, running attempts are asked to stop.
  void BeginStop(StopCause cause) {
    if (stop != StopCause::kNone) return;
    stop = cause;
    std::string reason = StopReason();
    Log()->debug("run stopping run={} reason={} running={}", run_id, reason, live.size());
    for (auto& [key, l] : live) {
      if (l.cancel_cause.empty() || l.cancel_cause == "safety") {
        l.cancel_cause = reason;
        if (l.started) backends[l.backend]->Cancel(key, opt.cancel_grace_ms);
      }
    }
    for (TaskId t = 0; t < tasks.size(); ++t) {
      if (tasks[t].state == StepState::kPending || tasks[t].waiting) Finish(t, StepState::kCancelled, reason);
    }
    for (auto& q : queues) q.clear();
    newly_ready.clear();
  }

  /// A second cancel: stop waiting for the backends and record what still runs as cancelled.
  void Abandon() {
    abandoned = true;
    int64_t now = clock.NowMs();
    for (auto& [key, l] : live) {
      store::AttemptRow row;
      row.run_id = run_id;
      row.step_idx = static_cast<int>(l.task);
      row.number = l.number;
      row.state = "cancelled";
      row.reason = "cancelled";
      row.started_at_ms = l.started_ms;
      row.ended_at_ms = now;
      row.log_path = l.log_path;
      row.handle = l.handle;
      row.message = "engine stopped waiting";
      writes.push_back([this, row = std::move(row)] { return store.FinishAttempt(row); });
      if (tasks[l.task].state == StepState::kRunning) {
        Finish(l.task, StepState::kCancelled, "cancelled", "engine stopped waiting");
      }
    }
    live.clear();
  }

  bool HandleCancelRequests() {
    int requested = cancel_requests.load(std::memory_order_acquire);
    if (requested <= cancels_handled) return false;
    cancels_handled = requested;
    user_cancelled = true;
    if (stop == StopCause::kNone) {
      BeginStop(StopCause::kCancel);
    } else if (requested == 1) {
      return true;  // already stopping for the run deadline; now recorded as cancelled
    }
    if (requested >= 2) Abandon();
    return true;
  }

  // ---- attempts ----

  void ScheduleRetry(TaskId t, int failed_number) {
    const auto& ps = plan.step(t);
    double delay = static_cast<double>(ps.retry_delay_ms) * std::pow(2.0, std::min(failed_number - 1, 30));
    delay = std::min(delay, static_cast<double>(kMaxBackoffMs));
    std::uniform_real_distribution<double> jitter(0.9, 1.1);
    auto delay_ms = static_cast<int64_t>(std::llround(delay * jitter(rng)));
    Task& task = tasks[t];
    task.waiting = true;
    ++task.wait_gen;
    ++waiting_count;
    timers.push(Timer{clock.MonotonicMs() + delay_ms, Timer::Kind::kBackoff, t, task.wait_gen});
    Log()->debug("retry scheduled run={} step={} after_attempt={} delay_ms={}", run_id, ps.id, failed_number, delay_ms);
  }

  void ApplyResult(const host::AttemptResult& r) {
    auto it = live.find(r.attempt_key);
    if (it == live.end()) {
      Log()->warn("result for an unknown attempt key={} ignored", r.attempt_key);
      return;
    }
    Live l = std::move(it->second);
    live.erase(it);
    if (l.handle_flush == flush_gen && l.handle_write < writes.size()) {
      // Its handle row is still buffered: the finish below records the handle too.
      writes[l.handle_write] = [] { return Status(Ok{}); };
    }
    TaskId t = l.task;
    Task& task = tasks[t];
    const auto& ps = plan.step(t);

    store::AttemptRow row;
    row.run_id = run_id;
    row.step_idx = static_cast<int>(t);
    row.number = l.number;
    row.exit_code = r.exit_code;
    row.signal = r.signal;
    row.started_at_ms = r.started_at_ms > 0 ? r.started_at_ms : l.started_ms;
    row.ended_at_ms = r.ended_at_ms > 0 ? r.ended_at_ms : clock.NowMs();
    row.log_path = l.log_path;
    row.log_bytes = static_cast<int64_t>(r.log_bytes_kept);
    row.log_dropped = static_cast<int64_t>(r.log_bytes_dropped);
    row.handle = l.handle;
    row.message = r.message;
    switch (r.outcome) {
      case CRUCIBLE_OUTCOME_SUCCEEDED:
        row.state = "succeeded";
        break;
      case CRUCIBLE_OUTCOME_CANCELLED:
        row.state = "cancelled";
        row.reason = "cancelled";
        break;
      case CRUCIBLE_OUTCOME_FAILED:
        row.state = "failed";
        row.reason = host::ReasonName(r.reason);
        if (row.reason.empty() || row.reason == "cancelled") row.reason = r.exit_code > 0 ? "exited" : "backend_error";
        break;
      case CRUCIBLE_OUTCOME_UNSET:
        row.state = "failed";
        row.reason = "backend_error";
        if (row.message.empty()) row.message = "backend reported no outcome";
        break;
    }
    if (row.state == "cancelled" && l.cancel_cause == "safety") {
      row.state = "failed";
      row.reason = "timeout";
      row.message = "no result within timeout + grace + 30s; cancelled by the engine";
    }

    std::optional<Outputs> outputs;
    if (r.outputs_text) {
      auto parsed = ParseOutputs(*r.outputs_text, opt.output_cap_bytes);
      if (parsed.ok()) {
        outputs = std::move(parsed.value());
      } else {
        if (row.state == "succeeded") {
          row.state = "failed";
          row.reason = "invalid_outputs";
        }
        row.message = row.message.empty() ? parsed.error().message : row.message + "; " + parsed.error().message;
      }
    }
    row.infra = row.reason == "backend_error" || row.reason == "lost";
    // Values of {{env.NAME}} never reach the store.
    if (!l.secrets.empty()) MaskSecrets(row.message, l.secrets);

    if (!l.secrets.empty()) {
      Status masked = MaskSecretsInFile(l.log_path, l.secrets);
      if (!masked.ok()) Log()->warn("cannot mask secrets in {}: {}", l.log_path, masked.error().message);
    }
    task.exit_code = r.exit_code;
    std::string state = row.state;
    std::string reason = row.reason;
    std::string message = row.message;
    task.last_message = message;
    bool infra = row.infra;
    Log()->debug("attempt finished run={} step={} attempt={} state={} reason={} exit={}", run_id, ps.id, l.number,
                 state, reason, r.exit_code);
    writes.push_back([this, row = std::move(row)] { return store.FinishAttempt(row); });
    if (observer) observer->OnAttemptFinished(t, l.number, r);

    if (task.state != StepState::kRunning) return;  // already recorded (abandoned)
    auto keep_outputs = [&] {
      if (!outputs || outputs->empty()) return;
      task.outputs = std::move(*outputs);
      auto copy = task.outputs;
      if (!l.secrets.empty()) {
        for (auto& kv : copy) MaskSecrets(kv.second, l.secrets);
      }
      writes.push_back([this, t, copy = std::move(copy)] { return store.PutOutputs(run_id, static_cast<int>(t), copy); });
    };
    if (state == "succeeded") {
      keep_outputs();
      Finish(t, StepState::kSucceeded, "");
      return;
    }
    if (state == "cancelled") {
      Finish(t, StepState::kCancelled, l.cancel_cause.empty() ? "cancelled" : l.cancel_cause, message);
      return;
    }
    bool stopped_by_us = !l.cancel_cause.empty() && l.cancel_cause != "safety";
    if (stop == StopCause::kNone && !stopped_by_us) {
      if (infra && task.infra_used < opt.max_infra_retries) {
        ++task.infra_used;
        ScheduleRetry(t, l.number);
        return;
      }
      if (task.retries_used < ps.retries && MatchesRetryOn(ps.retry_on, reason, r.exit_code, r.signal)) {
        ++task.retries_used;
        ScheduleRetry(t, l.number);
        return;
      }
    }
    keep_outputs();
    Finish(t, StepState::kFailed, reason, message);
  }

  /// A step that cannot start (a missing upstream output): failed, no attempt.
  void FailBeforeStart(TaskId t, const std::string& reason, const std::string& message) {
    Log()->debug("step cannot start run={} step={} reason={} message=\"{}\"", run_id, plan.step(t).id, reason, message);
    if (observer) observer->OnStepMessage(t, message);
    if (tasks[t].waiting) {
      tasks[t].waiting = false;
      --waiting_count;
    }
    Finish(t, StepState::kFailed, reason, message);
  }

  /// Appends s as a JSON string, exactly as nlohmann's dump (no ASCII escaping, invalid UTF-8 replaced).
  static void AppendJsonString(std::string& out, const std::string& s) {
    bool plain = std::all_of(s.begin(), s.end(), [](char c) {
      auto u = static_cast<unsigned char>(c);
      return u >= 0x20 && u < 0x80 && c != '"' && c != '\\';
    });
    if (!plain) {
      out += nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      return;
    }
    out += '"';
    out += s;
    out += '"';
  }

  /// One need's entry of CRUCIBLE_UPSTREAM, as nlohmann's ordered_json would print it.
  std::string UpstreamEntry(TaskId n) const {
    const Task& need = tasks[n];
    std::string out = "{\"id\":";
    AppendJsonString(out, plan.step(n).id);
    out += ",\"state\":";
    AppendJsonString(out, store::ToString(need.state));
    out += ",\"reason\":";
    AppendJsonString(out, need.reason);
    out += ",\"exit_code\":" + std::to_string(need.exit_code) + ",\"outputs\":{";
    // A repeated key keeps its first place and its last value (as an ordered_json object would).
    for (size_t i = 0; i < need.outputs.size(); ++i) {
      const std::string& key = need.outputs[i].first;
      bool seen = false;
      for (size_t j = 0; j < i && !seen; ++j) seen = need.outputs[j].first == key;
      if (seen) continue;
      const std::string* value = &need.outputs[i].second;
      for (size_t j = i + 1; j < need.outputs.size(); ++j) {
        if (need.outputs[j].first == key) value = &need.outputs[j].second;
      }
      if (out.back() != '{') out += ',';
      AppendJsonString(out, key);
      out += ':';
      AppendJsonString(out, *value);
    }
    out += "}}";
    return out;
  }

  /// The CRUCIBLE_UPSTREAM document of t. A finished need's entry never changes,
  /// so it is rendered once (a layer of 100 steps needing the same 100 would
  /// otherwise render 10,000 entries).
  std::string UpstreamJson(TaskId t) {
    const auto& needs = plan.step(t).needs;
    std::string doc = "{\"steps\":[";
    for (size_t i = 0; i < needs.size(); ++i) {
      TaskId n = needs[i];
      if (i > 0) doc += ',';
      StepState st = tasks[n].state;
      bool final = st != StepState::kPending && st != StepState::kRunning;
      if (!final) {
        doc += UpstreamEntry(n);
        continue;
      }
      if (upstream_entries.size() < tasks.size()) upstream_entries.resize(tasks.size());
      std::string& cached = upstream_entries[n];
      if (cached.empty()) cached = UpstreamEntry(n);
      doc += cached;
    }
    doc += "]}";
    return doc;
  }

  /// Renders and records one attempt; nullopt when the step failed before starting.
  std::optional<Prepared> Prepare(TaskId t) {
    const auto& ps = plan.step(t);
    Task& task = tasks[t];
    std::vector<std::string> secrets;
    bool env_missing = false;
    plan::Template::Context ctx;
    ctx.run_id = run_id;
    ctx.output = [this](TaskId id, const std::string& key) -> std::optional<std::string> {
      for (const auto& [k, v] : tasks[id].outputs) {
        if (k == key) return v;
      }
      return std::nullopt;
    };
    ctx.env = [&secrets, &env_missing](const std::string& name) -> std::optional<std::string> {
      const char* value = std::getenv(name.c_str());
      if (!value) {
        env_missing = true;
        return std::nullopt;
      }
      secrets.emplace_back(value);
      return std::string(value);
    };
    auto render = [&](const plan::Template& tmpl, std::string* out) {
      if (tmpl.is_literal()) {
        *out = tmpl.literal();
        return true;
      }
      std::string missing;
      auto text = tmpl.Render(ctx, &missing);
      if (!text) {
        FailBeforeStart(t, env_missing ? "missing_env" : "missing_output", missing);
        return false;
      }
      *out = std::move(*text);
      return true;
    };

    Prepared p;
    host::LaunchSpec& launch = p.launch;
    launch.argv.resize(ps.argv.size());
    for (size_t i = 0; i < ps.argv.size(); ++i) {
      if (!render(ps.argv[i], &launch.argv[i])) return std::nullopt;
    }
    launch.env.reserve(ps.env.size() + 3);
    for (const auto& [name, tmpl] : ps.env) {
      std::string value;
      if (!render(tmpl, &value)) return std::nullopt;
      launch.env.emplace_back(name, std::move(value));
    }
    int number = task.attempts + 1;
    launch.env.emplace_back("CRUCIBLE_RUN_ID", run_id);
    launch.env.emplace_back("CRUCIBLE_STEP_ID", ps.id);
    launch.env.emplace_back("CRUCIBLE_ATTEMPT", std::to_string(number));
    if (!ps.needs.empty()) launch.upstream_json = UpstreamJson(t);

    std::string safe = SafeName(ps.id);

    p.key = ++g_next_attempt_key;
    launch.attempt_key = p.key;
    launch.run_id = run_id;
    launch.step_id = ps.id;
    launch.attempt = static_cast<uint32_t>(number);
    for (const auto& in : ps.inputs) launch.inputs.emplace_back(in.source, in.dest);
    launch.work_dir = work_root + "/" + safe + "-" + std::to_string(number);
    launch.log_path = logs_root + "/" + safe + ".attempt-" + std::to_string(number) + ".log";
    launch.log_cap_bytes = opt.log_cap_bytes;
    launch.output_cap_bytes = opt.output_cap_bytes;
    launch.timeout_ms = ps.timeout_ms;
    launch.cpu_millicores = ps.cpu_millicores;
    launch.memory_bytes = ps.memory_bytes;
    launch.keep_work = opt.keep_work;
    launch.image = ps.image;
    if (t < opt.step_options.size()) launch.step_options = opt.step_options[t];

    task.attempts = number;
    int64_t now = clock.NowMs();
    store::AttemptRow row;
    row.run_id = run_id;
    row.step_idx = static_cast<int>(t);
    row.number = number;
    row.state = "running";
    row.started_at_ms = now;
    row.log_path = launch.log_path;
    writes.push_back([this, row = std::move(row)] { return store.InsertAttempt(row); });
    bool first = task.state == StepState::kPending;
    task.state = StepState::kRunning;
    WriteStep(t);
    if (first && observer) observer->OnStepState(t, StepState::kRunning, "");

    Live l;
    l.task = t;
    l.number = number;
    l.backend = task.backend;
    l.started_ms = now;
    l.log_path = launch.log_path;
    l.secrets = std::move(secrets);
    live.emplace(p.key, std::move(l));
    if (ps.timeout_ms > 0) {
      timers.push(Timer{clock.MonotonicMs() + ps.timeout_ms + opt.cancel_grace_ms + kSafetyMarginMs,
                        Timer::Kind::kSafety, t, p.key});
    }
    return p;
  }

  /// Starts what limits allow. Returns whether anything was started or failed.
  Result<bool> Dispatch() {
    std::vector<Prepared> prepared;
    bool progress = false;
    for (size_t b = 0; b < backends.size(); ++b) {
      auto& q = queues[b];
      if (q.empty()) continue;
      if (live.size() >= static_cast<size_t>(max_parallel)) break;
      int64_t cap = backends[b]->Capacity();
      if (cap < 0) cap = INT64_MAX;
      while (!q.empty() && cap > 0 && live.size() < static_cast<size_t>(max_parallel) && stop == StopCause::kNone) {
        TaskId t = q.front();
        q.pop_front();
        Task& task = tasks[t];
        if (task.state != StepState::kPending && task.state != StepState::kRunning) continue;
        progress = true;
        auto p = Prepare(t);
        if (!p) continue;
        --cap;
        prepared.push_back(std::move(*p));
      }
    }
    ProcessReady();
    if (prepared.empty()) return progress;
    // Write-ahead: the attempt rows are committed before any start().
    Status s = Flush();
    if (!s.ok()) return s.error();
    CRUCIBLE_CRASH_POINT("after-write-ahead");
    for (auto& p : prepared) {
      auto it = live.find(p.key);
      if (it == live.end()) continue;  // abandoned meanwhile
      Live& l = it->second;
      if (!l.cancel_cause.empty()) {
        // fail_fast fired earlier in this batch: never start it.
        host::AttemptResult r;
        r.attempt_key = p.key;
        r.outcome = CRUCIBLE_OUTCOME_CANCELLED;
        r.reason = CRUCIBLE_REASON_CANCELLED;
        r.message = "not started: " + l.cancel_cause;
        ApplyResult(r);
        continue;
      }
      std::string error;
      {
        auto started = backends[l.backend]->Start(p.launch);
        if (started.ok()) {
          l.started = true;
          l.handle = started.value();
          CRUCIBLE_CRASH_POINT("after-start-before-record");
          l.handle_write = writes.size();
          l.handle_flush = flush_gen;
          writes.push_back([this, t = l.task, n = l.number, h = l.handle] {
            return store.SetAttemptHandle(run_id, static_cast<int>(t), n, h);
          });
          ++handle_writes;
          if (handles_since_ms < 0) handles_since_ms = clock.MonotonicMs();
          Log()->debug("attempt started run={} step={} attempt={} handle={}", run_id, p.launch.step_id, l.number,
                       l.handle);
          if (observer) observer->OnAttemptStarted(l.task, l.number, l.handle);
          continue;
        }
        error = started.error().message;
      }
      host::AttemptResult r;
      r.attempt_key = p.key;
      r.outcome = CRUCIBLE_OUTCOME_FAILED;
      r.reason = CRUCIBLE_REASON_BACKEND_ERROR;
      r.message = "start failed: " + error;
      ApplyResult(r);
    }
    ProcessReady();
    return true;
  }

  bool FireTimers() {
    bool fired = false;
    int64_t now = clock.MonotonicMs();
    while (!timers.empty() && timers.top().due <= now) {
      Timer timer = timers.top();
      timers.pop();
      switch (timer.kind) {
        case Timer::Kind::kBackoff: {
          Task& task = tasks[timer.task];
          if (!task.waiting || task.wait_gen != timer.key) break;
          task.waiting = false;
          --waiting_count;
          queues[task.backend].push_front(timer.task);
          fired = true;
          break;
        }
        case Timer::Kind::kSafety: {
          auto it = live.find(timer.key);
          if (it == live.end() || !it->second.cancel_cause.empty()) break;
          it->second.cancel_cause = "safety";
          Log()->debug("attempt overdue run={} step={} attempt={}", run_id, plan.step(timer.task).id, it->second.number);
          backends[it->second.backend]->Cancel(timer.key, opt.cancel_grace_ms);
          fired = true;
          break;
        }
        case Timer::Kind::kRunDeadline:
          if (stop == StopCause::kNone) {
            BeginStop(StopCause::kTimeout);
            fired = true;
          }
          break;
      }
    }
    return fired;
  }

  bool QueuesEmpty() const {
    return std::all_of(queues.begin(), queues.end(), [](const auto& q) { return q.empty(); });
  }

  /// Records a new run and its pending steps.
  Status CreateRun() {
    const size_t n = plan.step_count();
    store::RunRow run;
    run.id = run_id;
    run.workflow = plan.workflow_name();
    run.file = opt.workflow_file;
    run.source_text = std::move(opt.source_text);  // stored once; not needed again (may be megabytes)
    run.source_sha256 = opt.source_sha256;
    nlohmann::ordered_json params = nlohmann::ordered_json::object();
    for (const auto& [k, v] : plan.params()) params[k] = v;
    run.params_json = params.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    run.state = RunState::kRunning;
    run.created_at_ms = clock.NowMs();
    run.step_count = static_cast<int>(n);
    run.owner_pid = ::getpid();
    run.owner_host = HostName();
    run.owner_start = ProcessStartTime(::getpid());
    run.owner_token = 1;
    run.heartbeat_at_ms = run.created_at_ms;
    token = 1;
    std::vector<store::StepRow> rows(n);
    for (TaskId t = 0; t < n; ++t) {
      rows[t].run_id = run_id;
      rows[t].idx = static_cast<int>(t);
      rows[t].step_id = plan.step(t).id;
      rows[t].backend = plan.step(t).backend;
    }
    return store.CreateRun(run, rows);
  }

  /// Continues a finished run from the store: succeeded steps are kept (their
  /// outputs loaded, their dependents' needs counted as met), every other step
  /// goes back to pending with its attempt numbering continued, and the run row
  /// says running again. One transaction.
  /// A run as the store holds it, its steps checked against this plan.
  struct Recorded {
    std::vector<store::StepRow> steps;
    std::vector<store::AttemptRow> attempts;
    std::vector<store::OutputRow> outputs;
    std::vector<std::vector<const store::AttemptRow*>> by_step;  ///< attempts per TaskId, by number
  };

  Result<Recorded> LoadRecorded() const {
    const size_t n = plan.step_count();
    Recorded r;
    auto steps = store.GetSteps(run_id);
    if (!steps.ok()) return steps.error();
    r.steps = std::move(*steps);
    if (r.steps.size() != n) {
      return MakeError(ErrorCode::kInvalidArgument, "run " + run_id + " has " + std::to_string(r.steps.size()) +
                                                        " steps recorded, the plan " + std::to_string(n));
    }
    for (const store::StepRow& row : r.steps) {
      if (row.idx < 0 || static_cast<size_t>(row.idx) >= n || plan.step(row.idx).id != row.step_id) {
        return MakeError(ErrorCode::kInvalidArgument, "run " + run_id + ": recorded step \"" + row.step_id +
                                                          "\" (index " + std::to_string(row.idx) + ") is not the plan's");
      }
    }
    auto attempts = store.GetAttempts(run_id, std::nullopt);
    if (!attempts.ok()) return attempts.error();
    r.attempts = std::move(*attempts);
    auto outputs = store.GetOutputs(run_id);
    if (!outputs.ok()) return outputs.error();
    r.outputs = std::move(*outputs);
    r.by_step.assign(n, {});
    for (const store::AttemptRow& a : r.attempts) {
      if (a.step_idx >= 0 && static_cast<size_t>(a.step_idx) < n) r.by_step[a.step_idx].push_back(&a);
    }
    return r;
  }

  /// The highest attempt number a step has used, by its attempts and its row.
  static int AttemptsUsed(const Recorded& r, const store::StepRow& row) {
    int highest = row.attempts;
    for (const store::AttemptRow* a : r.by_step[row.idx]) highest = std::max(highest, a->number);
    return highest;
  }

  Status ReopenRun() {
    const size_t n = plan.step_count();
    Result<Recorded> loaded = LoadRecorded();
    if (!loaded.ok()) return loaded.error();
    const Recorded& rec = *loaded;
    std::vector<store::StepRow> reset;
    for (const store::StepRow& row : rec.steps) {
      TaskId t = static_cast<TaskId>(row.idx);
      Task& task = tasks[t];
      task.attempts = AttemptsUsed(rec, row);
      if (row.state == StepState::kSucceeded) {
        task.state = StepState::kSucceeded;
        task.exit_code = row.exit_code;
        ++finished;
        for (TaskId d : dependents[t]) --tasks[d].remaining_needs;
        continue;
      }
      store::StepRow pending = row;
      pending.state = StepState::kPending;
      pending.reason = "";
      pending.message = "";
      pending.attempts = task.attempts;
      pending.exit_code = -1;
      reset.push_back(std::move(pending));
    }
    for (const store::OutputRow& o : rec.outputs) {
      if (o.step_idx < 0 || static_cast<size_t>(o.step_idx) >= n) continue;
      Task& task = tasks[o.step_idx];
      if (task.state == StepState::kSucceeded) task.outputs.emplace_back(o.key, o.value);
    }
    // The caller took the run over (Store::TakeOver recorded this process as its owner).
    return store.Transaction([&]() -> Status {
      Status owned = CheckFence();
      if (!owned.ok()) return owned;
      for (const store::StepRow& row : reset) {
        Status s = store.SetStepState(row);
        if (!s.ok()) return s;
        s = store.ClearOutputs(run_id, row.idx);
        if (!s.ok()) return s;
      }
      return store.FinishRun(run_id, RunState::kRunning, 0, -1);
    });
  }

  /// Continues a run whose engine died (`resume`): finished steps stay as
  /// recorded; a running step's last attempt, when recorded as running, is
  /// gathered for its backend's Adopt (adopt_items), else the step was
  /// waiting for a retry and is queued for it now. Budgets are counted from
  /// the recorded attempts. One transaction marks the run running again.
  Status ReopenRunning() {
    const size_t n = plan.step_count();
    Result<Recorded> loaded = LoadRecorded();
    if (!loaded.ok()) return loaded.error();
    const Recorded& rec = *loaded;
    adopt_items.assign(backends.size(), {});
    std::vector<store::AttemptRow> stale;
    int64_t now = clock.NowMs();
    for (const store::StepRow& row : rec.steps) {
      TaskId t = static_cast<TaskId>(row.idx);
      Task& task = tasks[t];
      const auto& mine = rec.by_step[t];
      task.attempts = AttemptsUsed(rec, row);
      task.exit_code = row.exit_code;
      switch (row.state) {
        case StepState::kSucceeded:
        case StepState::kFailed:
        case StepState::kSkipped:
        case StepState::kCancelled:
          task.state = row.state;
          task.reason = row.reason;
          ++finished;
          for (TaskId d : dependents[t]) --tasks[d].remaining_needs;
          if (row.state == StepState::kFailed) any_failed = true;
          break;
        case StepState::kPending:
          break;
        case StepState::kRunning: {
          task.state = StepState::kRunning;
          const store::AttemptRow* last = mine.empty() ? nullptr : mine.back();
          for (const store::AttemptRow* a : mine) {
            if (a->state == "running" && a != last) {
              store::AttemptRow lost = *a;  // an older attempt left open: it cannot be the one running
              lost.state = "failed";
              lost.reason = "lost";
              lost.infra = true;
              lost.ended_at_ms = now;
              lost.message = "superseded by a later attempt";
              stale.push_back(std::move(lost));
              ++task.infra_used;
            } else if (a->state == "failed") {
              if (a->infra) {
                ++task.infra_used;
              } else {
                ++task.retries_used;
              }
            }
          }
          if (last != nullptr && last->state == "running") {
            Live l;
            l.task = t;
            l.number = last->number;
            l.backend = task.backend;
            l.started_ms = last->started_at_ms;
            l.log_path = last->log_path;
            l.handle = last->handle;
            l.started = true;
            l.secrets = CollectSecrets(t);
            uint64_t key = ++g_next_attempt_key;
            const auto& ps = plan.step(t);
            adopt_items[task.backend].push_back(
                host::AdoptItem{key, last->handle, ps.id, static_cast<uint32_t>(last->number)});
            live.emplace(key, std::move(l));
            if (ps.timeout_ms > 0) {
              timers.push(Timer{clock.MonotonicMs() + ps.timeout_ms + opt.cancel_grace_ms + kSafetyMarginMs,
                                Timer::Kind::kSafety, t, key});
            }
          } else {
            queues[task.backend].push_back(t);  // it was waiting for its next attempt
          }
          break;
        }
      }
    }
    for (const store::OutputRow& o : rec.outputs) {
      if (o.step_idx < 0 || static_cast<size_t>(o.step_idx) >= n) continue;
      tasks[o.step_idx].outputs.emplace_back(o.key, o.value);
    }
    return store.Transaction([&]() -> Status {
      Status owned = CheckFence();
      if (!owned.ok()) return owned;
      for (const store::AttemptRow& a : stale) {
        Status w = store.FinishAttempt(a);
        if (!w.ok()) return w;
      }
      return store.FinishRun(run_id, RunState::kRunning, 0, -1);
    });
  }

  /// Hands the gathered running attempts to their backends; what a backend
  /// cannot follow is recorded lost (and retried as infrastructure).
  void AdoptRunning() {
    for (size_t b = 0; b < adopt_items.size(); ++b) {
      if (adopt_items[b].empty()) continue;
      Result<bool> adopted = backends[b]->Adopt(adopt_items[b]);
      if (adopted.ok() && *adopted) {
        Log()->debug("adopted run={} backend={} attempts={}", run_id, backends[b]->name(), adopt_items[b].size());
        continue;
      }
      std::string why = adopted.ok() ? "backend \"" + backends[b]->name() + "\" cannot follow attempts of an earlier engine"
                                     : adopted.error().message;
      for (const host::AdoptItem& item : adopt_items[b]) {
        host::AttemptResult r;
        r.attempt_key = item.attempt_key;
        r.outcome = CRUCIBLE_OUTCOME_FAILED;
        r.reason = CRUCIBLE_REASON_LOST;
        r.message = why;
        ApplyResult(r);
      }
    }
    adopt_items.clear();
  }

  Result<RunSummary> Run() {
    run_id = opt.run_id;
    CRUCIBLE_CHECK(!run_id.empty(), "RunOptions.run_id must be set");
    const size_t n = plan.step_count();
    max_parallel = opt.max_parallel > 0 ? opt.max_parallel : plan.max_parallel();
    if (max_parallel <= 0) max_parallel = 1;

    std::map<std::string, size_t> backend_index;
    tasks.resize(n);
    dependents.assign(n, {});
    for (TaskId t = 0; t < n; ++t) {
      const auto& ps = plan.step(t);
      auto [it, inserted] = backend_index.emplace(ps.backend, backends.size());
      if (inserted) {
        auto found = backend_map.find(ps.backend);
        if (found == backend_map.end() || found->second == nullptr) {
          return MakeError(ErrorCode::kUnavailable, "no backend \"" + ps.backend + "\" for step \"" + ps.id + "\"");
        }
        backends.push_back(found->second);
      }
      tasks[t].backend = it->second;
      tasks[t].remaining_needs = static_cast<int>(ps.needs.size());
      for (TaskId need : ps.needs) dependents[need].push_back(t);
    }
    queues.assign(backends.size(), {});
    logs_root = store.state_dir() + "/logs/" + SafeName(run_id);
    work_root = store.state_dir() + "/work/" + SafeName(run_id);
    // One directory per run, flat files in it: a directory per step would cost a
    // mkdir (about as much as a no-op step's own file) for each of 10,000 steps.
    std::error_code ec;
    std::filesystem::create_directories(logs_root, ec);
    if (ec) return MakeError(ErrorCode::kIo, "cannot create log directory " + logs_root + ": " + ec.message());

    token = opt.owner_token;
    Status recorded = opt.resume_running ? ReopenRunning() : opt.resume_from_store ? ReopenRun() : CreateRun();
    if (!recorded.ok()) return recorded.error();
    last_commit_mono = last_heartbeat_mono = clock.MonotonicMs();
    if (!opt.resume_running && !opt.resume_from_store) CRUCIBLE_CRASH_POINT("after-create-run");
    Log()->debug("run started run={} workflow={} steps={} max_parallel={} continued={}", run_id,
                 plan.workflow_name(), n, max_parallel, opt.resume_from_store);
    if (observer) {
      observer->OnRunStarted(run_id, plan);
      for (TaskId t = 0; t < n; ++t) {
        if (tasks[t].state == StepState::kSucceeded) observer->OnStepState(t, StepState::kSucceeded, "");
      }
    }

    if (plan.timeout_ms() > 0) {
      int64_t left = plan.timeout_ms();
      if (opt.resume_running) {
        // The run's timeout counts from its start, not from the resume.
        auto row = store.GetRun(run_id);
        if (row.ok() && row->created_at_ms > 0) left = std::max<int64_t>(0, left - (clock.NowMs() - row->created_at_ms));
      }
      timers.push(Timer{clock.MonotonicMs() + left, Timer::Kind::kRunDeadline, 0, 0});
    }
    if (opt.resume_running) {
      AdoptRunning();
      CRUCIBLE_CRASH_POINT("after-adopt");
      if (any_failed && plan.fail_fast() && !fail_fast_triggered) TriggerFailFast();
    }
    for (TaskId t = 0; t < n; ++t) {
      if (tasks[t].remaining_needs == 0 && tasks[t].state == StepState::kPending) OnReady(t);
    }
    ProcessReady();

    std::vector<host::AttemptResult> results;
    const int64_t heartbeat_every = std::max<int64_t>(1, opt.lease_ms / 3);
    for (;;) {
      if (observer) observer->OnTick();
      if (token > 0 && opt.lease_ms > 0) {
        int64_t mono = clock.MonotonicMs();
        if (mono - last_commit_mono > opt.lease_ms / 2) {
          // Long since the last commit (frozen?): make sure the run is still ours before acting.
          QueueHeartbeat();
          Status owned = Flush();
          if (!owned.ok()) return owned.error();
        } else if (mono - last_heartbeat_mono >= heartbeat_every) {
          QueueHeartbeat();
        }
      }
      bool progress = HandleCancelRequests();
      if (!abandoned) {
        results.clear();
        for (auto* backend : backends) {
          Status polled = backend->Poll(0, results);
          if (!polled.ok()) Log()->warn("poll of backend {} failed: {}", backend->name(), polled.error().message);
        }
        for (const auto& r : results) ApplyResult(r);
        if (!results.empty()) CRUCIBLE_CRASH_POINT("after-poll-before-commit");
        progress = progress || !results.empty();
        progress = FireTimers() || progress;
        ProcessReady();
        if (stop == StopCause::kNone) {
          auto dispatched = Dispatch();
          if (!dispatched.ok()) return dispatched.error();
          progress = dispatched.value() || progress;
        }
      }
      bool done = abandoned || (live.empty() && waiting_count == 0 && QueuesEmpty());
      // A turn that made progress is followed at once by another, whose first
      // commit (before any start) carries these writes too; flush before
      // blocking, except handle rows, which may wait kHandleFlushDelayMs for
      // the next completion's commit.
      int64_t now = clock.MonotonicMs();
      bool hold_handles = !done && !progress && OnlyFreshHandlesBuffered(now);
      if (done || (!progress && !hold_handles) || writes.size() >= kMaxBufferedWrites) {
        Status flushed = Flush();
        if (!flushed.ok()) return flushed.error();
      }
      if (done) break;
      if (progress) continue;
      int timeout = -1;
      if (!timers.empty()) timeout = static_cast<int>(std::clamp<int64_t>(timers.top().due - now, 0, INT32_MAX));
      if (hold_handles) {
        int left = static_cast<int>(std::max<int64_t>(1, handles_since_ms + kHandleFlushDelayMs - now));
        timeout = timeout < 0 ? left : std::min(timeout, left);
      }
      if (!QueuesEmpty() && live.size() < static_cast<size_t>(max_parallel)) {
        timeout = timeout < 0 ? kCapacityRecheckMs : std::min(timeout, kCapacityRecheckMs);
      }
      if (token > 0 && opt.lease_ms > 0) {
        int next_beat = static_cast<int>(std::max<int64_t>(1, last_heartbeat_mono + heartbeat_every - now));
        timeout = timeout < 0 ? next_beat : std::min(timeout, next_beat);
      }
      clock.Wait(waker, timeout);
    }
    CRUCIBLE_CHECK(abandoned || finished == n, "the run ended with steps still pending");

    RunSummary summary;
    if (user_cancelled) {
      summary.state = RunState::kCancelled;
      summary.exit_code = ExitCode::kInterrupted;
    } else if (any_failed || stop == StopCause::kTimeout || fail_fast_triggered) {
      summary.state = RunState::kFailed;
      summary.exit_code = ExitCode::kStepFailed;
    } else {
      summary.state = RunState::kSucceeded;
      summary.exit_code = ExitCode::kSuccess;
    }
    CRUCIBLE_CRASH_POINT("before-finish-run");
    writes.push_back([this, summary] {
      return store.FinishRun(run_id, summary.state, clock.NowMs(), static_cast<int>(summary.exit_code));
    });
    Status flushed = Flush();
    if (!flushed.ok()) return flushed.error();
    Log()->debug("run finished run={} state={} exit={}", run_id, store::ToString(summary.state),
                 static_cast<int>(summary.exit_code));
    if (observer) observer->OnRunFinished(summary.state, summary.exit_code);
    return summary;
  }
};

Scheduler::Scheduler(const plan::Plan& plan, store::Store& store, std::map<std::string, host::Backend*> backends,
                     Clock& clock, const Waker& waker, Observer* observer, RunOptions options)
    : impl_(std::make_unique<Impl>(plan, store, std::move(backends), clock, waker, observer, std::move(options))) {}

Scheduler::~Scheduler() = default;

Result<RunSummary> Scheduler::Run() { return impl_->Run(); }

void Scheduler::RequestCancel() {
  impl_->cancel_requests.fetch_add(1, std::memory_order_acq_rel);
  impl_->waker.Wake();
}

}  // namespace crucible::scheduler

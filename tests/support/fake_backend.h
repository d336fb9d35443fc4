// FakeClock and FakeBackend: the scheduler's seams, scripted by tests.
//
// FakeClock's time moves only when the scheduler would block: it jumps to the
// earliest of the scheduler's own deadline and the fakes' scripted completions,
// so backoff and deadline tests never sleep. When nothing at all is scheduled
// it calls `on_block` (the test's turn to act: cancel, complete a held attempt).
//
// Thread-safety: scheduler thread only.
#ifndef CRUCIBLE_TESTS_SUPPORT_FAKE_BACKEND_H_
#define CRUCIBLE_TESTS_SUPPORT_FAKE_BACKEND_H_

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "host/backend.h"
#include "scheduler/scheduler.h"

namespace crucible::fake {

/// A clock that advances only when the scheduler waits.
class FakeClock : public scheduler::Clock {
 public:
  static constexpr int64_t kEpochMs = 1'700'000'000'000;

  int64_t NowMs() override { return kEpochMs + mono_; }
  int64_t MonotonicMs() override { return mono_; }
  void Advance(int64_t ms) { mono_ += ms; }

  /// Registers something that happens at a fake time (nullopt: nothing scheduled).
  void AddEventSource(std::function<std::optional<int64_t>()> next) { sources_.push_back(std::move(next)); }

  bool Wait(const scheduler::Waker& waker, int timeout_ms) override {
    ++waits_;
    if (waker.Wait(0)) return true;
    int64_t target = timeout_ms < 0 ? INT64_MAX : mono_ + timeout_ms;
    for (auto& source : sources_) {
      if (auto t = source()) target = std::min(target, std::max(*t, mono_));
    }
    if (target == INT64_MAX) {
      if (on_block && blocks_ < kMaxBlocks) {
        ++blocks_;
        on_block();
        return waker.Wait(0);
      }
      std::fprintf(stderr, "FakeClock: the scheduler waits forever with nothing scheduled\n");
      std::abort();
    }
    mono_ = target;
    return false;
  }

  /// Called when the scheduler would block with nothing scheduled.
  std::function<void()> on_block;
  int waits() const { return waits_; }

 private:
  static constexpr int kMaxBlocks = 100;
  int64_t mono_ = 0;
  int waits_ = 0;
  int blocks_ = 0;
  std::vector<std::function<std::optional<int64_t>()>> sources_;
};

/// What one attempt does.
struct FakeOutcome {
  crucible_outcome outcome = CRUCIBLE_OUTCOME_SUCCEEDED;
  crucible_reason reason = CRUCIBLE_REASON_NONE;
  int exit_code = 0;
  int signal = 0;
  int64_t duration_ms = 0;  ///< fake time from start to completion
  bool hold = false;        ///< completes only when cancelled or Complete()d
  std::optional<std::string> outputs;
  std::string message;
  std::optional<std::string> start_error;  ///< Start() fails with kUnavailable

  static FakeOutcome Ok(int64_t duration_ms = 0) {
    FakeOutcome o;
    o.duration_ms = duration_ms;
    return o;
  }
  static FakeOutcome Exit(int code, int64_t duration_ms = 0) {
    FakeOutcome o;
    o.outcome = code == 0 ? CRUCIBLE_OUTCOME_SUCCEEDED : CRUCIBLE_OUTCOME_FAILED;
    o.reason = code == 0 ? CRUCIBLE_REASON_NONE : CRUCIBLE_REASON_EXITED;
    o.exit_code = code;
    o.duration_ms = duration_ms;
    return o;
  }
  static FakeOutcome Failed(crucible_reason reason, int64_t duration_ms = 0) {
    FakeOutcome o;
    o.outcome = CRUCIBLE_OUTCOME_FAILED;
    o.reason = reason;
    o.exit_code = -1;
    o.duration_ms = duration_ms;
    return o;
  }
  static FakeOutcome Hold() {
    FakeOutcome o;
    o.hold = true;
    return o;
  }
  static FakeOutcome Outputs(std::string text) {
    FakeOutcome o;
    o.outputs = std::move(text);
    return o;
  }
  static FakeOutcome StartError(std::string message) {
    FakeOutcome o;
    o.start_error = std::move(message);
    return o;
  }
};

/// A backend that completes attempts as scripted and records what it was asked.
class FakeBackend : public host::Backend {
 public:
  FakeBackend(std::string name, FakeClock& clock, const scheduler::Waker& waker)
      : name_(std::move(name)), clock_(clock), waker_(waker) {
    clock_.AddEventSource([this] { return NextDue(); });
  }

  // ---- the script ----
  /// Per instance id, one outcome per attempt (the last repeats); default: success.
  std::map<std::string, std::vector<FakeOutcome>> per_step;
  /// Overrides per_step when set.
  std::function<FakeOutcome(const host::LaunchSpec&)> script;
  /// Called at the top of Start(), before anything is recorded.
  std::function<void(const host::LaunchSpec&)> on_start;
  /// Capacity(): negative is unlimited, else this minus what runs.
  int64_t capacity = -1;
  /// Cancel() is recorded but the attempt keeps running.
  bool ignore_cancel = false;
  /// Adopt(): what an adopted attempt of each step does from now (a step not
  /// listed is reported lost); nullopt: Adopt is unsupported.
  std::optional<std::map<std::string, FakeOutcome>> adoptable;

  // ---- what happened ----
  std::vector<host::LaunchSpec> launches;
  std::vector<int64_t> launch_times;  ///< FakeClock::MonotonicMs() at each Start
  std::vector<int64_t> end_times;     ///< FakeClock::MonotonicMs() of each completion handed back, in order
  std::vector<uint64_t> cancels;
  std::vector<host::AdoptItem> adopted;
  size_t peak_running = 0;
  int max_poll_timeout = 0;

  size_t running() const { return running_.size(); }
  const std::vector<host::LaunchSpec*> LaunchesOf(const std::string& step_id) {
    std::vector<host::LaunchSpec*> out;
    for (auto& l : launches) {
      if (l.step_id == step_id) out.push_back(&l);
    }
    return out;
  }
  /// Keys of the attempts still running.
  std::vector<uint64_t> RunningKeys() const {
    std::vector<uint64_t> keys;
    for (const auto& [k, e] : running_) keys.push_back(k);
    return keys;
  }
  /// Completes a running (e.g. held) attempt now.
  void Complete(uint64_t key, FakeOutcome outcome) {
    auto it = running_.find(key);
    if (it == running_.end()) return;
    outcome.hold = false;
    it->second.outcome = std::move(outcome);
    it->second.due = clock_.MonotonicMs();
    waker_.Wake();
  }

  // ---- host::Backend ----
  const std::string& name() const override { return name_; }
  int64_t Capacity() override {
    if (capacity < 0) return -1;
    return std::max<int64_t>(0, capacity - static_cast<int64_t>(running_.size()));
  }
  Result<std::string> Start(const host::LaunchSpec& launch) override {
    if (on_start) on_start(launch);
    FakeOutcome o = Pick(launch);
    if (o.start_error) return MakeError(ErrorCode::kUnavailable, *o.start_error);
    launches.push_back(launch);
    launch_times.push_back(clock_.MonotonicMs());
    Entry e;
    e.outcome = o;
    e.due = o.hold ? INT64_MAX : clock_.MonotonicMs() + o.duration_ms;
    e.started_ms = clock_.NowMs();
    running_[launch.attempt_key] = std::move(e);
    peak_running = std::max(peak_running, running_.size());
    if (!o.hold && o.duration_ms == 0) waker_.Wake();
    return "fake:" + std::to_string(launch.attempt_key);
  }
  Status Poll(int timeout_ms, std::vector<host::AttemptResult>& out) override {
    max_poll_timeout = std::max(max_poll_timeout, timeout_ms);
    int64_t now = clock_.MonotonicMs();
    for (auto it = running_.begin(); it != running_.end();) {
      if (it->second.outcome.hold || it->second.due > now) {
        ++it;
        continue;
      }
      const FakeOutcome& o = it->second.outcome;
      host::AttemptResult r;
      r.attempt_key = it->first;
      r.outcome = o.outcome;
      r.reason = o.reason;
      r.exit_code = o.exit_code;
      r.signal = o.signal;
      r.started_at_ms = it->second.started_ms;
      r.ended_at_ms = clock_.NowMs();
      r.outputs_text = o.outputs;
      r.message = o.message;
      out.push_back(std::move(r));
      end_times.push_back(now);
      it = running_.erase(it);
    }
    return Ok{};
  }
  Result<bool> Adopt(const std::vector<host::AdoptItem>& items) override {
    if (!adoptable) return false;
    for (const host::AdoptItem& item : items) {
      adopted.push_back(item);
      auto it = adoptable->find(item.step_id);
      Entry e;
      e.outcome = it != adoptable->end() ? it->second : FakeOutcome::Failed(CRUCIBLE_REASON_LOST);
      e.due = e.outcome.hold ? INT64_MAX : clock_.MonotonicMs() + e.outcome.duration_ms;
      e.started_ms = clock_.NowMs();
      running_[item.attempt_key] = std::move(e);
    }
    waker_.Wake();
    return true;
  }
  void Cancel(uint64_t attempt_key, int64_t /*grace_ms*/) override {
    cancels.push_back(attempt_key);
    if (ignore_cancel) return;
    FakeOutcome o;
    o.outcome = CRUCIBLE_OUTCOME_CANCELLED;
    o.reason = CRUCIBLE_REASON_CANCELLED;
    o.exit_code = -1;
    o.signal = 15;
    Complete(attempt_key, o);
  }

 private:
  struct Entry {
    FakeOutcome outcome;
    int64_t due = 0;
    int64_t started_ms = 0;
  };

  FakeOutcome Pick(const host::LaunchSpec& launch) {
    if (script) return script(launch);
    auto it = per_step.find(launch.step_id);
    if (it == per_step.end() || it->second.empty()) return FakeOutcome::Ok();
    size_t i = std::min<size_t>(launch.attempt - 1, it->second.size() - 1);
    return it->second[i];
  }

  std::optional<int64_t> NextDue() const {
    std::optional<int64_t> next;
    for (const auto& [k, e] : running_) {
      if (e.outcome.hold) continue;
      if (!next || e.due < *next) next = e.due;
    }
    return next;
  }

  std::string name_;
  FakeClock& clock_;
  const scheduler::Waker& waker_;
  std::map<uint64_t, Entry> running_;
};

}  // namespace crucible::fake

#endif  // CRUCIBLE_TESTS_SUPPORT_FAKE_BACKEND_H_

// ProgressReporter: what `run` tells the user while a run goes on.
//
// Two modes, chosen once by the caller (cli: isatty(stderr)):
//   - live: one line redrawn at most every redraw_interval_ms (counts per
//     state, a few running step ids then "+N more", elapsed time), failures
//     printed above it, cleared at the end;
//   - plain: one line per event, `12:00:01 started evaluate[alice] attempt=1`.
// Both end with a summary line: `run ID failed: 3 succeeded, 1 failed in 2.3s`.
// It writes to the std::ostream it is given, so tests need no terminal.
//
// Thread-safety: called on the scheduler thread only.
#ifndef CRUCIBLE_CLI_PROGRESS_REPORTER_H_
#define CRUCIBLE_CLI_PROGRESS_REPORTER_H_

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "scheduler/scheduler.h"

namespace crucible::cli {

class ProgressReporter : public scheduler::Observer {
 public:
  struct Options {
    bool live = false;              ///< redraw one status line (a terminal) instead of event lines
    int width = 80;                 ///< terminal columns, for the live line
    int64_t redraw_interval_ms = 100;
    size_t max_running_shown = 3;   ///< running step ids on the live line before "+N more"
  };

  ProgressReporter(std::ostream& out, scheduler::Clock& clock, Options options);

  void OnRunStarted(const std::string& run_id, const plan::Plan& plan) override;
  void OnStepState(plan::TaskId task, store::StepState state, const std::string& reason) override;
  void OnAttemptStarted(plan::TaskId task, int attempt, const std::string& handle) override;
  void OnAttemptFinished(plan::TaskId task, int attempt, const host::AttemptResult& result) override;
  void OnRunFinished(store::RunState state, scheduler::ExitCode code) override;
  void OnTick() override;

  /// The live line as it would be drawn now (without terminal control codes).
  std::string StatusLine() const;
  /// `run ID STATE: 3 succeeded, 1 failed in 2.3s`.
  std::string SummaryLine() const;
  /// Steps per state now.
  const std::map<store::StepState, int>& counts() const { return counts_; }

 private:
  std::string Line(const std::string& text);  ///< "HH:MM:SS text\n"
  void Event(const std::string& text);      ///< plain: a line; live: nothing
  void Notice(const std::string& text);     ///< a line in both modes (above the live line)
  void Redraw(bool force);
  void ClearLive();
  std::string StepName(plan::TaskId task) const;
  int64_t ElapsedMs() const;

  std::ostream& out_;
  scheduler::Clock& clock_;
  Options options_;
  const plan::Plan* plan_ = nullptr;
  std::string run_id_;
  int64_t started_mono_ms_ = 0;
  int64_t finished_elapsed_ms_ = -1;
  store::RunState final_state_ = store::RunState::kRunning;
  std::vector<store::StepState> states_;
  std::vector<plan::TaskId> running_;       ///< in the order they started
  std::map<plan::TaskId, int64_t> attempt_started_mono_;
  std::map<store::StepState, int> counts_;
  int64_t last_draw_mono_ms_ = -1;
  bool live_drawn_ = false;
};

}  // namespace crucible::cli

#endif  // CRUCIBLE_CLI_PROGRESS_REPORTER_H_

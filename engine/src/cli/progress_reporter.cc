#include "cli/progress_reporter.h"

#include <algorithm>

#include "cli/terminal.h"
#include "cli/views.h"

namespace crucible::cli {
namespace {

/// Cuts `s` to `width` display columns (UTF-8 aware), never mid-character.
std::string Truncate(const std::string& s, int width) {
  if (width <= 0) return "";
  int cols = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xc0) == 0x80) continue;
    if (++cols > width) return s.substr(0, i);
  }
  return s;
}

}  // namespace

ProgressReporter::ProgressReporter(std::ostream& out, scheduler::Clock& clock, Options options)
    : out_(out), clock_(clock), options_(options) {}

std::string ProgressReporter::StepName(plan::TaskId task) const {
  if (plan_ == nullptr || task >= plan_->step_count()) return "#" + std::to_string(task);
  return options_.live ? EscapeControlBytes(plan_->step(task).id) : plan_->step(task).id;
}

int64_t ProgressReporter::ElapsedMs() const {
  if (finished_elapsed_ms_ >= 0) return finished_elapsed_ms_;
  return clock_.MonotonicMs() - started_mono_ms_;
}

/// One event line, built whole: std::cerr is unbuffered, and each `<<` would be a write(2).
std::string ProgressReporter::Line(const std::string& text) {
  return FormatClock(clock_.NowMs()) + " " + text + "\n";
}

void ProgressReporter::Event(const std::string& text) {
  if (options_.live) return;
  out_ << Line(text) << std::flush;
}

void ProgressReporter::Notice(const std::string& text) {
  if (!options_.live) {
    Event(text);
    return;
  }
  ClearLive();
  out_ << Line(text);
  Redraw(true);
}

void ProgressReporter::ClearLive() {
  if (live_drawn_) {
    out_ << "\r\x1b[K" << std::flush;
    live_drawn_ = false;
  }
}

void ProgressReporter::Redraw(bool force) {
  if (!options_.live || plan_ == nullptr || finished_elapsed_ms_ >= 0) return;
  int64_t now = clock_.MonotonicMs();
  if (!force && last_draw_mono_ms_ >= 0 && now - last_draw_mono_ms_ < options_.redraw_interval_ms) return;
  last_draw_mono_ms_ = now;
  out_ << "\r\x1b[K" << Truncate(StatusLine(), options_.width - 1) << std::flush;
  live_drawn_ = true;
}

std::string ProgressReporter::StatusLine() const {
  std::string line = "[" + FormatElapsed(ElapsedMs()) + "] " + CountsText(counts_);
  if (!running_.empty()) {
    line += " |";
    size_t shown = std::min(running_.size(), options_.max_running_shown);
    for (size_t i = 0; i < shown; ++i) line += " " + StepName(running_[i]);
    if (running_.size() > shown) line += " +" + std::to_string(running_.size() - shown) + " more";
  }
  return line;
}

std::string ProgressReporter::SummaryLine() const {
  return "run " + run_id_ + " " + store::ToString(final_state_) + ": " + CountsText(counts_) + " in " +
         FormatElapsed(ElapsedMs());
}

void ProgressReporter::OnRunStarted(const std::string& run_id, const plan::Plan& plan) {
  run_id_ = run_id;
  plan_ = &plan;
  started_mono_ms_ = clock_.MonotonicMs();
  states_.assign(plan.step_count(), store::StepState::kPending);
  counts_.clear();
  if (plan.step_count() > 0) counts_[store::StepState::kPending] = static_cast<int>(plan.step_count());
  Redraw(true);
}

void ProgressReporter::OnStepState(plan::TaskId task, store::StepState state, const std::string& reason) {
  if (task >= states_.size()) return;
  store::StepState old = states_[task];
  if (old == state) return;
  if (--counts_[old] == 0) counts_.erase(old);
  ++counts_[state];
  states_[task] = state;
  bool was_running = std::find(running_.begin(), running_.end(), task) != running_.end();
  if (state == store::StepState::kRunning && !was_running) running_.push_back(task);
  if (state != store::StepState::kRunning && was_running) {
    running_.erase(std::remove(running_.begin(), running_.end(), task), running_.end());
  }
  if (state == store::StepState::kSkipped) {
    Event("skipped " + StepName(task) + (reason.empty() ? "" : " (" + reason + ")"));
  } else if (state == store::StepState::kCancelled && !was_running) {
    Event("cancelled " + StepName(task) + (reason.empty() ? "" : " (" + reason + ")"));
  }
  Redraw(false);
}

void ProgressReporter::OnAttemptStarted(plan::TaskId task, int attempt, const std::string& /*handle*/) {
  attempt_started_mono_[task] = clock_.MonotonicMs();
  if (task < states_.size() && states_[task] != store::StepState::kRunning) {
    OnStepState(task, store::StepState::kRunning, "");
  }
  Event("started " + StepName(task) + " attempt=" + std::to_string(attempt));
  Redraw(false);
}

void ProgressReporter::OnAttemptFinished(plan::TaskId task, int attempt, const host::AttemptResult& result) {
  int64_t dur = 0;
  if (result.started_at_ms > 0 && result.ended_at_ms >= result.started_at_ms) {
    dur = result.ended_at_ms - result.started_at_ms;
  } else if (auto it = attempt_started_mono_.find(task); it != attempt_started_mono_.end()) {
    dur = clock_.MonotonicMs() - it->second;
  }
  attempt_started_mono_.erase(task);
  std::string name = StepName(task);
  std::string att = attempt > 1 ? " attempt=" + std::to_string(attempt) : "";
  std::string message = result.message.empty() ? "" : ": " + result.message;
  if (options_.live) message = EscapeControlBytes(message);
  switch (result.outcome) {
    case CRUCIBLE_OUTCOME_SUCCEEDED:
      Event("succeeded " + name + att + " " + FormatElapsed(dur));
      break;
    case CRUCIBLE_OUTCOME_CANCELLED:
      Event("cancelled " + name + att + " " + FormatElapsed(dur));
      break;
    default: {
      std::string exit = result.exit_code >= 0 ? " exit=" + std::to_string(result.exit_code) : "";
      std::string sig = result.signal > 0 ? " signal=" + std::to_string(result.signal) : "";
      Notice("failed " + name + " attempt=" + std::to_string(attempt) + exit + sig +
             " reason=" + host::ReasonName(result.reason) + " " + FormatElapsed(dur) + message);
      break;
    }
  }
  Redraw(false);
}

void ProgressReporter::OnRunFinished(store::RunState state, scheduler::ExitCode /*code*/) {
  final_state_ = state;
  finished_elapsed_ms_ = clock_.MonotonicMs() - started_mono_ms_;
  ClearLive();
  out_ << SummaryLine() << "\n" << std::flush;
}

void ProgressReporter::OnTick() { Redraw(false); }

}  // namespace crucible::cli

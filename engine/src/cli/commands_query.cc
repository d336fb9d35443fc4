// The verbs that read the state database: runs, status, results, logs.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "cli/commands.h"
#include "cli/run_view.h"
#include "cli/terminal.h"
#include "cli/views.h"
#include "common/diagnostic.h"
#include "scheduler/scheduler.h"

namespace crucible::cli {
namespace {

int64_t NowMs() {
  scheduler::SystemClock clock;
  return clock.NowMs();
}

int ReportError(const Error& e) {
  std::cerr << "crucible-engine: error: " << e.message << "\n";
  return e.code == ErrorCode::kNotFound || e.code == ErrorCode::kInvalidArgument ? kExitUsage : kExitFailed;
}

/// Copies bytes to stdout, escaping control bytes when stdout is a terminal.
class OutputSink {
 public:
  OutputSink() : escape_(IsTerminal(1)) {}
  void Write(std::string_view bytes) {
    if (!escape_) {
      std::cout.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      return;
    }
    // Keep a trailing 0xc2 until the next chunk: it may start a C1 control.
    std::string chunk = pending_ + std::string(bytes);
    pending_.clear();
    if (!chunk.empty() && static_cast<unsigned char>(chunk.back()) == 0xc2) {
      pending_ = chunk.substr(chunk.size() - 1);
      chunk.pop_back();
    }
    std::cout << EscapeControlBytes(chunk);
  }
  void Flush() {
    if (!pending_.empty()) std::cout << EscapeControlBytes(pending_);
    pending_.clear();
    std::cout << std::flush;
  }

 private:
  bool escape_;
  std::string pending_;
};

/// Copies `path` from `offset` to the sink; returns the new offset.
uint64_t CopyFrom(const std::string& path, uint64_t offset, OutputSink& sink) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return offset;
  in.seekg(static_cast<std::streamoff>(offset));
  char buf[64 * 1024];
  while (in) {
    in.read(buf, sizeof buf);
    std::streamsize n = in.gcount();
    if (n <= 0) break;
    sink.Write(std::string_view(buf, static_cast<size_t>(n)));
    offset += static_cast<uint64_t>(n);
  }
  sink.Flush();
  return offset;
}

const store::AttemptRow* PickAttempt(const std::vector<store::AttemptRow>& attempts, int number) {
  const store::AttemptRow* best = nullptr;
  for (const store::AttemptRow& a : attempts) {
    if (number > 0 ? a.number == number : (best == nullptr || a.number > best->number)) best = &a;
  }
  return best;
}

std::string Header(const std::string& step, int attempt) {
  return "==> " + step + " (attempt " + std::to_string(attempt) + ") <==\n";
}

/// `logs --follow` of one step: prints its attempts as they grow until the step is finished.
int FollowStep(const store::Store& store, const store::RunRow& run, const store::StepRow& step, int only_attempt) {
  using namespace std::chrono_literals;
  OutputSink sink;
  int current = only_attempt;
  uint64_t offset = 0;
  bool printed_header = false;
  for (;;) {
    Result<std::vector<store::AttemptRow>> attempts = store.GetAttempts(run.id, step.idx);
    if (!attempts.ok()) return ReportError(attempts.error());
    Result<store::RunRow> now_run = store.GetRun(run.id);
    if (!now_run.ok()) return ReportError(now_run.error());
    bool run_over = now_run->state != store::RunState::kRunning;
    const store::AttemptRow* a = nullptr;
    if (current == 0) {
      a = PickAttempt(*attempts, 0);
      if (a != nullptr) current = a->number;
    } else {
      a = PickAttempt(*attempts, current);
    }
    if (a != nullptr) {
      if (!printed_header && only_attempt == 0 && current > 1) {
        sink.Write(Header(step.step_id, current));
      }
      printed_header = true;
      offset = CopyFrom(a->log_path, offset, sink);
      if (a->state != "running") {
        if (only_attempt != 0) return kExitOk;
        // Move on to the next attempt while the step goes on.
        const store::AttemptRow* next = PickAttempt(*attempts, current + 1);
        if (next != nullptr) {
          current = next->number;
          offset = 0;
          sink.Write(Header(step.step_id, current));
          continue;
        }
        Result<std::vector<store::StepRow>> steps = store.GetSteps(run.id);
        bool step_over = true;
        if (steps.ok()) {
          for (const store::StepRow& s : *steps) {
            if (s.idx == step.idx) {
              step_over = s.state != store::StepState::kRunning && s.state != store::StepState::kPending;
            }
          }
        }
        if (step_over || run_over) return kExitOk;
      }
    } else if (run_over) {
      std::cerr << "crucible-engine: step " << step.step_id << " has no attempt"
                << (only_attempt > 0 ? " " + std::to_string(only_attempt) : "") << "\n";
      return kExitFailed;
    }
    if (run_over && a != nullptr && a->state == "running") {
      offset = CopyFrom(a->log_path, offset, sink);
      return kExitOk;  // its engine is gone: nothing more will come
    }
    std::this_thread::sleep_for(200ms);
  }
}

}  // namespace

Result<std::unique_ptr<store::Store>> OpenExistingStore(const std::string& state_dir) {
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::path(state_dir) / "crucible.db", ec)) {
    return MakeError(ErrorCode::kNotFound, "no runs in " + state_dir);
  }
  return store::Store::Open(state_dir);
}

Result<RunView> LoadRunView(const store::Store& store, const std::string& id_or_prefix) {
  Result<store::RunRow> run = store.GetRun(id_or_prefix);
  if (!run.ok()) return run.error();
  Result<std::vector<store::StepRow>> steps = store.GetSteps(run->id);
  if (!steps.ok()) return steps.error();
  Result<std::vector<store::OutputRow>> outputs = store.GetOutputs(run->id);
  if (!outputs.ok()) return outputs.error();
  RunView view;
  view.run = std::move(*run);
  view.steps = std::move(*steps);
  view.outputs = std::move(*outputs);
  return view;
}

int CmdRuns(const GlobalOptions& g, bool json, int limit) {
  std::vector<RunListEntry> entries;
  Result<std::unique_ptr<store::Store>> store = OpenExistingStore(g.state_dir);
  if (store.ok()) {
    Result<std::vector<store::RunRow>> runs = (*store)->ListRuns(limit);
    if (!runs.ok()) return ReportError(runs.error());
    for (store::RunRow& r : *runs) {
      RunListEntry e;
      Result<std::vector<std::pair<store::StepState, int>>> counts = (*store)->CountSteps(r.id);
      if (!counts.ok()) return ReportError(counts.error());
      for (const auto& [state, n] : *counts) e.counts[state] += n;
      e.run = std::move(r);
      entries.push_back(std::move(e));
    }
  } else if (store.error().code != ErrorCode::kNotFound) {
    return ReportError(store.error());
  }
  std::cout << (json ? RunsJson(entries, NowMs()) + "\n" : RunsText(entries, NowMs())) << std::flush;
  return kExitOk;
}

int CmdStatus(const GlobalOptions& g, const std::string& run, bool json) {
  Result<std::unique_ptr<store::Store>> store = OpenExistingStore(g.state_dir);
  if (!store.ok()) return ReportError(store.error());
  Result<RunView> view = LoadRunView(**store, run);
  if (!view.ok()) return ReportError(view.error());
  std::cout << (json ? StatusJson(*view) + "\n" : StatusText(*view, NowMs())) << std::flush;
  return kExitOk;
}

int CmdResults(const GlobalOptions& g, const std::string& run, bool json) {
  Result<std::unique_ptr<store::Store>> store = OpenExistingStore(g.state_dir);
  if (!store.ok()) return ReportError(store.error());
  Result<RunView> view = LoadRunView(**store, run);
  if (!view.ok()) return ReportError(view.error());
  std::cout << (json ? ResultsJson(*view) + "\n" : ResultsText(*view)) << std::flush;
  return kExitOk;
}

int CmdLogs(const GlobalOptions& g, const LogsArgs& a) {
  Result<std::unique_ptr<store::Store>> store = OpenExistingStore(g.state_dir);
  if (!store.ok()) return ReportError(store.error());
  Result<store::RunRow> run = (*store)->GetRun(a.run);
  if (!run.ok()) return ReportError(run.error());
  Result<std::vector<store::StepRow>> steps = (*store)->GetSteps(run->id);
  if (!steps.ok()) return ReportError(steps.error());

  // Which steps: all, the one named, or every instance of a fan-out step.
  std::vector<const store::StepRow*> chosen;
  for (const store::StepRow& s : *steps) {
    if (a.step.empty() || s.step_id == a.step) chosen.push_back(&s);
  }
  if (chosen.empty() && !a.step.empty()) {
    for (const store::StepRow& s : *steps) {
      if (s.step_id.rfind(a.step + "[", 0) == 0) chosen.push_back(&s);
    }
  }
  if (chosen.empty() && !a.step.empty()) {
    std::vector<std::string> ids;
    for (const store::StepRow& s : *steps) ids.push_back(s.step_id);
    std::cerr << "crucible-engine: error: run " << run->id << " has no step \"" << a.step << "\""
              << DidYouMean(a.step, ids) << "\n";
    return kExitUsage;
  }
  if (a.follow) {
    if (chosen.size() != 1) {
      std::cerr << "crucible-engine: error: --follow wants one step instance\n";
      return kExitUsage;
    }
    return FollowStep(**store, *run, *chosen[0], a.attempt);
  }

  bool headers = a.step.empty() || chosen.size() > 1;
  OutputSink sink;
  int missing = 0;
  for (const store::StepRow* s : chosen) {
    Result<std::vector<store::AttemptRow>> attempts = (*store)->GetAttempts(run->id, s->idx);
    if (!attempts.ok()) return ReportError(attempts.error());
    const store::AttemptRow* at = PickAttempt(*attempts, a.attempt);
    if (at == nullptr) {
      if (!headers || a.attempt > 0) {
        std::cerr << "crucible-engine: step " << s->step_id << " has no attempt"
                  << (a.attempt > 0 ? " " + std::to_string(a.attempt) : "") << "\n";
        ++missing;
      }
      continue;
    }
    if (headers) sink.Write(Header(s->step_id, at->number));
    CopyFrom(at->log_path, 0, sink);
  }
  sink.Flush();
  return missing > 0 && !headers ? kExitFailed : kExitOk;
}

}  // namespace crucible::cli

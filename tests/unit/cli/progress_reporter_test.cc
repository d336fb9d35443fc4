#include "cli/progress_reporter.h"

#include <sstream>

#include <gtest/gtest.h>

#include "loader/loader.h"
#include "plan/plan.h"

namespace crucible::cli {
namespace {

class FakeClock : public scheduler::Clock {
 public:
  int64_t NowMs() override { return 1'700'000'000'000 + mono; }
  int64_t MonotonicMs() override { return mono; }
  int64_t mono = 0;
};

plan::Plan MakePlan(const std::string& toml) {
  Diagnostics diags("wf.toml");
  std::optional<loader::WorkflowSpec> spec = loader::LoadWorkflowText(toml, "/tmp/wf.toml", diags);
  EXPECT_TRUE(spec.has_value()) << diags.Format();
  std::optional<plan::Plan> plan = plan::Plan::Build(*spec, {}, diags);
  EXPECT_TRUE(plan.has_value()) << diags.Format();
  return std::move(*plan);
}

constexpr char kWorkflow[] = R"(
[workflow]
name = "w"
[[steps]]
id = "evaluate"
for_each = ["alice", "bob", "carol", "dave", "erin"]
run = ["true"]
[[steps]]
id = "score"
needs = ["evaluate"]
run = ["true"]
)";

host::AttemptResult Result(crucible_outcome outcome, crucible_reason reason, int exit_code, int64_t ms) {
  host::AttemptResult r;
  r.outcome = outcome;
  r.reason = reason;
  r.exit_code = exit_code;
  r.started_at_ms = 1000;
  r.ended_at_ms = 1000 + ms;
  return r;
}

TEST(ProgressReporterTest, PlainModePrintsOneLinePerEventAndASummary) {
  plan::Plan plan = MakePlan(kWorkflow);
  FakeClock clock;
  std::ostringstream out;
  ProgressReporter reporter(out, clock, {});
  plan::TaskId alice = *plan.Find("evaluate[alice]");
  plan::TaskId bob = *plan.Find("evaluate[bob]");
  plan::TaskId score = *plan.Find("score");
  reporter.OnRunStarted("20261125-153012-a3f9", plan);
  reporter.OnStepState(alice, store::StepState::kRunning, "");
  reporter.OnAttemptStarted(alice, 1, "pid:1");
  reporter.OnAttemptFinished(alice, 1, Result(CRUCIBLE_OUTCOME_SUCCEEDED, CRUCIBLE_REASON_NONE, 0, 1200));
  reporter.OnStepState(alice, store::StepState::kSucceeded, "");
  reporter.OnAttemptStarted(bob, 1, "pid:2");
  reporter.OnAttemptFinished(bob, 1, Result(CRUCIBLE_OUTCOME_FAILED, CRUCIBLE_REASON_EXITED, 1, 300));
  reporter.OnStepState(bob, store::StepState::kFailed, "exited");
  reporter.OnStepState(score, store::StepState::kSkipped, "upstream_failed");
  clock.mono = 2300;
  reporter.OnRunFinished(store::RunState::kFailed, scheduler::ExitCode::kStepFailed);

  std::string text = out.str();
  EXPECT_NE(text.find(" started evaluate[alice] attempt=1\n"), std::string::npos) << text;
  EXPECT_NE(text.find(" succeeded evaluate[alice] 1.2s\n"), std::string::npos) << text;
  EXPECT_NE(text.find(" failed evaluate[bob] attempt=1 exit=1 reason=exited 0.3s\n"), std::string::npos) << text;
  EXPECT_NE(text.find(" skipped score (upstream_failed)\n"), std::string::npos) << text;
  EXPECT_NE(text.find("run 20261125-153012-a3f9 failed: 1 succeeded, 1 failed, 1 skipped, 3 pending in 2.3s\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find('\x1b'), std::string::npos) << "no terminal codes in plain mode";
}

TEST(ProgressReporterTest, LiveLineShowsCountsAFewRunningStepsAndElapsedTime) {
  plan::Plan plan = MakePlan(kWorkflow);
  FakeClock clock;
  std::ostringstream out;
  ProgressReporter::Options options;
  options.live = true;
  options.width = 200;
  ProgressReporter reporter(out, clock, options);
  reporter.OnRunStarted("r1", plan);
  for (const char* id : {"evaluate[alice]", "evaluate[bob]", "evaluate[carol]", "evaluate[dave]", "evaluate[erin]"}) {
    reporter.OnStepState(*plan.Find(id), store::StepState::kRunning, "");
  }
  clock.mono = 12'000;
  EXPECT_EQ(reporter.StatusLine(),
            "[12.0s] 5 running, 1 pending | evaluate[alice] evaluate[bob] evaluate[carol] +2 more");
  reporter.OnRunFinished(store::RunState::kCancelled, scheduler::ExitCode::kInterrupted);
  std::string text = out.str();
  EXPECT_NE(text.find("\r\x1b[K"), std::string::npos) << "the live line is redrawn in place";
  EXPECT_EQ(text.find(" started "), std::string::npos) << "no event lines in live mode";
  EXPECT_TRUE(text.size() > 0 && text.substr(text.rfind('\r')).find("run r1 cancelled") != std::string::npos) << text;
}

TEST(ProgressReporterTest, LiveModeRedrawsAtMostTenTimesASecond) {
  plan::Plan plan = MakePlan(kWorkflow);
  FakeClock clock;
  std::ostringstream out;
  ProgressReporter::Options options;
  options.live = true;
  ProgressReporter reporter(out, clock, options);
  reporter.OnRunStarted("r1", plan);
  auto redraws = [&] {
    std::string s = out.str();
    size_t n = 0;
    for (size_t at = s.find("\r\x1b[K["); at != std::string::npos; at = s.find("\r\x1b[K[", at + 1)) ++n;
    return n;
  };
  size_t before = redraws();
  for (int i = 0; i < 1000; ++i) {
    clock.mono += 1;  // one second in 1 ms ticks
    reporter.OnTick();
  }
  size_t drawn = redraws() - before;
  EXPECT_GE(drawn, 9u);
  EXPECT_LE(drawn, 11u);
}

TEST(ProgressReporterTest, LiveLineIsCutToTheTerminalWidth) {
  plan::Plan plan = MakePlan(kWorkflow);
  FakeClock clock;
  std::ostringstream out;
  ProgressReporter::Options options;
  options.live = true;
  options.width = 10;
  ProgressReporter reporter(out, clock, options);
  reporter.OnRunStarted("r1", plan);
  std::string s = out.str();
  std::string line = s.substr(s.rfind("\x1b[K") + 3);
  EXPECT_LE(line.size(), 9u) << line;
}

}  // namespace
}  // namespace crucible::cli

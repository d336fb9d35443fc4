// The scheduler continuing a finished run from the store (`retry`).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "scheduler/scheduler.h"
#include "scheduler_test_util.h"

namespace crucible::scheduler {
namespace {

using fake::FakeOutcome;
using store::RunState;
using store::StepState;

constexpr const char* kWorkflow = R"(
[[steps]]
id = "prepare"
run = ["x"]
[[steps]]
id = "bad"
needs = ["prepare"]
run = ["x"]
retries = 1
retry_delay = "1s"
[[steps]]
id = "use"
needs = ["prepare", "bad"]
run = ["echo", "{{steps.prepare.outputs.v}}"]
)";

TEST_F(SchedulerTest, ContinuedFailedRunKeepsSucceededStepsAndRetriesTheRest) {
  auto plan = MakePlan(kWorkflow);
  backend_.per_step["prepare"] = {FakeOutcome::Outputs("v=42\n")};
  backend_.per_step["bad"] = {FakeOutcome::Exit(1), FakeOutcome::Exit(1), FakeOutcome::Ok()};
  auto first = RunPlan(plan);
  ASSERT_EQ(first.state, RunState::kFailed);
  ASSERT_EQ(Step("bad").attempts, 2);
  ASSERT_EQ(Step("use").state, StepState::kSkipped);
  backend_.launches.clear();

  RunOptions options;
  options.resume_from_store = true;
  auto second = RunPlan(plan, options);
  EXPECT_EQ(second.state, RunState::kSucceeded);
  EXPECT_EQ(second.exit_code, ExitCode::kSuccess);
  // The kept step is not run again and keeps its single attempt and outputs.
  EXPECT_TRUE(backend_.LaunchesOf("prepare").empty());
  EXPECT_EQ(Step("prepare").state, StepState::kSucceeded);
  EXPECT_EQ(Step("prepare").attempts, 1);
  EXPECT_EQ(Attempts(plan, "prepare").size(), 1u);
  // The failed step's numbering continues after its two recorded attempts.
  auto bad = backend_.LaunchesOf("bad");
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_EQ(bad[0]->attempt, 3u);
  EXPECT_EQ(Step("bad").state, StepState::kSucceeded);
  EXPECT_EQ(Step("bad").reason, "");
  EXPECT_EQ(Step("bad").attempts, 3);
  auto bad_attempts = Attempts(plan, "bad");
  ASSERT_EQ(bad_attempts.size(), 3u);
  EXPECT_EQ(bad_attempts[2].number, 3);
  EXPECT_EQ(bad_attempts[2].state, "succeeded");
  // The skipped dependent runs, seeing the kept step's outputs.
  auto use = backend_.LaunchesOf("use");
  ASSERT_EQ(use.size(), 1u);
  EXPECT_EQ(use[0]->argv, (std::vector<std::string>{"echo", "42"}));
  auto upstream = nlohmann::json::parse(use[0]->upstream_json.value_or("{}"));
  EXPECT_EQ(upstream["steps"][0]["id"], "prepare");
  EXPECT_EQ(upstream["steps"][0]["outputs"]["v"], "42");
  EXPECT_EQ(upstream["steps"][1]["state"], "succeeded");
  EXPECT_EQ(Step("use").state, StepState::kSucceeded);
  auto run = store_->GetRun(run_id_);
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->state, RunState::kSucceeded);
  EXPECT_EQ(run->exit_code, 0);
  EXPECT_GT(run->ended_at_ms, 0);
}

TEST_F(SchedulerTest, ContinuedRunGivesAFreshRetriesBudgetAndCanFailAgain) {
  auto plan = MakePlan(kWorkflow);
  backend_.per_step["bad"] = {FakeOutcome::Exit(1)};
  ASSERT_EQ(RunPlan(plan).state, RunState::kFailed);
  backend_.launches.clear();

  RunOptions options;
  options.resume_from_store = true;
  auto second = RunPlan(plan, options);
  EXPECT_EQ(second.state, RunState::kFailed);
  EXPECT_EQ(second.exit_code, ExitCode::kStepFailed);
  auto bad = backend_.LaunchesOf("bad");
  ASSERT_EQ(bad.size(), 2u);  // one try and one retry, again
  EXPECT_EQ(bad[0]->attempt, 3u);
  EXPECT_EQ(bad[1]->attempt, 4u);
  EXPECT_EQ(Step("bad").state, StepState::kFailed);
  EXPECT_EQ(Step("bad").attempts, 4);
  EXPECT_EQ(Step("use").state, StepState::kSkipped);
  EXPECT_EQ(store_->GetRun(run_id_)->state, RunState::kFailed);
}

TEST_F(SchedulerTest, ContinuingARunOfAnotherPlanIsRefused) {
  auto plan = MakePlan(kWorkflow);
  backend_.per_step["bad"] = {FakeOutcome::Exit(1)};
  ASSERT_EQ(RunPlan(plan).state, RunState::kFailed);
  auto other = MakePlan("[[steps]]\nid = \"other\"\nrun = [\"x\"]\n");
  RunOptions options;
  options.resume_from_store = true;
  options.run_id = run_id_;
  Scheduler sched(other, *store_, {{"localproc", &backend_}}, clock_, waker_, nullptr, options);
  auto result = sched.Run();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(store_->GetRun(run_id_)->state, RunState::kFailed);
}

/// Records the state a killed engine leaves: one step succeeded (with an
/// output), one attempt running, one step waiting for its retry, one pending.
class ResumeTest : public SchedulerTest {
 protected:
  void RecordCrashedRun(const plan::Plan& plan) {
    store::RunRow run;
    run.id = run_id_;
    run.workflow = "t";
    run.state = RunState::kRunning;
    run.created_at_ms = clock_.NowMs();
    run.owner_token = 1;
    std::vector<store::StepRow> rows(plan.step_count());
    for (plan::TaskId t = 0; t < plan.step_count(); ++t) {
      rows[t].run_id = run_id_;
      rows[t].idx = static_cast<int>(t);
      rows[t].step_id = plan.step(t).id;
      rows[t].backend = "localproc";
    }
    ASSERT_TRUE(store_->CreateRun(run, rows).ok());
    auto attempt = [&](const std::string& step, int n, const std::string& state, const std::string& reason) {
      store::AttemptRow a;
      a.run_id = run_id_;
      a.step_idx = static_cast<int>(*plan.Find(step));
      a.number = n;
      a.state = "running";
      a.handle = "fake:" + step;
      ASSERT_TRUE(store_->InsertAttempt(a).ok());
      if (state == "running") return;
      a.state = state;
      a.reason = reason;
      a.exit_code = state == "succeeded" ? 0 : 1;
      ASSERT_TRUE(store_->FinishAttempt(a).ok());
    };
    auto step = [&](const std::string& id, StepState state, int attempts) {
      store::StepRow row = rows[*plan.Find(id)];
      row.state = state;
      row.attempts = attempts;
      ASSERT_TRUE(store_->SetStepState(row).ok());
    };
    attempt("done", 1, "succeeded", "");
    step("done", StepState::kSucceeded, 1);
    ASSERT_TRUE(store_->PutOutputs(run_id_, static_cast<int>(*plan.Find("done")), {{"v", "42"}}).ok());
    attempt("running", 1, "running", "");
    step("running", StepState::kRunning, 1);
    attempt("waiting", 1, "failed", "exited");
    step("waiting", StepState::kRunning, 1);
  }
  RunSummary Resume(const plan::Plan& plan) {
    store::OwnerChange change;
    change.expect_token = 1;
    change.pid = 1;
    change.host = "test";
    auto token = store_->TakeOver(run_id_, change);
    EXPECT_TRUE(token.ok());
    RunOptions options;
    options.resume_running = true;
    options.owner_token = token.ok() ? *token : 0;
    return RunPlan(plan, options);
  }
};

constexpr const char* kCrashed = R"(
[[steps]]
id = "done"
run = ["x"]
[[steps]]
id = "running"
run = ["x"]
[[steps]]
id = "waiting"
run = ["x"]
retries = 1
[[steps]]
id = "last"
needs = ["done", "running", "waiting"]
run = ["echo", "{{steps.done.outputs.v}}"]
)";

TEST_F(ResumeTest, ResumeKeepsFinishedStepsAdoptsTheRunningAttemptAndCountsTheRecordedRetries) {
  auto plan = MakePlan(kCrashed);
  RecordCrashedRun(plan);
  backend_.adoptable = std::map<std::string, FakeOutcome>{{"running", FakeOutcome::Ok(5)}};
  backend_.per_step["waiting"] = {FakeOutcome::Exit(1), FakeOutcome::Ok()};
  auto summary = Resume(plan);
  EXPECT_TRUE(backend_.LaunchesOf("done").empty()) << "a succeeded step is never run again";
  EXPECT_TRUE(backend_.LaunchesOf("running").empty()) << "the running attempt is followed, not restarted";
  ASSERT_EQ(backend_.adopted.size(), 1u);
  EXPECT_EQ(backend_.adopted[0].step_id, "running");
  EXPECT_EQ(backend_.adopted[0].attempt, 1u);
  EXPECT_EQ(backend_.adopted[0].handle, "fake:running");
  EXPECT_EQ(Step("running").state, StepState::kSucceeded);
  EXPECT_EQ(Attempts(plan, "running").size(), 1u);
  // The retry it was waiting for: attempt 2, the last its budget allows.
  auto waiting = backend_.LaunchesOf("waiting");
  ASSERT_EQ(waiting.size(), 1u);
  EXPECT_EQ(waiting[0]->attempt, 2u);
  EXPECT_EQ(Step("waiting").state, StepState::kSucceeded);
  auto last = backend_.LaunchesOf("last");
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0]->argv, (std::vector<std::string>{"echo", "42"})) << "outputs of kept steps are seen";
  EXPECT_EQ(summary.state, RunState::kSucceeded);
}

TEST_F(ResumeTest, RecordedRetriesAreChargedAndABackendThatCannotAdoptLosesTheAttempt) {
  auto plan = MakePlan(kCrashed);
  RecordCrashedRun(plan);
  // No Adopt: the running attempt is lost, retried without charging `retries`.
  backend_.per_step["waiting"] = {FakeOutcome::Exit(1)};
  auto summary = Resume(plan);
  auto running = Attempts(plan, "running");
  ASSERT_EQ(running.size(), 2u);
  EXPECT_EQ(running[0].reason, "lost");
  EXPECT_TRUE(running[0].infra);
  EXPECT_EQ(running[1].state, "succeeded");
  // `waiting` had used its one retry before the crash: attempt 2 failing ends it.
  EXPECT_EQ(backend_.LaunchesOf("waiting").size(), 1u);
  EXPECT_EQ(Step("waiting").state, StepState::kFailed);
  EXPECT_EQ(Step("last").state, StepState::kSkipped);
  EXPECT_EQ(summary.state, RunState::kFailed);
}

TEST_F(ResumeTest, AnEngineWhoseRunWasTakenOverWritesNothing) {
  auto plan = MakePlan(kCrashed);
  RecordCrashedRun(plan);
  store::OwnerChange change;
  change.expect_token = 1;
  change.pid = 2;
  change.host = "elsewhere";
  ASSERT_TRUE(store_->TakeOver(run_id_, change).ok());  // token 2: someone else's
  RunOptions options;
  options.run_id = run_id_;
  options.resume_running = true;
  options.owner_token = 1;  // this engine still thinks it owns the run
  Scheduler sched(plan, *store_, {{"localproc", &backend_}}, clock_, waker_, &observer_, options);
  auto result = sched.Run();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kFenced) << result.error().message;
  EXPECT_NE(result.error().message.find("taken over by pid 2 on host \"elsewhere\""), std::string::npos);
  EXPECT_TRUE(backend_.launches.empty());
  EXPECT_EQ(Step("waiting").state, StepState::kRunning) << "nothing written";
}

}  // namespace
}  // namespace crucible::scheduler

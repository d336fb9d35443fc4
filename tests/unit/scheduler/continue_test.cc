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

}  // namespace
}  // namespace crucible::scheduler

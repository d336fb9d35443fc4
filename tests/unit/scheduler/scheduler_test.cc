#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "scheduler/scheduler.h"
#include "scheduler_test_util.h"

namespace crucible::scheduler {
namespace {

using fake::FakeOutcome;
using store::RunState;
using store::StepState;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST_F(SchedulerTest, FailedStepSkipsDependentsButFinishesSiblings) {
  auto plan = MakePlan(R"(
[[steps]]
id = "a"
run = ["true"]
[[steps]]
id = "bad"
needs = ["a"]
run = ["false"]
[[steps]]
id = "after_bad"
needs = ["bad"]
run = ["true"]
[[steps]]
id = "deeper"
needs = ["after_bad"]
run = ["true"]
[[steps]]
id = "sibling"
needs = ["a"]
run = ["true"]
)", "max_parallel = 1");
  backend_.per_step["bad"] = {FakeOutcome::Exit(1)};
  auto summary = RunPlan(plan);
  EXPECT_EQ(summary.state, RunState::kFailed);
  EXPECT_EQ(summary.exit_code, ExitCode::kStepFailed);
  EXPECT_EQ(Step("bad").state, StepState::kFailed);
  EXPECT_EQ(Step("bad").reason, "exited");
  EXPECT_EQ(Step("bad").exit_code, 1);
  EXPECT_EQ(Step("after_bad").state, StepState::kSkipped);
  EXPECT_EQ(Step("after_bad").reason, "upstream_failed");
  EXPECT_EQ(Step("deeper").state, StepState::kSkipped);
  EXPECT_EQ(Step("deeper").reason, "upstream_failed");
  EXPECT_EQ(Step("sibling").state, StepState::kSucceeded);
  EXPECT_EQ(backend_.LaunchesOf("after_bad").size(), 0u);
  EXPECT_EQ(backend_.LaunchesOf("sibling").size(), 1u);
  EXPECT_EQ(store_->GetRun(run_id_)->state, RunState::kFailed);
  EXPECT_EQ(store_->GetRun(run_id_)->exit_code, 1);
}

TEST_F(SchedulerTest, WhenAlwaysRunsAfterFailure) {
  auto plan = MakePlan(R"(
[[steps]]
id = "eval"
for_each = ["x", "y"]
run = ["eval", "{{item}}"]
[[steps]]
id = "score"
needs = ["eval"]
when = "always"
run = ["score"]
[[steps]]
id = "publish"
needs = ["eval"]
run = ["publish"]
)");
  backend_.per_step["eval[y]"] = {FakeOutcome::Exit(2)};
  auto summary = RunPlan(plan);
  EXPECT_EQ(summary.exit_code, ExitCode::kStepFailed);
  EXPECT_EQ(Step("score").state, StepState::kSucceeded);
  EXPECT_EQ(backend_.LaunchesOf("score").size(), 1u);
  EXPECT_EQ(Step("publish").state, StepState::kSkipped);
  EXPECT_EQ(Step("publish").reason, "upstream_failed");
}

TEST_F(SchedulerTest, WhenOnFailureSkippedWithConditionFalseWhenAllSucceed) {
  auto plan = MakePlan(R"(
[[steps]]
id = "a"
run = ["true"]
[[steps]]
id = "cleanup"
needs = ["a"]
when = "on_failure"
run = ["cleanup"]
[[steps]]
id = "after_cleanup"
needs = ["cleanup"]
run = ["true"]
)");
  auto summary = RunPlan(plan);
  EXPECT_EQ(summary.state, RunState::kSucceeded);
  EXPECT_EQ(summary.exit_code, ExitCode::kSuccess);
  EXPECT_EQ(Step("cleanup").state, StepState::kSkipped);
  EXPECT_EQ(Step("cleanup").reason, "condition_false");
  EXPECT_EQ(Step("after_cleanup").state, StepState::kSkipped);
  EXPECT_EQ(Step("after_cleanup").reason, "condition_false");
  EXPECT_EQ(backend_.launches.size(), 1u);
}

TEST_F(SchedulerTest, WhenOnFailureRunsAfterAnUpstreamSkippedByFailure) {
  auto plan = MakePlan(R"(
[[steps]]
id = "a"
run = ["false"]
[[steps]]
id = "b"
needs = ["a"]
run = ["true"]
[[steps]]
id = "alert"
needs = ["b"]
when = "on_failure"
run = ["alert"]
)");
  backend_.per_step["a"] = {FakeOutcome::Exit(1)};
  RunPlan(plan);
  EXPECT_EQ(Step("b").reason, "upstream_failed");
  EXPECT_EQ(Step("alert").state, StepState::kSucceeded);
}

TEST_F(SchedulerTest, MaxParallelIsRespected) {
  std::string items;
  for (int i = 0; i < 20; ++i) items += (i ? ", \"" : "\"") + std::to_string(i) + "\"";
  auto plan = MakePlan("[[steps]]\nid = \"w\"\nfor_each = [" + items + "]\nrun = [\"w\"]\n", "max_parallel = 3");
  backend_.script = [](const host::LaunchSpec&) { return FakeOutcome::Ok(10); };
  auto summary = RunPlan(plan);
  EXPECT_EQ(summary.state, RunState::kSucceeded);
  EXPECT_EQ(backend_.launches.size(), 20u);
  EXPECT_EQ(backend_.peak_running, 3u);
  EXPECT_EQ(backend_.max_poll_timeout, 0);
}

TEST_F(SchedulerTest, BackendCapacityIsRespected) {
  std::string items;
  for (int i = 0; i < 10; ++i) items += (i ? ", \"" : "\"") + std::to_string(i) + "\"";
  auto plan = MakePlan("[[steps]]\nid = \"w\"\nfor_each = [" + items + "]\nrun = [\"w\"]\n", "max_parallel = 8");
  backend_.capacity = 2;
  backend_.script = [](const host::LaunchSpec&) { return FakeOutcome::Ok(10); };
  RunPlan(plan);
  EXPECT_EQ(backend_.launches.size(), 10u);
  EXPECT_EQ(backend_.peak_running, 2u);
}

TEST_F(SchedulerTest, RetriesOnlyMatchingRetryOn) {
  auto plan = MakePlan(R"(
[[steps]]
id = "flaky"
run = ["x"]
retries = 5
retry_on = ["timeout", 42]
retry_delay = "1s"
[[steps]]
id = "honest"
run = ["y"]
retries = 5
retry_on = ["timeout"]
)");
  backend_.per_step["flaky"] = {FakeOutcome::Failed(CRUCIBLE_REASON_TIMEOUT), FakeOutcome::Exit(42),
                                FakeOutcome::Exit(1)};
  backend_.per_step["honest"] = {FakeOutcome::Exit(1)};
  auto summary = RunPlan(plan);
  EXPECT_EQ(summary.state, RunState::kFailed);
  EXPECT_EQ(backend_.LaunchesOf("flaky").size(), 3u);
  EXPECT_EQ(Step("flaky").attempts, 3);
  EXPECT_EQ(Step("flaky").reason, "exited");
  EXPECT_EQ(backend_.LaunchesOf("honest").size(), 1u);
  auto attempts = Attempts(plan, "flaky");
  ASSERT_EQ(attempts.size(), 3u);
  EXPECT_EQ(attempts[0].reason, "timeout");
  EXPECT_EQ(attempts[1].exit_code, 42);
  EXPECT_EQ(attempts[2].exit_code, 1);
  // The retried attempts carry their number in the environment.
  auto launches = backend_.LaunchesOf("flaky");
  EXPECT_EQ(launches[2]->attempt, 3u);
  EXPECT_THAT(launches[2]->env, ::testing::Contains(std::make_pair(std::string("CRUCIBLE_ATTEMPT"), std::string("3"))));
}

TEST_F(SchedulerTest, RetryBackoffDoublesWithJitter) {
  auto plan = MakePlan(R"(
[[steps]]
id = "r"
run = ["x"]
retries = 3
retry_delay = "1s"
[[steps]]
id = "capped"
run = ["x"]
retries = 2
retry_delay = "4m"
)");
  backend_.per_step["r"] = {FakeOutcome::Exit(1)};
  backend_.per_step["capped"] = {FakeOutcome::Exit(1)};
  RunPlan(plan);
  auto starts = [&](const std::string& id) {
    std::vector<int64_t> out;
    for (size_t i = 0; i < backend_.launches.size(); ++i) {
      if (backend_.launches[i].step_id == id) out.push_back(backend_.launch_times[i]);
    }
    return out;
  };
  auto r = starts("r");
  ASSERT_EQ(r.size(), 4u);
  const int64_t expected[] = {1000, 2000, 4000};
  for (int i = 0; i < 3; ++i) {
    int64_t delay = r[i + 1] - r[i];  // the attempts end at once, so the gap is the backoff
    EXPECT_GE(delay, expected[i] * 9 / 10) << "retry " << i + 1;
    EXPECT_LE(delay, expected[i] * 11 / 10) << "retry " << i + 1;
  }
  auto c = starts("capped");
  ASSERT_EQ(c.size(), 3u);
  EXPECT_GE(c[2] - c[1], 300000 * 9 / 10);  // 8m capped to 5m
  EXPECT_LE(c[2] - c[1], 300000 * 11 / 10);
  EXPECT_EQ(Step("r").state, StepState::kFailed);
}

TEST_F(SchedulerTest, StepStaysRunningWhileWaitingForRetry) {
  auto plan = MakePlan(R"(
[[steps]]
id = "r"
run = ["x"]
retries = 1
retry_delay = "10s"
)");
  backend_.per_step["r"] = {FakeOutcome::Exit(1), FakeOutcome::Ok()};
  std::optional<StepState> seen;
  backend_.on_start = [&](const host::LaunchSpec& l) {
    if (l.attempt == 2) {
      auto other = store::Store::Open(dir_ + "/state");
      ASSERT_TRUE(other.ok());
      auto steps = other.value()->GetSteps(run_id_);
      ASSERT_TRUE(steps.ok());
      ASSERT_EQ(steps->size(), 1u);
      seen = steps->at(0).state;
    }
  };
  auto summary = RunPlan(plan);
  EXPECT_EQ(summary.state, RunState::kSucceeded);
  EXPECT_EQ(seen, StepState::kRunning);
  EXPECT_EQ(Step("r").attempts, 2);
}

TEST_F(SchedulerTest, InfraFailuresNotChargedToRetries) {
  auto plan = MakePlan(R"(
[[steps]]
id = "survives"
run = ["x"]
retry_delay = "0s"
[[steps]]
id = "gives_up"
run = ["x"]
retry_delay = "0s"
[[steps]]
id = "start_fails"
run = ["x"]
retry_delay = "0s"
)");
  auto lost = FakeOutcome::Failed(CRUCIBLE_REASON_LOST);
  backend_.per_step["survives"] = {lost, lost, lost, FakeOutcome::Ok()};
  backend_.per_step["gives_up"] = {lost, lost, lost, lost, FakeOutcome::Ok()};
  backend_.per_step["start_fails"] = {FakeOutcome::StartError("pool unreachable"), FakeOutcome::Ok()};
  RunPlan(plan);
  EXPECT_EQ(Step("survives").state, StepState::kSucceeded);
  EXPECT_EQ(Step("survives").attempts, 4);
  EXPECT_EQ(Step("gives_up").state, StepState::kFailed);
  EXPECT_EQ(Step("gives_up").reason, "lost");
  EXPECT_EQ(Step("gives_up").attempts, 4);
  EXPECT_EQ(Step("start_fails").state, StepState::kSucceeded);
  auto attempts = Attempts(plan, "start_fails");
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_EQ(attempts[0].state, "failed");
  EXPECT_EQ(attempts[0].reason, "backend_error");
  EXPECT_TRUE(attempts[0].infra);
  EXPECT_THAT(attempts[0].message, HasSubstr("pool unreachable"));
  for (const auto& a : Attempts(plan, "survives")) {
    if (a.state == "failed") {
      EXPECT_TRUE(a.infra);
    }
  }
}

TEST_F(SchedulerTest, FailFastCancelsRunningAndSkipsPendingButRunsCleanup) {
  auto plan = MakePlan(R"(
[[steps]]
id = "bad"
run = ["x"]
[[steps]]
id = "slow"
run = ["x"]
[[steps]]
id = "queued"
run = ["x"]
[[steps]]
id = "after_slow"
needs = ["slow"]
run = ["x"]
[[steps]]
id = "cleanup"
needs = ["bad", "slow"]
when = "always"
run = ["cleanup"]
[[steps]]
id = "alert"
needs = ["slow"]
when = "on_failure"
run = ["alert"]
)", "max_parallel = 2\nfail_fast = true");
  backend_.per_step["bad"] = {FakeOutcome::Exit(1, 10)};
  backend_.per_step["slow"] = {FakeOutcome::Hold()};
  auto summary = RunPlan(plan);
  EXPECT_EQ(summary.state, RunState::kFailed);
  EXPECT_EQ(summary.exit_code, ExitCode::kStepFailed);
  EXPECT_EQ(backend_.cancels.size(), 1u);
  EXPECT_EQ(Step("slow").state, StepState::kCancelled);
  EXPECT_EQ(Step("slow").reason, "fail_fast");
  EXPECT_EQ(Attempts(plan, "slow").at(0).state, "cancelled");
  EXPECT_EQ(Step("queued").state, StepState::kSkipped);
  EXPECT_EQ(Step("queued").reason, "fail_fast");
  EXPECT_EQ(backend_.LaunchesOf("queued").size(), 0u);
  EXPECT_EQ(Step("after_slow").state, StepState::kSkipped);
  EXPECT_EQ(Step("cleanup").state, StepState::kSucceeded);
  EXPECT_EQ(Step("alert").state, StepState::kSucceeded);
}

TEST_F(SchedulerTest, FailFastInTheSameTurnNeverStartsTheRestOfTheBatch) {
  auto plan = MakePlan(R"(
[[steps]]
id = "prep"
run = ["x"]
[[steps]]
id = "other"
needs = ["prep"]
run = ["x"]
[[steps]]
id = "use"
needs = ["prep"]
run = ["echo", "{{steps.prep.outputs.missing}}"]
)", "max_parallel = 4\nfail_fast = true");
  auto summary = RunPlan(plan);
  EXPECT_EQ(summary.state, RunState::kFailed);
  EXPECT_EQ(Step("use").reason, "missing_output");
  EXPECT_EQ(backend_.LaunchesOf("other").size(), 0u);
  EXPECT_EQ(backend_.cancels.size(), 0u);
  EXPECT_EQ(Step("other").state, StepState::kCancelled);
  EXPECT_EQ(Step("other").reason, "fail_fast");
  auto attempts = Attempts(plan, "other");
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_EQ(attempts[0].state, "cancelled");
}

TEST_F(SchedulerTest, CancelRecordsCancelledAndExits130) {
  auto plan = MakePlan(R"(
[[steps]]
id = "a"
run = ["x"]
[[steps]]
id = "b"
run = ["x"]
[[steps]]
id = "cleanup"
needs = ["a", "b"]
when = "always"
run = ["x"]
)");
  backend_.script = [](const host::LaunchSpec&) { return FakeOutcome::Hold(); };
  clock_.on_block = [&] { scheduler_->RequestCancel(); };
  auto summary = RunPlan(plan);
  EXPECT_EQ(summary.state, RunState::kCancelled);
  EXPECT_EQ(summary.exit_code, ExitCode::kInterrupted);
  EXPECT_EQ(backend_.cancels.size(), 2u);
  EXPECT_EQ(Step("a").state, StepState::kCancelled);
  EXPECT_EQ(Step("b").state, StepState::kCancelled);
  EXPECT_EQ(Step("cleanup").state, StepState::kCancelled);
  EXPECT_EQ(backend_.LaunchesOf("cleanup").size(), 0u);
  EXPECT_EQ(Attempts(plan, "a").at(0).state, "cancelled");
  auto run = store_->GetRun(run_id_);
  EXPECT_EQ(run->state, RunState::kCancelled);
  EXPECT_EQ(run->exit_code, 130);
  EXPECT_EQ(observer_.finished_code, ExitCode::kInterrupted);
}

TEST_F(SchedulerTest, SecondCancelStopsWaitingForBackends) {
  auto plan = MakePlan(R"(
[[steps]]
id = "stubborn"
run = ["x"]
)");
  backend_.script = [](const host::LaunchSpec&) { return FakeOutcome::Hold(); };
  backend_.ignore_cancel = true;
  clock_.on_block = [&] { scheduler_->RequestCancel(); };
  auto summary = RunPlan(plan);
  EXPECT_EQ(summary.exit_code, ExitCode::kInterrupted);
  EXPECT_EQ(Step("stubborn").state, StepState::kCancelled);
  auto attempts = Attempts(plan, "stubborn");
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_EQ(attempts[0].state, "cancelled");
  EXPECT_EQ(attempts[0].message, "engine stopped waiting");
}

TEST_F(SchedulerTest, RunTimeoutCancelsAndFails) {
  auto plan = MakePlan(R"(
[[steps]]
id = "forever"
run = ["x"]
[[steps]]
id = "next"
needs = ["forever"]
run = ["x"]
)", "timeout = \"1m\"");
  backend_.script = [](const host::LaunchSpec&) { return FakeOutcome::Hold(); };
  auto summary = RunPlan(plan);
  EXPECT_EQ(summary.state, RunState::kFailed);
  EXPECT_EQ(summary.exit_code, ExitCode::kStepFailed);
  EXPECT_EQ(Step("forever").state, StepState::kCancelled);
  EXPECT_EQ(Step("forever").reason, "timeout");
  EXPECT_EQ(Step("next").state, StepState::kCancelled);
  EXPECT_EQ(Step("next").reason, "timeout");
  EXPECT_GE(clock_.MonotonicMs(), 60000);
}

TEST_F(SchedulerTest, SilentAttemptIsCancelledAfterItsSafetyDeadline) {
  auto plan = MakePlan(R"(
[[steps]]
id = "hung"
run = ["x"]
timeout = "10s"
)");
  backend_.script = [](const host::LaunchSpec&) { return FakeOutcome::Hold(); };
  RunPlan(plan);
  EXPECT_EQ(backend_.cancels.size(), 1u);
  EXPECT_GE(clock_.MonotonicMs(), 10000 + 5000 + 30000);
  EXPECT_EQ(Step("hung").state, StepState::kFailed);
  EXPECT_EQ(Step("hung").reason, "timeout");
}

TEST_F(SchedulerTest, OutputsFlowToDownstreamArgv) {
  auto plan = MakePlan(R"(
[[steps]]
id = "prepare"
run = ["x"]
[[steps]]
id = "use"
needs = ["prepare"]
run = ["echo", "{{steps.prepare.outputs.tests}}", "run={{run.id}}"]
env = { NAME = "{{steps.prepare.outputs.name}}" }
)");
  backend_.per_step["prepare"] = {FakeOutcome::Outputs("tests=12\n\nname=a=b\r\n")};
  auto summary = RunPlan(plan);
  EXPECT_EQ(summary.state, RunState::kSucceeded);
  auto use = backend_.LaunchesOf("use");
  ASSERT_EQ(use.size(), 1u);
  EXPECT_EQ(use[0]->argv, (std::vector<std::string>{"echo", "12", "run=" + run_id_}));
  EXPECT_THAT(use[0]->env, ::testing::Contains(std::make_pair(std::string("NAME"), std::string("a=b"))));
  EXPECT_THAT(use[0]->env, ::testing::Contains(std::make_pair(std::string("CRUCIBLE_RUN_ID"), run_id_)));
  EXPECT_THAT(use[0]->env, ::testing::Contains(std::make_pair(std::string("CRUCIBLE_STEP_ID"), std::string("use"))));
  auto outputs = store_->GetOutputs(run_id_);
  ASSERT_TRUE(outputs.ok());
  ASSERT_EQ(outputs->size(), 2u);
  EXPECT_EQ(outputs->at(0).step_id, "prepare");
}

TEST_F(SchedulerTest, MissingOutputKeyFailsDependentBeforeStart) {
  auto plan = MakePlan(R"(
[[steps]]
id = "prepare"
run = ["x"]
[[steps]]
id = "use"
needs = ["prepare"]
run = ["echo", "{{steps.prepare.outputs.tests}}"]
)");
  backend_.per_step["prepare"] = {FakeOutcome::Outputs("other=1\n")};
  auto summary = RunPlan(plan);
  EXPECT_EQ(summary.state, RunState::kFailed);
  EXPECT_EQ(Step("use").state, StepState::kFailed);
  EXPECT_EQ(Step("use").reason, "missing_output");
  EXPECT_EQ(Step("use").attempts, 0);
  EXPECT_EQ(backend_.LaunchesOf("use").size(), 0u);
  EXPECT_TRUE(Attempts(plan, "use").empty());
  ASSERT_EQ(observer_.messages.size(), 1u);
  EXPECT_THAT(observer_.messages[0].second, HasSubstr("tests"));
  EXPECT_EQ(Step("use").message, observer_.messages[0].second) << "recorded for `status`";
}

TEST_F(SchedulerTest, AFailedStepRecordsItsLastAttemptsMessage) {
  auto plan = MakePlan(R"(
[[steps]]
id = "bad"
retries = 1
retry_delay = "10ms"
run = ["x"]
[[steps]]
id = "good"
run = ["x"]
)");
  FakeOutcome first = FakeOutcome::Failed(CRUCIBLE_REASON_OOM_KILLED);
  first.message = "first: over the memory limit";
  FakeOutcome second = FakeOutcome::Failed(CRUCIBLE_REASON_OOM_KILLED);
  second.message = "second: over the memory limit";
  backend_.per_step["bad"] = {first, second};
  RunPlan(plan);
  EXPECT_EQ(Step("bad").state, StepState::kFailed);
  EXPECT_EQ(Step("bad").attempts, 2);
  EXPECT_EQ(Step("bad").message, "second: over the memory limit");
  EXPECT_EQ(Step("good").message, "");
}

TEST_F(SchedulerTest, AStepCancelledWhileItWaitsForARetryKeepsItsLastAttemptsMessage) {
  auto plan = MakePlan(R"(
[[steps]]
id = "r"
run = ["x"]
retries = 1
retry_delay = "10s"
[[steps]]
id = "f"
run = ["x"]
)", "fail_fast = true");
  FakeOutcome first = FakeOutcome::Exit(1);
  first.message = "2 of 9 tests failed";
  backend_.per_step["r"] = {first, FakeOutcome::Ok()};
  backend_.per_step["f"] = {FakeOutcome::Exit(1, 5000)};  // fails while r waits for its retry
  RunPlan(plan);
  EXPECT_EQ(Step("r").state, StepState::kCancelled);
  EXPECT_EQ(Step("r").reason, "fail_fast");
  EXPECT_EQ(Step("r").attempts, 1);
  EXPECT_EQ(Step("r").message, "2 of 9 tests failed");
}

TEST_F(SchedulerTest, OutputsOver4KiBFailTheAttempt) {
  auto plan = MakePlan(R"(
[[steps]]
id = "big"
run = ["x"]
[[steps]]
id = "badkey"
run = ["x"]
[[steps]]
id = "after"
needs = ["big"]
run = ["x"]
)");
  backend_.per_step["big"] = {FakeOutcome::Outputs("blob=" + std::string(5000, 'x') + "\n")};
  backend_.per_step["badkey"] = {FakeOutcome::Outputs("9lives=1\n")};
  RunPlan(plan);
  EXPECT_EQ(Step("big").state, StepState::kFailed);
  auto attempts = Attempts(plan, "big");
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_EQ(attempts[0].state, "failed");
  EXPECT_THAT(attempts[0].message, HasSubstr("outputs exceed 4 KiB"));
  EXPECT_EQ(Step("after").reason, "upstream_failed");
  EXPECT_EQ(Step("badkey").state, StepState::kFailed);
  EXPECT_THAT(Attempts(plan, "badkey").at(0).message, HasSubstr("9lives"));
  EXPECT_TRUE(store_->GetOutputs(run_id_)->empty());
}

TEST_F(SchedulerTest, UpstreamJsonIsPrintedAsAnOrderedJsonDocumentWouldBe) {
  auto plan = MakePlan(R"(
[[steps]]
id = "a"
run = ["x"]
[[steps]]
id = "b"
run = ["x"]
[[steps]]
id = "c"
needs = ["a", "b"]
when = "always"
run = ["x"]
[[steps]]
id = "d"
needs = ["a", "b"]
when = "always"
run = ["x"]
)");
  // Quotes, backslashes, a control byte, non-ASCII and invalid UTF-8 in values.
  std::string tricky = "say \"hi\" \\ tab\there \x01 caf\xc3\xa9 bad\xff end";
  backend_.per_step["a"] = {FakeOutcome::Outputs("plain=1\ntricky=" + tricky + "\nempty=\n")};
  backend_.per_step["b"] = {FakeOutcome::Exit(4)};
  RunPlan(plan);
  nlohmann::ordered_json steps = nlohmann::ordered_json::array();
  nlohmann::ordered_json a_out = nlohmann::ordered_json::object();
  a_out["plain"] = "1";
  a_out["tricky"] = tricky;
  a_out["empty"] = "";
  steps.push_back({{"id", "a"}, {"state", "succeeded"}, {"reason", ""}, {"exit_code", 0}, {"outputs", a_out}});
  steps.push_back({{"id", "b"},
                   {"state", "failed"},
                   {"reason", "exited"},
                   {"exit_code", 4},
                   {"outputs", nlohmann::ordered_json::object()}});
  nlohmann::ordered_json doc;
  doc["steps"] = steps;
  std::string expected = doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  for (const char* id : {"c", "d"}) {
    auto launches = backend_.LaunchesOf(id);
    ASSERT_EQ(launches.size(), 1u) << id;
    ASSERT_TRUE(launches[0]->upstream_json.has_value()) << id;
    EXPECT_EQ(*launches[0]->upstream_json, expected) << id;
  }
}

TEST_F(SchedulerTest, UpstreamJsonListsEveryFanOutInstance) {
  auto plan = MakePlan(R"(
[[steps]]
id = "eval"
for_each = ["x", "y", "z"]
run = ["x"]
[[steps]]
id = "score"
needs = ["eval"]
when = "always"
run = ["score"]
[[steps]]
id = "lonely"
run = ["x"]
)");
  backend_.per_step["eval[x]"] = {FakeOutcome::Outputs("passed=7\n")};
  backend_.per_step["eval[y]"] = {FakeOutcome::Exit(3)};
  RunPlan(plan);
  auto score = backend_.LaunchesOf("score");
  ASSERT_EQ(score.size(), 1u);
  ASSERT_TRUE(score[0]->upstream_json.has_value());
  auto doc = nlohmann::json::parse(*score[0]->upstream_json);
  ASSERT_EQ(doc["steps"].size(), 3u);
  std::map<std::string, nlohmann::json> by_id;
  for (const auto& s : doc["steps"]) by_id[s["id"].get<std::string>()] = s;
  EXPECT_EQ(by_id["eval[x]"]["state"], "succeeded");
  EXPECT_EQ(by_id["eval[x]"]["outputs"]["passed"], "7");
  EXPECT_EQ(by_id["eval[x]"]["exit_code"], 0);
  EXPECT_EQ(by_id["eval[y]"]["state"], "failed");
  EXPECT_EQ(by_id["eval[y]"]["exit_code"], 3);
  EXPECT_EQ(by_id["eval[z]"]["state"], "succeeded");
  EXPECT_FALSE(backend_.LaunchesOf("lonely").at(0)->upstream_json.has_value());
}

TEST_F(SchedulerTest, WriteAheadAttemptRowExistsWhenStartIsCalled) {
  auto plan = MakePlan(R"(
[[steps]]
id = "a"
run = ["x"]
[[steps]]
id = "b"
needs = ["a"]
run = ["x"]
retries = 1
retry_delay = "0s"
)");
  backend_.per_step["b"] = {FakeOutcome::Exit(1), FakeOutcome::Ok()};
  int checked = 0;
  backend_.on_start = [&](const host::LaunchSpec& l) {
    auto other = store::Store::Open(dir_ + "/state");  // a second connection sees only committed rows
    ASSERT_TRUE(other.ok()) << other.error().message;
    auto idx = plan.Find(l.step_id);
    auto rows = other.value()->GetAttempts(l.run_id, static_cast<int>(*idx));
    ASSERT_TRUE(rows.ok());
    bool found = false;
    for (const auto& r : rows.value()) {
      if (r.number == static_cast<int>(l.attempt)) {
        found = true;
        EXPECT_EQ(r.state, "running");
        EXPECT_EQ(r.handle, "");
        EXPECT_EQ(r.log_path, l.log_path);
      }
    }
    EXPECT_TRUE(found) << l.step_id << " attempt " << l.attempt;
    ++checked;
  };
  RunPlan(plan);
  EXPECT_EQ(checked, 3);
  EXPECT_EQ(Attempts(plan, "b").at(1).handle.rfind("fake:", 0), 0u);
}

TEST_F(SchedulerTest, HandleOfARunningStepIsCommittedWithoutWaitingForItsEnd) {
  auto plan = MakePlan(R"(
[[steps]]
id = "long"
run = ["x"]
[[steps]]
id = "after"
needs = ["long"]
run = ["x"]
)");
  backend_.per_step["long"] = {FakeOutcome::Hold()};
  bool checked = false;
  // The scheduler blocks with nothing scheduled: by then the handle must be committed.
  clock_.on_block = [&] {
    auto other = store::Store::Open(dir_ + "/state");  // a second connection sees only committed rows
    ASSERT_TRUE(other.ok()) << other.error().message;
    auto rows = other.value()->GetAttempts(run_id_, static_cast<int>(*plan.Find("long")));
    ASSERT_TRUE(rows.ok());
    ASSERT_EQ(rows.value().size(), 1u);
    EXPECT_EQ(rows.value()[0].handle.rfind("fake:", 0), 0u) << rows.value()[0].handle;
    checked = true;
    for (uint64_t key : backend_.RunningKeys()) backend_.Complete(key, FakeOutcome::Ok());
  };
  RunSummary summary = RunPlan(plan);
  EXPECT_TRUE(checked);
  EXPECT_EQ(summary.exit_code, ExitCode::kSuccess);
  EXPECT_EQ(Attempts(plan, "after").at(0).handle.rfind("fake:", 0), 0u);
}

TEST_F(SchedulerTest, EnvPlaceholderNotStoredAndMaskedInLog) {
  setenv("CRUCIBLE_TEST_TOKEN", "s3cr3t-t0ken", 1);
  setenv("CRUCIBLE_TEST_SHORT", "ab", 1);
  auto plan = MakePlan(R"(
[[steps]]
id = "deploy"
run = ["deploy", "--token={{env.CRUCIBLE_TEST_TOKEN}}"]
env = { TOKEN = "{{env.CRUCIBLE_TEST_TOKEN}}", SHORT = "{{env.CRUCIBLE_TEST_SHORT}}" }
)");
  std::string log_path;
  backend_.on_start = [&](const host::LaunchSpec& l) {
    log_path = l.log_path;
    std::ofstream(l.log_path) << "using " << l.argv[1] << " and s3cr3t-t0ken again; short=ab\n";
  };
  FakeOutcome leaky = FakeOutcome::Outputs("echo=s3cr3t-t0ken\n");
  leaky.message = "command failed near s3cr3t-t0ken";
  backend_.per_step["deploy"] = {leaky};
  auto summary = RunPlan(plan);
  unsetenv("CRUCIBLE_TEST_TOKEN");
  unsetenv("CRUCIBLE_TEST_SHORT");
  EXPECT_EQ(summary.state, RunState::kSucceeded);
  auto launch = backend_.LaunchesOf("deploy").at(0);
  EXPECT_EQ(launch->argv[1], "--token=s3cr3t-t0ken");
  EXPECT_EQ(ReadFile(log_path), "using --token=*** and *** again; short=ab\n");
  EXPECT_EQ(Attempts(plan, "deploy").at(0).message, "command failed near ***");
  EXPECT_EQ(store_->GetOutputs(run_id_)->at(0).value, "***");
  store_.reset();  // checkpoint-free: read the database and its WAL as bytes
  for (const char* suffix : {"", "-wal"}) {
    std::string bytes = ReadFile(dir_ + "/state/crucible.db" + suffix);
    EXPECT_EQ(bytes.find("s3cr3t-t0ken"), std::string::npos) << suffix;
  }
}

TEST_F(SchedulerTest, StoreStatesMatchAfterRun) {
  auto plan = MakePlan(R"(
[params]
who = "world"
[[steps]]
id = "ok"
run = ["echo", "{{params.who}}"]
[[steps]]
id = "bad"
run = ["x"]
retries = 1
retry_delay = "0s"
[[steps]]
id = "skipped"
needs = ["bad"]
run = ["x"]
)");
  backend_.per_step["ok"] = {FakeOutcome::Outputs("greeting=hello\n")};
  backend_.per_step["bad"] = {FakeOutcome::Exit(4)};
  RunPlan(plan);
  auto run = store_->GetRun(run_id_);
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->state, RunState::kFailed);
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_EQ(run->step_count, 3);
  EXPECT_EQ(run->workflow, "t");
  EXPECT_EQ(run->source_text, text_);
  EXPECT_EQ(nlohmann::json::parse(run->params_json)["who"], "world");
  EXPECT_EQ(run->ended_at_ms, clock_.NowMs());

  auto ok = Step("ok");
  EXPECT_EQ(ok.state, StepState::kSucceeded);
  EXPECT_EQ(ok.attempts, 1);
  EXPECT_EQ(ok.exit_code, 0);
  EXPECT_EQ(ok.backend, "localproc");
  auto bad = Step("bad");
  EXPECT_EQ(bad.state, StepState::kFailed);
  EXPECT_EQ(bad.attempts, 2);
  EXPECT_EQ(bad.exit_code, 4);
  auto skipped = Step("skipped");
  EXPECT_EQ(skipped.state, StepState::kSkipped);
  EXPECT_EQ(skipped.attempts, 0);

  auto attempts = Attempts(plan, "bad");
  ASSERT_EQ(attempts.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(attempts[i].number, i + 1);
    EXPECT_EQ(attempts[i].state, "failed");
    EXPECT_EQ(attempts[i].reason, "exited");
    EXPECT_EQ(attempts[i].exit_code, 4);
    EXPECT_FALSE(attempts[i].infra);
    EXPECT_EQ(attempts[i].handle.rfind("fake:", 0), 0u);
    EXPECT_EQ(attempts[i].log_path,
              dir_ + "/state/logs/" + run_id_ + "/bad.attempt-" + std::to_string(i + 1) + ".log");
    EXPECT_GT(attempts[i].ended_at_ms, 0);
  }
  auto ok_attempts = Attempts(plan, "ok");
  ASSERT_EQ(ok_attempts.size(), 1u);
  EXPECT_EQ(ok_attempts[0].state, "succeeded");
  EXPECT_EQ(ok_attempts[0].reason, "");
  EXPECT_TRUE(std::filesystem::is_directory(dir_ + "/state/logs/" + run_id_));
  EXPECT_EQ(backend_.LaunchesOf("ok").at(0)->work_dir, dir_ + "/state/work/" + run_id_ + "/ok-1");
  EXPECT_EQ(backend_.LaunchesOf("ok").at(0)->argv, (std::vector<std::string>{"echo", "world"}));
  auto outputs = store_->GetOutputs(run_id_);
  ASSERT_EQ(outputs->size(), 1u);
  EXPECT_EQ(outputs->at(0).key, "greeting");
  EXPECT_EQ(outputs->at(0).value, "hello");
}

TEST_F(SchedulerTest, StorageFullStopsDispatchAndTheRunResumesOnceThereIsSpace) {
  std::string items;
  for (int i = 0; i < 300; ++i) items += (i ? ", \"" : "\"") + std::to_string(i) + "\"";
  auto plan = MakePlan("[[steps]]\nid = \"w\"\nfor_each = [" + items + "]\nrun = [\"w\"]\n", "max_parallel = 2");
  backend_.script = [](const host::LaunchSpec&) { return FakeOutcome::Outputs("blob=" + std::string(3000, 'x')); };
  bool capped = false;
  backend_.on_start = [&](const host::LaunchSpec&) {
    if (capped) return;
    capped = true;
    ASSERT_TRUE(store_->ExecForTesting("PRAGMA max_page_count = 1").ok());  // clamps to the current size
  };
  options_for_next_run_.run_id = run_id_;
  Scheduler sched(plan, *store_, {{"localproc", &backend_}}, clock_, waker_, &observer_, options_for_next_run_);
  auto result = sched.Run();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kStorageFull) << result.error().message;
  EXPECT_NE(result.error().message.find(store_->db_path()), std::string::npos) << "names the path";
  EXPECT_LT(backend_.launches.size(), 300u);
  EXPECT_EQ(store_->GetRun(run_id_)->state, RunState::kRunning);  // left for a later resume
  auto attempts = store_->GetAttempts(run_id_, std::nullopt);
  ASSERT_TRUE(attempts.ok());
  for (const auto& a : *attempts) EXPECT_NE(a.state, "failed") << "storage full is not a step failure";

  // Space again: the run is resumed to its end, every step once succeeded.
  ASSERT_TRUE(store_->ExecForTesting("PRAGMA max_page_count = 1073741823").ok());
  store::OwnerChange change;
  change.expect_token = store_->GetRun(run_id_)->owner_token;
  change.pid = 1;
  change.host = "test";
  auto token = store_->TakeOver(run_id_, change);
  ASSERT_TRUE(token.ok()) << token.error().message;
  RunOptions resume = options_for_next_run_;
  resume.resume_running = true;
  resume.owner_token = *token;
  Scheduler again(plan, *store_, {{"localproc", &backend_}}, clock_, waker_, &observer_, resume);
  auto resumed = again.Run();
  ASSERT_TRUE(resumed.ok()) << resumed.error().message;
  EXPECT_EQ(resumed->state, RunState::kSucceeded);
  auto steps = store_->GetSteps(run_id_);
  ASSERT_EQ(steps->size(), 300u);
  for (const auto& st : *steps) EXPECT_EQ(st.state, StepState::kSucceeded) << st.step_id;
}

TEST_F(SchedulerTest, TenThousandStepFanOutRunsFast) {
  std::string items;
  items.reserve(10000 * 8);
  for (int i = 0; i < 10000; ++i) items += (i ? ", \"" : "\"") + std::to_string(i) + "\"";
  auto plan = MakePlan("[[steps]]\nid = \"w\"\nfor_each = [" + items +
                           "]\nrun = [\"true\"]\n[[steps]]\nid = \"sum\"\nneeds = [\"w\"]\nrun = [\"true\"]\n",
                       "max_parallel = 2");
  auto start = std::chrono::steady_clock::now();
  auto summary = RunPlan(plan);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("10,001 steps through FakeBackend (max_parallel=2): %.3f s\n", secs);
  EXPECT_EQ(summary.state, RunState::kSucceeded);
  EXPECT_EQ(backend_.launches.size(), 10001u);
}

}  // namespace
}  // namespace crucible::scheduler

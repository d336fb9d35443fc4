// `retry RUN` end to end on localproc: what failed runs again in the same run,
// what succeeded is kept with its outputs, the stored workflow is the one used.
#include <gmock/gmock.h>

#include "integration_fixture.h"

namespace crucible::testing {
namespace {

using ::testing::HasSubstr;
using RetryTest = IntegrationTest;

/// `flaky` fails until the file MARKER exists; `after` needs the kept step's outputs.
std::string FlakyWorkflow(const std::string& marker) {
  return R"(
[workflow]
name = "flaky"

[[steps]]
id = "keep"
shell = "echo x=42 >> \"$CRUCIBLE_OUTPUT\""

[[steps]]
id = "flaky"
needs = ["keep"]
run = ["test", "-f", ")" + marker + R"("]

[[steps]]
id = "after"
needs = ["keep", "flaky"]
shell = "test {{steps.keep.outputs.x}} = 42 && grep -q '\"x\":\"42\"' \"$CRUCIBLE_UPSTREAM\""
)";
}

TEST_F(RetryTest, RetryRunsTheFailedStepAgainAndKeepsTheSucceededOne) {
  std::string marker = dir_ + "/marker";
  std::string wf = Write("flaky.toml", FlakyWorkflow(marker));
  EngineResult first = Engine({"run", wf});
  ASSERT_EQ(first.exit_code, 1) << first.err;
  std::string run_id = FirstLine(first.err);

  Write("marker", "");
  EngineResult retry = Engine({"retry", run_id, "--json"});
  ASSERT_EQ(retry.exit_code, 0) << retry.err;
  EXPECT_EQ(FirstLine(retry.err), run_id);
  EXPECT_THAT(retry.err, HasSubstr("retry: using the workflow as submitted with run " + run_id));
  EXPECT_THAT(retry.err, ::testing::Not(HasSubstr("differs")));
  EXPECT_EQ(Json(retry.out)["state"], "succeeded");

  EngineResult status = Engine({"status", run_id, "--json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  nlohmann::json s = Json(status.out);
  EXPECT_EQ(s["state"], "succeeded");
  EXPECT_EQ(s["exit_code"], 0);
  EXPECT_EQ(StepOf(s, "keep")["state"], "succeeded");
  EXPECT_EQ(StepOf(s, "keep")["attempts"], 1);
  EXPECT_EQ(StepOf(s, "keep")["outputs"]["x"], "42");
  EXPECT_EQ(StepOf(s, "flaky")["state"], "succeeded");
  EXPECT_EQ(StepOf(s, "flaky")["attempts"], 2);
  EXPECT_EQ(StepOf(s, "after")["state"], "succeeded");
  EXPECT_EQ(StepOf(s, "after")["attempts"], 1);

  // Both attempts of the retried step keep their own logs.
  EngineResult log1 = Engine({"logs", run_id, "flaky", "--attempt", "1"});
  EXPECT_EQ(log1.exit_code, 0) << log1.err;
  EngineResult log2 = Engine({"logs", run_id, "flaky", "--attempt", "2"});
  EXPECT_EQ(log2.exit_code, 0) << log2.err;
}

TEST_F(RetryTest, RetryOfASucceededRunIsRefusedWithExit2) {
  std::string marker = Write("marker", "");
  std::string wf = Write("flaky.toml", FlakyWorkflow(marker));
  EngineResult first = Engine({"run", wf});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  std::string run_id = FirstLine(first.err);

  EngineResult retry = Engine({"retry", run_id});
  EXPECT_EQ(retry.exit_code, 2);
  EXPECT_THAT(retry.err, HasSubstr("run " + run_id + " is succeeded"));
  EXPECT_THAT(retry.err, HasSubstr("only a finished run that failed or was cancelled can be retried"));
  EngineResult status = Engine({"status", run_id, "--json"});
  EXPECT_EQ(Json(status.out)["state"], "succeeded");
}

TEST_F(RetryTest, RetryOfAnUnknownRunExits2) {
  std::string wf = Write("flaky.toml", FlakyWorkflow(dir_ + "/marker"));
  ASSERT_EQ(Engine({"run", wf}).exit_code, 1);
  EngineResult retry = Engine({"retry", "no-such-run"});
  EXPECT_EQ(retry.exit_code, 2);
  EXPECT_THAT(retry.err, HasSubstr("no-such-run"));
}

TEST_F(RetryTest, RetryUsesTheStoredWorkflowEvenWhenTheFileWasEdited) {
  std::string marker = dir_ + "/marker";
  std::string wf = Write("flaky.toml", FlakyWorkflow(marker));
  EngineResult first = Engine({"run", wf});
  ASSERT_EQ(first.exit_code, 1) << first.err;
  std::string run_id = FirstLine(first.err);

  Write("flaky.toml", "this is [[ not a workflow");
  Write("marker", "");
  EngineResult retry = Engine({"retry", run_id});
  ASSERT_EQ(retry.exit_code, 0) << retry.err;
  EXPECT_THAT(retry.err, HasSubstr("using the workflow as submitted with run " + run_id));
  EXPECT_THAT(retry.err, HasSubstr("differs"));
  EngineResult status = Engine({"status", run_id, "--json"});
  nlohmann::json s = Json(status.out);
  EXPECT_EQ(s["state"], "succeeded");
  EXPECT_EQ(StepOf(s, "flaky")["attempts"], 2);
}

}  // namespace
}  // namespace crucible::testing

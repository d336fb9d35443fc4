#include "cli/views.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/terminal.h"

namespace crucible::cli {
namespace {

RunView SampleRun() {
  RunView v;
  v.run.id = "20261125-153012-a3f9";
  v.run.workflow = "grade-submissions";
  v.run.file = "grade.toml";
  v.run.state = store::RunState::kFailed;
  v.run.created_at_ms = 1'764'084'612'000;
  v.run.ended_at_ms = 1'764'084'614'300;
  v.run.exit_code = 1;
  store::StepRow prepare{v.run.id, 0, "prepare", "localproc", store::StepState::kSucceeded, "", 1, 0};
  store::StepRow bob{v.run.id, 1, "evaluate[bob]", "localproc", store::StepState::kFailed, "exited", 3, 1,
                     "2 of 9 tests failed"};
  store::StepRow score{v.run.id, 2, "score", "localproc", store::StepState::kSkipped, "upstream_failed", 0, -1};
  v.steps = {prepare, bob, score};
  v.outputs = {{0, "prepare", "tests", "3"}, {1, "evaluate[bob]", "passed", "7"}};
  return v;
}

TEST(ViewsTest, StatusJsonHasTheFormatsFields) {
  nlohmann::json j = nlohmann::json::parse(StatusJson(SampleRun()));
  EXPECT_EQ(j["run_id"], "20261125-153012-a3f9");
  EXPECT_EQ(j["workflow"], "grade-submissions");
  EXPECT_EQ(j["state"], "failed");
  EXPECT_EQ(j["file"], "grade.toml");
  EXPECT_EQ(j["created_at"], "2025-11-25T15:30:12.000Z");
  EXPECT_EQ(j["ended_at"], "2025-11-25T15:30:14.300Z");
  ASSERT_EQ(j["steps"].size(), 3u);
  nlohmann::json bob = j["steps"][1];
  EXPECT_EQ(bob, nlohmann::json::parse(R"({"id": "evaluate[bob]", "state": "failed", "attempts": 3,
      "exit_code": 1, "reason": "exited", "backend": "localproc", "message": "2 of 9 tests failed",
      "outputs": {"passed": "7"}})"));
  EXPECT_TRUE(j["steps"][2]["exit_code"].is_null());
  EXPECT_TRUE(j["steps"][0]["reason"].is_null());
  EXPECT_TRUE(j["steps"][0].at("message").is_null());
}

TEST(ViewsTest, StatusJsonOfARunningRunHasNoEnd) {
  RunView v = SampleRun();
  v.run.state = store::RunState::kRunning;
  v.run.ended_at_ms = 0;
  v.run.exit_code = -1;
  nlohmann::json j = nlohmann::json::parse(StatusJson(v));
  EXPECT_TRUE(j["ended_at"].is_null());
  EXPECT_TRUE(j["exit_code"].is_null());
}

TEST(ViewsTest, InvalidUtf8InOutputsDoesNotBreakJson) {
  RunView v = SampleRun();
  v.outputs.push_back({0, "prepare", "raw", "\xff\xfe ok"});
  nlohmann::json j = nlohmann::json::parse(StatusJson(v));
  EXPECT_NE(std::string(j["steps"][0]["outputs"]["raw"]).find(" ok"), std::string::npos);
}

TEST(ViewsTest, ResultsJsonMapsStepsToOutputs) {
  nlohmann::json j = nlohmann::json::parse(ResultsJson(SampleRun()));
  EXPECT_EQ(j, nlohmann::json::parse(R"({"run_id": "20261125-153012-a3f9", "steps": {
      "prepare": {"tests": "3"}, "evaluate[bob]": {"passed": "7"}, "score": {}}})"));
}

TEST(ViewsTest, StatusTextHasARowPerStep) {
  std::string text = StatusText(SampleRun(), 0);
  EXPECT_NE(text.find("STEP"), std::string::npos) << text;
  EXPECT_NE(text.find("evaluate[bob]  failed     3         1     exited"), std::string::npos) << text;
  EXPECT_NE(text.find("score          skipped    0         -     upstream_failed"), std::string::npos) << text;
  EXPECT_NE(text.find("\n\nevaluate[bob]: 2 of 9 tests failed\n"), std::string::npos) << "why, below the table: " << text;
}

TEST(ViewsTest, RunsTextAndJsonCarryStepCounts) {
  RunListEntry e;
  e.run = SampleRun().run;
  e.counts = {{store::StepState::kSucceeded, 1}, {store::StepState::kFailed, 1}, {store::StepState::kSkipped, 1}};
  std::string text = RunsText({e}, 0);
  EXPECT_NE(text.find("1 succeeded, 1 failed, 1 skipped"), std::string::npos) << text;
  EXPECT_NE(text.find("2.3s"), std::string::npos) << text;
  nlohmann::json j = nlohmann::json::parse(RunsJson({e}, 0));
  EXPECT_EQ(j[0]["steps"]["failed"], 1);
  EXPECT_EQ(j[0]["duration_ms"], 2300);
}

TEST(ViewsTest, CountsTextLeavesOutZerosAndSaysNoSteps) {
  EXPECT_EQ(CountsText({}), "no steps");
  EXPECT_EQ(CountsText({{store::StepState::kPending, 2}, {store::StepState::kFailed, 0}}), "2 pending");
}

TEST(ViewsTest, TableCellsCannotBreakRowsOrReachTheTerminalRaw) {
  std::string table = FormatTable({{"a\nb", "x"}, {"\x1b[2J", "y"}});
  EXPECT_EQ(table, "a\\nb     x\n\\x1b[2J  y\n");
}

TEST(TerminalTest, EscapeControlBytesKeepsNewlinesAndTabs) {
  EXPECT_EQ(EscapeControlBytes("ok\tline\n"), "ok\tline\n");
  EXPECT_EQ(EscapeControlBytes("\x1b[31mred\x07\r"), "\\x1b[31mred\\x07\\x0d");
  EXPECT_EQ(EscapeControlBytes("del\x7f"), "del\\x7f");
  EXPECT_EQ(EscapeControlBytes("csi\xc2\x9b" "2J caf\xc3\xa9"), "csi\\u009b2J caf\xc3\xa9");
}

TEST(TerminalTest, FormatElapsed) {
  EXPECT_EQ(FormatElapsed(0), "0.0s");
  EXPECT_EQ(FormatElapsed(1234), "1.2s");
  EXPECT_EQ(FormatElapsed(65'000), "1m05s");
  EXPECT_EQ(FormatElapsed(2 * 3'600'000 + 3 * 60'000), "2h03m");
}

TEST(TerminalTest, FormatIsoUtc) { EXPECT_EQ(FormatIsoUtc(1'764'084'612'345), "2025-11-25T15:30:12.345Z"); }

}  // namespace
}  // namespace crucible::cli

// `run` end to end on localproc: the workflows every backend runs, progress, results, params.
#include <regex>

#include "integration_fixture.h"
#include "shared_workflows.h"

namespace crucible::testing {
namespace {

using RunTest = IntegrationTest;

/// The workflows every backend runs (shared_workflows.h), here on localproc.
class LocalprocPortableTest : public IntegrationTest, public ::testing::WithParamInterface<PortableWorkflow> {};

TEST_P(LocalprocPortableTest, Runs) {
  RunPortableWorkflow(
      GetParam(), "[workflow]\nname = \"portable\"\n", "localproc",
      [this](const std::string& name, const std::string& text) { return Write(name, text); },
      [this](std::vector<std::string> args) { return Engine(std::move(args)); });
}

INSTANTIATE_TEST_SUITE_P(Workflows, LocalprocPortableTest, ::testing::ValuesIn(PortableWorkflows()),
                         PortableWorkflowName());

constexpr char kHello[] = R"(
[workflow]
name = "hello"

[[steps]]
id = "greet"
run = ["echo", "hello"]

[[steps]]
id = "after"
needs = ["greet"]
run = ["true"]
)";

TEST_F(RunTest, HelloWorkflowSucceedsAndStatusSaysSucceeded) {
  std::string wf = Write("hello.toml", kHello);
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string run_id = FirstLine(r.err);
  EXPECT_TRUE(std::regex_match(run_id, std::regex(R"(\d{8}-\d{6}-[0-9a-z]+)"))) << run_id;
  nlohmann::json final_status = Json(r.out);
  EXPECT_EQ(final_status["run_id"], run_id);
  EXPECT_EQ(final_status["state"], "succeeded");

  EngineResult s = Engine({"status", run_id, "--json"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  nlohmann::json status = Json(s.out);
  EXPECT_EQ(status["workflow"], "hello");
  EXPECT_EQ(status["state"], "succeeded");
  ASSERT_EQ(status["steps"].size(), 2u);
  for (const auto& step : status["steps"]) {
    EXPECT_EQ(step["state"], "succeeded") << step.dump();
    EXPECT_EQ(step["attempts"], 1);
    EXPECT_EQ(step["exit_code"], 0);
    EXPECT_EQ(step["backend"], "localproc");
  }
  EXPECT_EQ(status, final_status) << "run --json prints the same object as status --json";

  EngineResult trailing = RunEngine({"status", run_id, "--json", "--state-dir", state_dir_});
  ASSERT_EQ(trailing.exit_code, 0) << "--state-dir may follow the verb: " << trailing.err;
  EXPECT_EQ(Json(trailing.out), status);

  EngineResult text = Engine({"status", run_id});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("greet"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("succeeded"), std::string::npos) << text.out;
}

TEST_F(RunTest, PlainProgressPrintsOneLinePerEventAndASummary) {
  std::string wf = Write("hello.toml", kHello);
  EngineResult r = Engine({"run", wf});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(\d\d:\d\d:\d\d started greet attempt=1)"))) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(\d\d:\d\d:\d\d succeeded greet \d+\.\ds)"))) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(run \S+ succeeded: 2 succeeded in )"))) << r.err;
  EXPECT_EQ(r.out, "") << "without --json nothing goes to stdout";
}

TEST_F(RunTest, AFailedRunPrintsTheFailureTheSkipAndASummary) {
  const PortableWorkflow failing = PortableWorkflowNamed("AFailingStepSkipsItsDependentAndAnAlwaysStepStillRuns");
  std::string wf = Write("fail.toml", "[workflow]\nname = \"failing\"\n" + failing.steps);
  EngineResult r = Engine({"run", wf});
  ASSERT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(failed broken attempt=1 exit=3 reason=exited)"))) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(skipped dependent \(upstream_failed\))"))) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(run \S+ failed: 2 succeeded, 1 failed, 1 skipped in )")))
      << r.err;
}

TEST_F(RunTest, OutputsFlowDownstreamAndResultsShowThem) {
  const PortableWorkflow outputs = PortableWorkflowNamed("OutputsFlowDownstreamAndAFanOutIsGatheredByItsFanIn");
  std::string wf = Write("outputs.toml", "[workflow]\nname = \"outputs\"\n" + outputs.steps);
  EngineResult r = Engine({"run", wf});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string run_id = FirstLine(r.err);
  EngineResult res = Engine({"results", run_id, "--json"});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  nlohmann::json results = Json(res.out);
  EXPECT_EQ(results["run_id"], run_id);
  EXPECT_EQ(results["steps"]["a"]["x"], "42");
  EXPECT_EQ(results["steps"]["b"]["y"], "421");

  EngineResult text = Engine({"results", run_id});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("x=42"), std::string::npos) << text.out;
}

TEST_F(RunTest, StatusSaysWhyAStepFailedLongAfterTheRun) {
  std::string wf = Write("why.toml", R"(
[workflow]
name = "why"

[[steps]]
id = "a"
shell = "echo other=1 >> \"$CRUCIBLE_OUTPUT\""

[[steps]]
id = "b"
needs = ["a"]
run = ["echo", "{{steps.a.outputs.score}}"]

[[steps]]
id = "c"
run = ["/nonexistent/grader"]
)");
  EngineResult r = Engine({"run", wf});
  ASSERT_EQ(r.exit_code, 1) << r.err;
  std::string run_id = FirstLine(r.err);
  EngineResult s = Engine({"status", run_id, "--json"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  nlohmann::json status = Json(s.out);
  EXPECT_TRUE(StepOf(status, "a")["message"].is_null());
  std::string b = StepOf(status, "b").value("message", "");
  EXPECT_NE(b.find("score"), std::string::npos) << "names the key step a did not write: " << s.out;
  std::string c = StepOf(status, "c").value("message", "");
  EXPECT_NE(c.find("/nonexistent/grader"), std::string::npos) << "says what could not run: " << s.out;
  EngineResult text = Engine({"status", run_id});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("b: " + b), std::string::npos) << text.out;
}

TEST_F(RunTest, SetOverridesAParam) {
  std::string wf = Write("params.toml", R"(
[workflow]
name = "params"

[params]
who = "world"

[[steps]]
id = "greet"
shell = "echo greeting=hello-{{params.who}} >> \"$CRUCIBLE_OUTPUT\""
)");
  EngineResult r = Engine({"run", wf, "--set", "who=crucible", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(StepOf(Json(r.out), "greet")["outputs"]["greeting"], "hello-crucible");

  EngineResult unknown = Engine({"run", wf, "--set", "whom=x"});
  EXPECT_EQ(unknown.exit_code, 2) << unknown.err;
}

TEST_F(RunTest, NonUtf8OutputDoesNotAbortTheEngine) {
  std::string wf = Write("nonutf8.toml", R"([workflow]
name = "nonutf8"

[[steps]]
id = "a"
shell = "printf 'x=a\\377b\\n' >> \"$CRUCIBLE_OUTPUT\""

[[steps]]
id = "b"
needs = ["a"]
run = ["true"]
)");
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(StepOf(Json(r.out), "b")["state"], "succeeded");
}

TEST_F(RunTest, PluginWarningsPrintAfterTheRunIdAndDoNotFail) {
  std::string wf = Write("warn.toml", R"([workflow]
name = "warn"

[backends.localproc]
use_cgroups = false

[[steps]]
id = "fan"
for_each = ["x", "y"]
run = ["true"]
resources = { cpu = 1 }
)");
  EngineResult v = Engine({"validate", wf});
  EXPECT_EQ(v.exit_code, 0) << v.err;
  std::regex warning(R"(warn\.toml:11:\d+: warning: step "fan": [^\n]*cpu)");
  EXPECT_TRUE(std::regex_search(v.err, warning)) << v.err;
  EXPECT_EQ(v.err.find("warning"), v.err.rfind("warning")) << "one finding per [[steps]] entry: " << v.err;

  EngineResult r = Engine({"run", wf});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::regex_match(FirstLine(r.err), std::regex(R"(\d{8}-\d{6}-[0-9a-z]+)"))) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, warning)) << r.err;
}

TEST_F(RunTest, StateDirDefaultsToTheEnvironmentVariable) {
  std::string wf = Write("hello.toml", kHello);
  std::string env_state = dir_ + "/from-env";
  EngineResult r = RunEngine({"run", wf}, {"CRUCIBLE_STATE_DIR=" + env_state});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(env_state));
  EngineResult runs = RunEngine({"runs", "--json"}, {"CRUCIBLE_STATE_DIR=" + env_state});
  ASSERT_EQ(runs.exit_code, 0) << runs.err;
  EXPECT_EQ(Json(runs.out).size(), 1u);
}

TEST_F(RunTest, StateDirDefaultsToDotCrucibleInTheCurrentDirectory) {
  std::string wf = Write("hello.toml", kHello);
  std::string cwd = dir_ + "/work";
  std::filesystem::create_directories(cwd);
  EngineResult r = RunEngine({"run", wf}, {"CRUCIBLE_STATE_DIR="}, cwd);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(cwd + "/.crucible"));
}

}  // namespace
}  // namespace crucible::testing

// `run` end to end on localproc: states, outputs, fan-out, retries, timeouts, params.
#include <regex>

#include "integration_fixture.h"
#include "shared_workflows.h"

namespace crucible::testing {
namespace {

using RunTest = IntegrationTest;

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

TEST_F(RunTest, FailingStepExits1SkipsDependentAndStillRunsAlwaysStep) {
  std::string wf = Write("fail.toml", R"(
[workflow]
name = "failing"

[[steps]]
id = "broken"
shell = "echo about to fail; exit 3"

[[steps]]
id = "dependent"
needs = ["broken"]
run = ["true"]

[[steps]]
id = "cleanup"
needs = ["broken"]
when = "always"
run = ["true"]
)");
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 1) << r.err;
  nlohmann::json status = Json(r.out);
  EXPECT_EQ(status["state"], "failed");
  nlohmann::json broken = StepOf(status, "broken");
  EXPECT_EQ(broken["state"], "failed");
  EXPECT_EQ(broken["exit_code"], 3);
  EXPECT_EQ(broken["reason"], "exited");
  nlohmann::json dependent = StepOf(status, "dependent");
  EXPECT_EQ(dependent["state"], "skipped");
  EXPECT_EQ(dependent["reason"], "upstream_failed");
  EXPECT_EQ(StepOf(status, "cleanup")["state"], "succeeded");
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(failed broken attempt=1 exit=3 reason=exited)"))) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(skipped dependent \(upstream_failed\))"))) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(run \S+ failed: 1 succeeded, 1 failed, 1 skipped in )")))
      << r.err;
}

TEST_F(RunTest, OutputsFlowDownstreamAndResultsShowThem) {
  std::string wf = Write("outputs.toml", R"(
[workflow]
name = "outputs"

[[steps]]
id = "a"
shell = "echo x=42 >> \"$CRUCIBLE_OUTPUT\""

[[steps]]
id = "b"
needs = ["a"]
shell = "test {{steps.a.outputs.x}} = 42 && echo y={{steps.a.outputs.x}}1 >> \"$CRUCIBLE_OUTPUT\""
)");
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

TEST_F(RunTest, FanOutIsGatheredByFanInThroughUpstreamFile) {
  std::string wf = Write("fan.toml", std::string("[workflow]\nname = \"fan\"\n") + kFanOutFanInSteps);
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json status = Json(r.out);
  ExpectFanOutFanIn(StepOf(status, "square[2]"), StepOf(status, "total"));
}

TEST_F(RunTest, RetriesAreRecordedAsAttempts) {
  std::string counter = dir_ + "/counter";
  std::string wf = Write("retry.toml", R"(
[workflow]
name = "retry"

[[steps]]
id = "flaky"
retries = 3
retry_delay = "10ms"
shell = "echo attempt $CRUCIBLE_ATTEMPT; n=$(cat )" + counter + R"( 2>/dev/null || echo 0); n=$((n+1)); echo $n > )" +
                                                counter + R"(; [ $n -ge 3 ]"
)");
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json flaky = StepOf(Json(r.out), "flaky");
  EXPECT_EQ(flaky["state"], "succeeded");
  EXPECT_EQ(flaky["attempts"], 3);
  std::string run_id = FirstLine(r.err);

  EngineResult second = Engine({"logs", run_id, "flaky", "--attempt", "2"});
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(second.out, "attempt 2\n");
  EngineResult last = Engine({"logs", run_id, "flaky"});
  ASSERT_EQ(last.exit_code, 0) << last.err;
  EXPECT_EQ(last.out, "attempt 3\n");
}

TEST_F(RunTest, TimeoutFailsTheStepWithReasonTimeout) {
  std::string wf = Write("timeout.toml", R"(
[workflow]
name = "slow"

[[steps]]
id = "sleepy"
timeout = "300ms"
run = ["sleep", "30"]
)");
  auto start = std::chrono::steady_clock::now();
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 1) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  nlohmann::json sleepy = StepOf(Json(r.out), "sleepy");
  EXPECT_EQ(sleepy["state"], "failed");
  EXPECT_EQ(sleepy["reason"], "timeout");
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

TEST_F(RunTest, HostileArgvBytesArriveIntact) {
  std::string out = dir_ + "/received";
  std::string wf = Write("hostile.toml", R"(
[workflow]
name = "hostile"

[params]
v = ""

[[steps]]
id = "echo"
run = ["/bin/sh", "-c", "printf '%s' \"$1\" > )" + out + R"(", "sh", "{{params.v}}"]
)");
  const std::string hostile = "a b\t'q' \"dq\" $(touch pwned) `id` ;|&<> * ~ \\ \x01\x1b[31m\nline2 \xc3\xa9";
  EngineResult r = Engine({"run", wf, "--set", "v=" + hostile});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Read(out), hostile);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/pwned"));
}

TEST_F(RunTest, NonUtf8ArgvBytesArriveIntact) {
  std::string out = dir_ + "/received";
  std::string wf = Write("hostile.toml", R"(
[workflow]
name = "hostile"

[params]
v = ""

[[steps]]
id = "echo"
run = ["/bin/sh", "-c", "printf '%s' \"$1\" > )" + out + R"(", "sh", "{{params.v}}"]
)");
  const std::string hostile = "a\xff\xfe b";
  EngineResult r = Engine({"run", wf, "--set", "v=" + hostile});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Read(out), hostile);
}

// A step output that is not UTF-8 reaches the dependent's CRUCIBLE_UPSTREAM
// JSON with the bad bytes replaced, and does not stop the engine.
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

// The localproc integration workflows (fan-out, when, outputs, inputs,
// retries, timeouts, hostile argv bytes) on the compose backend.
#include <sys/stat.h>

#include <regex>

#include "compose_fixture.h"
#include "shared_workflows.h"

namespace crucible::testing {
namespace {

using ComposeRunTest = ComposeTest;

TEST_F(ComposeRunTest, FailingStepExits1SkipsDependentAndStillRunsAlwaysStep) {
  std::string wf = Write("fail.toml", Header("failing", "replicas = 2") + R"(
[[steps]]
id = "greet"
run = ["echo", "hello"]

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
shell = "echo cleaning"
)");
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 1) << r.err;
  nlohmann::json status = Json(r.out);
  EXPECT_EQ(StepOf(status, "greet")["state"], "succeeded");
  EXPECT_EQ(StepOf(status, "greet")["backend"], "compose");
  EXPECT_EQ(StepOf(status, "broken")["state"], "failed");
  EXPECT_EQ(StepOf(status, "broken")["exit_code"], 3);
  EXPECT_EQ(StepOf(status, "broken")["reason"], "exited");
  EXPECT_EQ(StepOf(status, "dependent")["state"], "skipped");
  EXPECT_EQ(StepOf(status, "cleanup")["state"], "succeeded");
  std::string run_id = FirstLine(r.err);
  EXPECT_EQ(Engine({"logs", run_id, "greet"}).out, "hello\n");
  EXPECT_EQ(Engine({"logs", run_id, "broken"}).out, "about to fail\n");
}

TEST_F(ComposeRunTest, OutputsFlowDownstreamAndFanOutIsGatheredThroughTheUpstreamFile) {
  std::string wf = Write("fan.toml", Header("fan", "replicas = 3\nimage = \"crucible/python:3.11\"") + R"(
[[steps]]
id = "a"
shell = "echo x=42 >> \"$CRUCIBLE_OUTPUT\""

[[steps]]
id = "b"
needs = ["a"]
shell = "test {{steps.a.outputs.x}} = 42 && echo y={{steps.a.outputs.x}}1 >> \"$CRUCIBLE_OUTPUT\""
)" + std::string(kFanOutFanInSteps));
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json status = Json(r.out);
  EXPECT_EQ(StepOf(status, "b")["outputs"]["y"], "421");
  ExpectFanOutFanIn(StepOf(status, "square[2]"), StepOf(status, "total"));
}

TEST_F(ComposeRunTest, InputsArriveInTheWorkingDirectoryAndScriptsThereCanRun) {
  std::string script = Write("data/run.sh", "#!/bin/sh\necho \"ran in $(pwd) with $(cat data/sub/data.txt)\"\n");
  ASSERT_EQ(::chmod(script.c_str(), 0755), 0);
  Write("data/sub/data.txt", "payload");
  std::string wf = Write("inputs.toml", Header("inputs", "replicas = 1") + R"(
[[steps]]
id = "use"
inputs = ["data/run.sh", "data/sub/data.txt"]
run = ["./data/run.sh"]
)");
  EngineResult r = Engine({"run", wf});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string log = Engine({"logs", FirstLine(r.err), "use"}).out;
  EXPECT_TRUE(std::regex_search(log, std::regex(R"(ran in /work/\S+ with payload)"))) << log;
}

TEST_F(ComposeRunTest, RetriesAreRecordedAsAttempts) {
  std::string wf = Write("retry.toml", Header("retry", "replicas = 1") + R"(
[[steps]]
id = "flaky"
retries = 3
retry_delay = "10ms"
shell = "echo attempt $CRUCIBLE_ATTEMPT; [ $CRUCIBLE_ATTEMPT -ge 3 ]"
)");
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json flaky = StepOf(Json(r.out), "flaky");
  EXPECT_EQ(flaky["state"], "succeeded");
  EXPECT_EQ(flaky["attempts"], 3);
  std::string run_id = FirstLine(r.err);
  EXPECT_EQ(Engine({"logs", run_id, "flaky", "--attempt", "2"}).out, "attempt 2\n");
  EXPECT_EQ(Engine({"logs", run_id, "flaky"}).out, "attempt 3\n");
}

TEST_F(ComposeRunTest, HostileArgvAndEnvBytesArriveIntact) {
  std::string wf = Write("hostile.toml", Header("hostile", "replicas = 1") + R"(
[params]
v = ""

[[steps]]
id = "echo"
env = { HOSTILE = "{{params.v}}" }
run = ["/bin/sh", "-c", "printf '%s|%s' \"$1\" \"$HOSTILE\"; test ! -e pwned", "sh", "{{params.v}}"]
)");
  const std::string hostile = "a b\t'q' \"dq\" $(touch pwned) `id` ;|&<> * ~ \\ \x01\x1b[31m\nline2 \xc3\xa9 \xff\xfe";
  EngineResult r = Engine({"run", wf, "--set", "v=" + hostile});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Engine({"logs", FirstLine(r.err), "echo"}).out, hostile + "|" + hostile);
}

TEST_F(ComposeRunTest, ManyLinesOfOutputArriveWhole) {
  std::string wf = Write("flood.toml", Header("flood", "replicas = 1") + R"(
[[steps]]
id = "flood"
shell = "i=0; while [ $i -lt 2000 ]; do echo 0123456789abcdef0123456789abcdef; i=$((i+1)); done"
)");
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string log = Engine({"logs", FirstLine(r.err), "flood"}).out;
  EXPECT_EQ(log.size(), 2000u * 33u) << "within the cap the log is the output exactly";
}

}  // namespace
}  // namespace crucible::testing

// Failure classes on the compose pool: timeout and cancel (no process of the
// step left in the executor), OOM, signals, and an executor lost mid-step.
#include <signal.h>

#include <regex>
#include <sstream>

#include "compose_fixture.h"

namespace crucible::testing {
namespace {

using ComposeFailureTest = ComposeTest;

TEST_F(ComposeFailureTest, TimeoutFailsTheStepAndLeavesNoProcessOfItInTheExecutor) {
  std::string wf = Write("timeout.toml", Header("slow", "replicas = 1\nkeep_warm = true\nkill_grace = \"1s\"") + R"(
[[steps]]
id = "sleepy"
timeout = "500ms"
shell = "setsid sleep 1001 </dev/null >/dev/null 2>&1 & trap '' TERM; sleep 1002"
)");
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 1) << r.err;
  nlohmann::json sleepy = StepOf(Json(r.out), "sleepy");
  EXPECT_EQ(sleepy["state"], "failed");
  EXPECT_EQ(sleepy["reason"], "timeout");
  std::string ids = Containers();
  ASSERT_FALSE(ids.empty()) << "keep_warm leaves the pool running";
  std::string top = TopOf(ids);
  EXPECT_EQ(top.find("sleep 100"), std::string::npos) << top;
  EXPECT_NE(top.find("sleep 2147483647"), std::string::npos) << "the executor itself still runs: " << top;
}

TEST_F(ComposeFailureTest, AStepThatKillsItsSupervisorFailsAndLeavesNothing) {
  std::string wf = Write("rogue.toml", Header("rogue", "replicas = 1\nkeep_warm = true") + R"(
[[steps]]
id = "rogue"
shell = "setsid sleep 1006 </dev/null >/dev/null 2>&1 & kill -KILL $PPID; exec sleep 1007"
)");
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(StepOf(Json(r.out), "rogue")["reason"], "signaled");
  std::string top = TopOf(Containers());
  EXPECT_EQ(top.find("sleep 100"), std::string::npos) << "the executor was restarted: " << top;
}

TEST_F(ComposeFailureTest, AStepThatStopsItsSupervisorStillTimesOutAndLeavesNothing) {
  std::string wf = Write("rogue.toml", Header("rogue", "replicas = 1\nkeep_warm = true\nkill_grace = \"500ms\"") + R"(
[[steps]]
id = "rogue"
timeout = "300ms"
shell = "kill -STOP $PPID; exec sleep 1008"
)");
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(StepOf(Json(r.out), "rogue")["reason"], "timeout");
  std::string top = TopOf(Containers());
  EXPECT_EQ(top.find("sleep 1008"), std::string::npos) << top;
}

TEST_F(ComposeFailureTest, SigintCancelsTheRunningStepAndLeavesNoProcessOfItInTheExecutor) {
  std::string wf = Write("long.toml", Header("long", "replicas = 1\nkeep_warm = true") + R"(
[[steps]]
id = "sleeper"
shell = "setsid sleep 1003 </dev/null >/dev/null 2>&1 & echo up; exec sleep 1004"
)");
  std::unique_ptr<EngineProcess> engine = EngineProcess::Start({"--state-dir", state_dir_, "run", wf, "--json"});
  ASSERT_NE(engine, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return TopOf(Containers()).find("sleep 1004") != std::string::npos; },
                        std::chrono::seconds(60)))
      << engine->err();
  ASSERT_EQ(kill(engine->pid(), SIGINT), 0);
  EngineResult r = engine->Wait(std::chrono::seconds(60));
  EXPECT_EQ(r.exit_code, 130) << r.err;
  EXPECT_EQ(StepOf(Json(r.out), "sleeper")["state"], "cancelled");
  std::string top = TopOf(Containers());
  EXPECT_EQ(top.find("sleep 100"), std::string::npos) << top;
}

TEST_F(ComposeFailureTest, APoolLeftByAKilledEngineIsResetBeforeTheNextRunAndAPoolInUseIsRefused) {
  std::string first = Write("first.toml", Header("first", "replicas = 1") + R"(
[[steps]]
id = "orphan"
shell = "setsid sleep 1009 </dev/null >/dev/null 2>&1 & exec sleep 1010"
)");
  std::unique_ptr<EngineProcess> engine = EngineProcess::Start({"--state-dir", state_dir_, "run", first});
  ASSERT_NE(engine, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return TopOf(Containers()).find("sleep 1010") != std::string::npos; },
                        std::chrono::seconds(60)))
      << engine->err();

  EngineResult busy = Engine({"run", first});
  EXPECT_EQ(busy.exit_code, 3) << busy.err;
  EXPECT_NE(busy.err.find("is in use by crucible-engine pid " + std::to_string(engine->pid())), std::string::npos)
      << busy.err;

  ASSERT_EQ(kill(engine->pid(), SIGKILL), 0);
  engine->Wait(std::chrono::seconds(30));
  ASSERT_NE(TopOf(Containers()).find("sleep 1010"), std::string::npos) << "the killed engine left its step running";

  std::string second = Write("second.toml", Header("second", "replicas = 1") + R"(
[[steps]]
id = "next"
shell = "cat /proc/[0-9]*/cmdline | tr '\\000' ' ' | grep -c 'slee[p] 10' || true"
)");
  EngineResult r = Engine({"run", second});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Engine({"logs", FirstLine(r.err), "next"}).out, "0\n") << "the next run shares no executor with the orphan";
}

TEST_F(ComposeFailureTest, MemoryOverTheExecutorLimitIsOomKilled) {
  std::string wf = Write("oom.toml", Header("oom", "replicas = 1\nmemory = \"48m\"\nimage = \"crucible/python:3.11\"") + R"toml(
[[steps]]
id = "hog"
run = ["python3", "-c", "s = 'x' * (512 << 20); print(len(s))"]

[[steps]]
id = "fine"
needs = ["hog"]
when = "always"
run = ["python3", "-c", "print('after')"]
)toml");
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 1) << r.err;
  nlohmann::json status = Json(r.out);
  EXPECT_EQ(StepOf(status, "hog")["state"], "failed");
  EXPECT_EQ(StepOf(status, "hog")["reason"], "oom_killed");
  EXPECT_EQ(StepOf(status, "fine")["state"], "succeeded") << "the executor survives its step's OOM";
}

TEST_F(ComposeFailureTest, AStepKilledByASignalIsSignaledAndAnExitCodeIsExited) {
  std::string wf = Write("sig.toml", Header("sig", "replicas = 4") + R"(
[[steps]]
id = "killed"
shell = "kill -KILL $$"

[[steps]]
id = "exits"
shell = "exit 42"

[[steps]]
id = "exits_high"
shell = "exit 137"

[[steps]]
id = "segv"
shell = "kill -SEGV $$"
)");
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 1) << r.err;
  nlohmann::json status = Json(r.out);
  EXPECT_EQ(StepOf(status, "killed")["reason"], "signaled");
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(failed killed attempt=1 signal=9 reason=signaled)"))) << r.err;
  EXPECT_EQ(StepOf(status, "exits")["reason"], "exited");
  EXPECT_EQ(StepOf(status, "exits")["exit_code"], 42);
  EXPECT_EQ(StepOf(status, "exits_high")["reason"], "exited") << "an exit code above 128 is not a signal";
  EXPECT_EQ(StepOf(status, "exits_high")["exit_code"], 137);
  EXPECT_EQ(StepOf(status, "segv")["reason"], "signaled");
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(failed segv attempt=1 signal=11 reason=signaled)"))) << r.err;
}

TEST_F(ComposeFailureTest, AnExecutorKilledMidStepIsLostRetriedWithoutChargingRetriesAndReplaced) {
  std::string wf = Write("lost.toml", Header("lost", "replicas = 1") + R"(
[[steps]]
id = "victim"
retries = 0
shell = "if [ $CRUCIBLE_ATTEMPT -ge 2 ]; then echo second; else exec sleep 1005; fi"

[[steps]]
id = "after"
needs = ["victim"]
run = ["echo", "pool back"]
)");
  std::unique_ptr<EngineProcess> engine = EngineProcess::Start({"--state-dir", state_dir_, "run", wf, "--json"});
  ASSERT_NE(engine, nullptr);
  std::string victim;
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::string ids = Containers();
        if (TopOf(ids).find("sleep 1005") == std::string::npos) return false;
        victim = ids.substr(0, ids.find('\n'));
        return true;
      },
      std::chrono::seconds(60)))
      << engine->err();
  ASSERT_EQ(Status("docker kill " + victim + " >/dev/null"), 0);
  EngineResult r = engine->Wait(std::chrono::seconds(120));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json status = Json(r.out);
  EXPECT_EQ(StepOf(status, "victim")["state"], "succeeded");
  EXPECT_EQ(StepOf(status, "victim")["attempts"], 2);
  EXPECT_EQ(StepOf(status, "after")["state"], "succeeded");
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(victim attempt=1 .*reason=lost)"))) << r.err;
}

}  // namespace
}  // namespace crucible::testing

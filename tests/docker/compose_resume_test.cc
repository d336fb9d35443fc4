// A killed engine's compose steps: `resume` follows the exec that outlived it
// (still running, or ended meanwhile) without running the step again, and
// `cancel` stops it in the pool.
#include <signal.h>

#include <sstream>

#include "compose_fixture.h"

namespace crucible::testing {
namespace {

class ComposeResumeTest : public ComposeTest {
 protected:
  /// The workflow: "held" waits for /tmp/go in its executor, then writes an
  /// output; "next" needs that output.
  std::string HeldWorkflow() {
    return Write("held.toml", Header("held", "replicas = 1\nkeep_warm = true\nkill_grace = \"1s\"") + R"(
[[steps]]
id = "held"
shell = "echo before; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo v=7 >> \"$CRUCIBLE_OUTPUT\"; echo after"

[[steps]]
id = "next"
needs = ["held"]
shell = "test {{steps.held.outputs.v}} = 7 && echo got {{steps.held.outputs.v}}"
)");
  }

  /// Starts the run, waits until "held" has written its first line, kills the engine with SIGKILL.
  void StartAndKill(const std::string& wf) {
    std::unique_ptr<EngineProcess> engine = EngineProcess::Start({"--state-dir", state_dir_, "run", wf});
    ASSERT_NE(engine, nullptr);
    ASSERT_TRUE(engine->WaitForStderr([](const std::string& e) { return e.find('\n') != std::string::npos; },
                                      std::chrono::seconds(60)))
        << engine->err();
    run_id_ = FirstLine(engine->err());
    ASSERT_TRUE(WaitUntil([&] { return Engine({"logs", run_id_, "held"}).out == "before\n"; },
                          std::chrono::seconds(60)))
        << engine->err();
    ASSERT_EQ(kill(engine->pid(), SIGKILL), 0);
    engine->Wait(std::chrono::seconds(30));
    executor_ = FirstLine(Containers());
    ASSERT_FALSE(executor_.empty());
  }

  /// What the executor's supervisor reported of its last attempt.
  std::string Report() const { return Shell("docker exec -u 10001:10001 " + executor_ + " cat /work/.crucible-report"); }
  static bool WaitUntilStderr(EngineProcess& engine, const std::string& text) {
    return engine.WaitForStderr([&](const std::string& e) { return e.find(text) != std::string::npos; },
                                std::chrono::seconds(60));
  }
  void Release() const {
    ASSERT_EQ(Status("docker exec -u 10001:10001 " + executor_ + " touch /tmp/go"), 0);
  }

  std::string run_id_;
  std::string executor_;
};

TEST_F(ComposeResumeTest, AStepThatEndedWhileNoEngineFollowedItIsRecordedFromItsReportAndNotRunAgain) {
  std::string wf = HeldWorkflow();
  ASSERT_NO_FATAL_FAILURE(StartAndKill(wf));
  ASSERT_NE(TopOf(executor_).find("sleep"), std::string::npos) << "the step outlives the killed engine";
  Release();
  ASSERT_TRUE(WaitUntil([&] { return Report().find("crucible-scrub") != std::string::npos; }, std::chrono::seconds(30)))
      << Report();

  EngineResult r = Engine({"resume", run_id_, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json status = Json(r.out);
  nlohmann::json held = StepOf(status, "held");
  EXPECT_EQ(held["state"], "succeeded");
  EXPECT_EQ(held["attempts"], 1) << "followed, not run again";
  EXPECT_EQ(held["outputs"]["v"], "7");
  EXPECT_EQ(StepOf(status, "next")["state"], "succeeded");
  EXPECT_EQ(Engine({"logs", run_id_, "next"}).out, "got 7\n");
  EXPECT_EQ(Engine({"logs", run_id_, "held"}).out.rfind("before\n", 0), 0u)
      << "what the engine streamed before it died is kept";
}

TEST_F(ComposeResumeTest, AStepStillRunningIsFollowedByTheResumedEngineToItsEnd) {
  std::string wf = HeldWorkflow();
  ASSERT_NO_FATAL_FAILURE(StartAndKill(wf));
  std::unique_ptr<EngineProcess> resumed =
      EngineProcess::Start({"--state-dir", state_dir_, "resume", run_id_, "--json"}, {"SPDLOG_LEVEL=debug"});
  ASSERT_NE(resumed, nullptr);
  ASSERT_TRUE(WaitUntilStderr(*resumed, "compose: following crucible:" + run_id_ + "/held#1 (its supervisor still runs)"))
      << resumed->err();
  Release();
  EngineResult r = resumed->Wait(std::chrono::seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json status = Json(r.out);
  EXPECT_EQ(StepOf(status, "held")["state"], "succeeded");
  EXPECT_EQ(StepOf(status, "held")["attempts"], 1);
  EXPECT_EQ(StepOf(status, "held")["outputs"]["v"], "7");
  EXPECT_EQ(StepOf(status, "next")["state"], "succeeded");
}

TEST_F(ComposeResumeTest, CancelOfARunWhoseEngineDiedStopsItsStepInThePool) {
  std::string wf = Write("long.toml", Header("long", "replicas = 1\nkeep_warm = true\nkill_grace = \"1s\"") + R"(
[[steps]]
id = "held"
shell = "echo before; setsid sleep 1013 </dev/null >/dev/null 2>&1 & exec sleep 1014"

[[steps]]
id = "next"
needs = ["held"]
run = ["true"]
)");
  ASSERT_NO_FATAL_FAILURE(StartAndKill(wf));
  ASSERT_NE(TopOf(executor_).find("sleep 1014"), std::string::npos);

  EngineResult c = Engine({"cancel", run_id_});
  EXPECT_EQ(c.exit_code, 0) << c.err;
  EXPECT_NE(c.out.find("its backends stopped its steps"), std::string::npos) << c.out;
  std::string top = TopOf(Containers());
  EXPECT_EQ(top.find("sleep 101"), std::string::npos) << top;
  EXPECT_NE(top.find("sleep 2147483647"), std::string::npos) << "the executor itself still runs: " << top;

  EngineResult s = Engine({"status", run_id_, "--json"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  nlohmann::json status = Json(s.out);
  EXPECT_EQ(status["state"], "cancelled");
  EXPECT_EQ(StepOf(status, "held")["state"], "cancelled");
  EXPECT_EQ(StepOf(status, "held")["attempts"], 1);
  EXPECT_EQ(StepOf(status, "next")["state"], "cancelled");
}

}  // namespace
}  // namespace crucible::testing

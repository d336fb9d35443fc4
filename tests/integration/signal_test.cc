// SIGINT (and SIGTERM) to a running `run`: exit 130, cancelled recorded, no step process left.
#include <signal.h>

#include <cerrno>

#include "integration_fixture.h"

namespace crucible::testing {
namespace {

class SignalTest : public IntegrationTest, public ::testing::WithParamInterface<int> {};

TEST_P(SignalTest, StopSignalCancelsTheRunExits130AndLeavesNoStepProcess) {
  std::string pid_file = dir_ + "/step.pid";
  std::string wf = Write("long.toml", R"(
[workflow]
name = "long"

[[steps]]
id = "sleeper"
shell = "echo $$ > )" + pid_file + R"(.tmp && mv )" + pid_file + R"(.tmp )" + pid_file + R"( && exec sleep 60"

[[steps]]
id = "after"
needs = ["sleeper"]
when = "always"
run = ["true"]
)");
  std::unique_ptr<EngineProcess> engine = EngineProcess::Start({"--state-dir", state_dir_, "run", wf, "--json"});
  ASSERT_NE(engine, nullptr);
  ASSERT_TRUE(engine->WaitForStderr([](const std::string& e) { return e.find('\n') != std::string::npos; },
                                    std::chrono::seconds(30)))
      << engine->err();
  std::string run_id = FirstLine(engine->err());
  ASSERT_TRUE(WaitUntil([&] { return std::filesystem::exists(pid_file); }, std::chrono::seconds(30)))
      << engine->err();
  pid_t step_pid = std::stoi(Read(pid_file));
  ASSERT_GT(step_pid, 0);

  ASSERT_EQ(kill(engine->pid(), GetParam()), 0);
  EngineResult r = engine->Wait(std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 130) << r.err;

  nlohmann::json status = Json(r.out);
  EXPECT_EQ(status["run_id"], run_id);
  EXPECT_EQ(status["state"], "cancelled");
  EXPECT_EQ(StepOf(status, "sleeper")["state"], "cancelled");
  EXPECT_NE(StepOf(status, "after")["state"], "succeeded") << "nothing new starts after SIGINT, cleanup included";

  // The step is gone (reaped, not a zombie) once the engine has exited.
  EXPECT_TRUE(WaitUntil([&] { return kill(step_pid, 0) != 0 && errno == ESRCH; }, std::chrono::seconds(5)))
      << "step process " << step_pid << " survived the engine";

  EngineResult s = Engine({"status", run_id, "--json"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_EQ(Json(s.out)["state"], "cancelled");
}

INSTANTIATE_TEST_SUITE_P(SigintAndSigterm, SignalTest, ::testing::Values(SIGINT, SIGTERM),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(info.param == SIGINT ? "Sigint" : "Sigterm");
                         });

}  // namespace
}  // namespace crucible::testing

// `cancel RUN` from another process: through the live engine, for a run whose
// engine is dead, and for a run already finished.
#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <fstream>

#include <SQLiteCpp/SQLiteCpp.h>

#include "integration_fixture.h"

namespace crucible::testing {
namespace {

/// Whether `pid` no longer runs (gone or a zombie waiting for its reaper).
bool ProcessGone(pid_t pid) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return true;
  size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

class CancelTest : public IntegrationTest {
 protected:
  /// Starts `run` of a workflow whose step writes its pid then sleeps; returns the engine, sets run_id_, step_pid_.
  std::unique_ptr<EngineProcess> StartSleeper() {
    pid_file_ = dir_ + "/step.pid";
    std::string wf = Write("long.toml", R"(
[workflow]
name = "long"

[[steps]]
id = "sleeper"
shell = "echo $$ > )" + pid_file_ + R"(.tmp && mv )" + pid_file_ + R"(.tmp )" + pid_file_ + R"( && exec sleep 300"

[[steps]]
id = "after"
needs = ["sleeper"]
run = ["true"]
)");
    auto engine = EngineProcess::Start({"--state-dir", state_dir_, "run", wf});
    if (engine == nullptr) return nullptr;
    EXPECT_TRUE(engine->WaitForStderr([](const std::string& e) { return e.find('\n') != std::string::npos; },
                                      std::chrono::seconds(30)))
        << engine->err();
    run_id_ = FirstLine(engine->err());
    EXPECT_TRUE(WaitUntil([&] { return std::filesystem::exists(pid_file_); }, std::chrono::seconds(30)))
        << engine->err();
    step_pid_ = std::filesystem::exists(pid_file_) ? std::stoi(Read(pid_file_)) : -1;
    return engine;
  }
  void TearDown() override {
    if (step_pid_ > 0 && !ProcessGone(step_pid_)) kill(step_pid_, SIGKILL);
    IntegrationTest::TearDown();
  }

  std::string pid_file_;
  std::string run_id_;
  pid_t step_pid_ = -1;
};

TEST_F(CancelTest, LiveEngineIsToldStopsTheStepAndExits130) {
  std::unique_ptr<EngineProcess> engine = StartSleeper();
  ASSERT_NE(engine, nullptr);
  ASSERT_GT(step_pid_, 0);

  EngineResult c = Engine({"cancel", run_id_});
  EXPECT_EQ(c.exit_code, 0) << c.err;
  EXPECT_NE(c.out.find("its engine, pid " + std::to_string(engine->pid())), std::string::npos) << c.out;

  EngineResult r = engine->Wait(std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 130) << r.err;
  EXPECT_TRUE(WaitUntil([&] { return ProcessGone(step_pid_); }, std::chrono::seconds(5)))
      << "step process " << step_pid_ << " survived";

  EngineResult s = Engine({"status", run_id_, "--json"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  nlohmann::json status = Json(s.out);
  EXPECT_EQ(status["state"], "cancelled");
  EXPECT_EQ(StepOf(status, "sleeper")["state"], "cancelled");
  EXPECT_NE(StepOf(status, "after")["state"], "succeeded");
}

TEST_F(CancelTest, DeadEngineRunIsCancelledByStoppingItsStepsThroughTheirHandles) {
  std::unique_ptr<EngineProcess> engine = StartSleeper();
  ASSERT_NE(engine, nullptr);
  ASSERT_GT(step_pid_, 0);
  // The handle is recorded just after the step started: kill the engine only once it is in the database.
  ASSERT_TRUE(WaitUntil(
      [&] {
        SQLite::Database db(state_dir_ + "/crucible.db", SQLite::OPEN_READONLY);
        SQLite::Statement st(db, "SELECT count(*) FROM attempts WHERE run_id = ?1 AND handle != ''");
        st.bind(1, run_id_);
        return st.executeStep() && st.getColumn(0).getInt() > 0;
      },
      std::chrono::seconds(30)));
  ASSERT_EQ(kill(engine->pid(), SIGKILL), 0);
  EngineResult dead = engine->Wait(std::chrono::seconds(30));  // reaped
  EXPECT_EQ(dead.exit_code, 128 + SIGKILL);
  ASSERT_FALSE(ProcessGone(step_pid_)) << "the step should outlive a SIGKILLed engine (its own process group)";

  EngineResult c = Engine({"cancel", run_id_});
  EXPECT_EQ(c.exit_code, 0) << c.err;
  EXPECT_NE(c.out.find("its engine was gone"), std::string::npos) << c.out;
  EXPECT_TRUE(WaitUntil([&] { return ProcessGone(step_pid_); }, std::chrono::seconds(5)))
      << "step process " << step_pid_ << " survived the cancel";

  EngineResult s = Engine({"status", run_id_, "--json"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  nlohmann::json status = Json(s.out);
  EXPECT_EQ(status["state"], "cancelled");
  EXPECT_EQ(StepOf(status, "sleeper")["state"], "cancelled");
  EXPECT_EQ(StepOf(status, "sleeper").value("message", ""), "cancelled by `crucible-engine cancel`; its engine was gone");
  EXPECT_EQ(StepOf(status, "after")["state"], "cancelled");

  EngineResult again = Engine({"cancel", run_id_});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("had already finished (cancelled)"), std::string::npos) << again.out;
}

TEST_F(CancelTest, FinishedRunHasNothingToCancel) {
  std::string wf = Write("ok.toml", R"(
[workflow]
name = "ok"

[[steps]]
id = "a"
run = ["true"]
)");
  EngineResult r = Engine({"run", wf});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string run_id = FirstLine(r.err);
  EngineResult c = Engine({"cancel", run_id});
  EXPECT_EQ(c.exit_code, 0) << c.err;
  EXPECT_NE(c.out.find("had already finished (succeeded)"), std::string::npos) << c.out;
  EngineResult s = Engine({"status", run_id, "--json"});
  EXPECT_EQ(Json(s.out)["state"], "succeeded");
}

TEST_F(CancelTest, UnknownRunIsAUsageError) {
  std::string wf = Write("ok.toml", "[workflow]\nname = \"ok\"\n\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\n");
  ASSERT_EQ(Engine({"run", wf}).exit_code, 0);
  EngineResult c = Engine({"cancel", "nosuchrun"});
  EXPECT_EQ(c.exit_code, 2) << c.err;
}

}  // namespace
}  // namespace crucible::testing

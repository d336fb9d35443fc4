// Durable runs: the engine killed (SIGKILL) at every named crash point and at
// random moments, then `resume`d, ends as a crash-free run does; one owner per
// run, a frozen owner that was taken over is fenced.
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/crash_point.h"
#include "integration_fixture.h"

namespace crucible::testing {
namespace {

constexpr int kKilled = 128 + SIGKILL;

/// One attempt as recorded.
struct AttemptRecord {
  int number = 0;
  std::string state;
  std::string reason;
};

/// What a finished run left in the store, for comparison with a crash-free one.
struct FinalState {
  std::string run_state;
  std::map<std::string, std::string> steps;                            ///< step -> state
  std::map<std::string, std::vector<AttemptRecord>> attempts;          ///< step -> attempts by number
  std::map<std::string, std::map<std::string, std::string>> outputs;   ///< step -> key -> value
};

class DurabilityTest : public IntegrationTest {
 protected:
  /// Fan-out, outputs of a need in argv, a step that fails its first attempt
  /// (a marker file outlives attempts), fan-in reading CRUCIBLE_UPSTREAM.
  std::string SweepWorkflow() {
    std::string marker = dir_ + "/flaky.once";
    return Write("durable.toml", R"([workflow]
name = "durable"
max_parallel = 2

[[steps]]
id = "prep"
shell = "echo n=3 >> \"$CRUCIBLE_OUTPUT\""

[[steps]]
id = "eval"
needs = ["prep"]
for_each = ["a", "b", "c", "d"]
shell = "sleep 0.05; echo item={{item}} >> \"$CRUCIBLE_OUTPUT\"; echo n={{steps.prep.outputs.n}} >> \"$CRUCIBLE_OUTPUT\""

[[steps]]
id = "flaky"
needs = ["prep"]
retries = 1
retry_delay = "0s"
shell = "if [ -e ')" + marker + R"(' ]; then echo ok=1 >> \"$CRUCIBLE_OUTPUT\"; else touch ')" + marker + R"('; exit 1; fi"

[[steps]]
id = "score"
needs = ["eval", "flaky"]
shell = "grep -c succeeded \"$CRUCIBLE_UPSTREAM\" > /dev/null && echo done=1 >> \"$CRUCIBLE_OUTPUT\""
)");
  }

  FinalState Load(const std::string& run_id) {
    FinalState f;
    SQLite::Database db(state_dir_ + "/crucible.db", SQLite::OPEN_READONLY);
    SQLite::Statement run(db, "SELECT state FROM runs WHERE id = ?1");
    run.bind(1, run_id);
    if (run.executeStep()) f.run_state = run.getColumn(0).getString();
    SQLite::Statement steps(db, "SELECT step_id, state FROM steps WHERE run_id = ?1");
    steps.bind(1, run_id);
    while (steps.executeStep()) f.steps[steps.getColumn(0).getString()] = steps.getColumn(1).getString();
    SQLite::Statement attempts(db,
                               "SELECT s.step_id, a.number, a.state, a.reason FROM attempts a JOIN steps s ON "
                               "s.run_id = a.run_id AND s.idx = a.step_idx WHERE a.run_id = ?1 ORDER BY s.idx, a.number");
    attempts.bind(1, run_id);
    while (attempts.executeStep()) {
      f.attempts[attempts.getColumn(0).getString()].push_back(
          {attempts.getColumn(1).getInt(), attempts.getColumn(2).getString(), attempts.getColumn(3).getString()});
    }
    SQLite::Statement outputs(db,
                              "SELECT s.step_id, o.key, o.value FROM outputs o JOIN steps s ON s.run_id = o.run_id "
                              "AND s.idx = o.step_idx WHERE o.run_id = ?1");
    outputs.bind(1, run_id);
    while (outputs.executeStep()) {
      f.outputs[outputs.getColumn(0).getString()][outputs.getColumn(1).getString()] = outputs.getColumn(2).getString();
    }
    return f;
  }

  std::string IntegrityCheck() {
    SQLite::Database db(state_dir_ + "/crucible.db", SQLite::OPEN_READONLY);
    return db.execAndGet("PRAGMA integrity_check").getString();
  }

  /// Processes whose command line mentions this test's directory (supervisors, steps).
  std::vector<pid_t> ProcessesOfThisTest() {
    std::vector<pid_t> found;
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
      std::string name = e.path().filename().string();
      if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
      pid_t pid = std::stoi(name);
      if (pid == ::getpid()) continue;
      std::string cmd = Read(e.path().string() + "/cmdline");
      std::string stat = Read(e.path().string() + "/stat");
      size_t p = stat.rfind(')');
      bool zombie = p != std::string::npos && p + 2 < stat.size() && stat[p + 2] == 'Z';
      if (!zombie && cmd.find(dir_) != std::string::npos) found.push_back(pid);
    }
    return found;
  }

  /// Same states, same outputs; attempts numbered 1..k without gaps, and apart
  /// from attempts recorded lost (the price of a crash) the same attempts.
  void ExpectSameEnd(const FinalState& got, const FinalState& want, const std::string& what) {
    EXPECT_EQ(got.run_state, want.run_state) << what;
    EXPECT_EQ(got.steps, want.steps) << what;
    EXPECT_EQ(got.outputs, want.outputs) << what;
    for (const auto& [step, attempts] : got.attempts) {
      std::vector<std::pair<std::string, std::string>> kept, wanted;
      for (size_t i = 0; i < attempts.size(); ++i) {
        EXPECT_EQ(attempts[i].number, static_cast<int>(i + 1)) << what << ": " << step << " attempt numbering";
        if (attempts[i].reason != "lost") kept.emplace_back(attempts[i].state, attempts[i].reason);
      }
      auto it = want.attempts.find(step);
      ASSERT_NE(it, want.attempts.end()) << what << ": " << step;
      for (const AttemptRecord& a : it->second) wanted.emplace_back(a.state, a.reason);
      EXPECT_EQ(kept, wanted) << what << ": attempts of " << step;
    }
  }

  /// Resumes until the run ends (each resume may itself be killed by `crash`); the last exit code.
  int ResumeToEnd(const std::string& run_id, const std::vector<std::string>& env = {}) {
    int code = kKilled;
    for (int i = 0; i < 5 && code == kKilled; ++i) {
      EngineResult r = RunEngine({"--state-dir", state_dir_, "resume", run_id}, i == 0 ? env : std::vector<std::string>{});
      code = r.exit_code;
      if (code != 0 && code != kKilled) ADD_FAILURE() << "resume exited " << code << ": " << r.err;
    }
    return code;
  }
};

TEST_F(DurabilityTest, KilledAtEveryCrashPointAndResumedEndsLikeACrashFreeRun) {
#ifndef CRUCIBLE_CRASH_POINTS
  GTEST_SKIP() << "built without CRUCIBLE_CRASH_POINTS";
#else
  std::string wf = SweepWorkflow();
  EngineResult clean = Engine({"run", wf});
  ASSERT_EQ(clean.exit_code, 0) << clean.err;
  FinalState want = Load(FirstLine(clean.err));
  ASSERT_EQ(want.run_state, "succeeded");
  ASSERT_EQ(want.attempts["flaky"].size(), 2u);

  // Where the run is killed: the engine's points at a hit well inside the run;
  // a resume's points after a first crash.
  struct Case {
    std::string point;
    int hit;
    bool during_resume;
  };
  std::vector<Case> cases;
  std::map<std::string, int> hits = {{"after-create-run", 1}, {"after-write-ahead", 3},
                                     {"after-start-before-record", 4}, {"after-poll-before-commit", 3},
                                     {"after-commit", 5}, {"before-finish-run", 1}};
  for (const char* point : kCrashPoints) {
    std::string p = point;
    bool resume_side = p == "after-takeover" || p == "after-adopt";
    cases.push_back({p, resume_side ? 1 : hits.count(p) ? hits[p] : 1, resume_side});
  }
  ASSERT_EQ(cases.size(), sizeof(kCrashPoints) / sizeof(kCrashPoints[0]));
  for (const Case& c : cases) {
    SCOPED_TRACE(c.point);
    std::filesystem::remove_all(state_dir_);
    std::filesystem::remove(dir_ + "/flaky.once");
    std::string at = "CRUCIBLE_CRASH_AT=" + c.point + ":" + std::to_string(c.hit);
    EngineResult first = RunEngine({"--state-dir", state_dir_, "run", wf},
                                   {c.during_resume ? "CRUCIBLE_CRASH_AT=after-start-before-record:2" : at});
    ASSERT_EQ(first.exit_code, kKilled) << "crash point " << c.point << " was never reached: " << first.err;
    std::string run_id = FirstLine(first.err);
    if (c.during_resume) {
      EngineResult again = RunEngine({"--state-dir", state_dir_, "resume", run_id}, {at});
      ASSERT_EQ(again.exit_code, kKilled) << "crash point " << c.point << " was never reached: " << again.err;
    }
    ASSERT_EQ(ResumeToEnd(run_id), 0);
    ExpectSameEnd(Load(run_id), want, c.point);
    EXPECT_EQ(IntegrityCheck(), "ok");
    EXPECT_TRUE(WaitUntil([&] { return ProcessesOfThisTest().empty(); }, std::chrono::seconds(10)))
        << "a supervisor or step outlived the run";
  }
#endif
}

TEST_F(DurabilityTest, RandomKillsAndResumesLoseNothingAndRunNoStepTwice) {
  int cycles = 20;
  if (const char* v = std::getenv("CRUCIBLE_SOAK_CYCLES")) cycles = std::max(1, std::atoi(v));
  std::string body = "[workflow]\nname = \"soak\"\nmax_parallel = 4\n\n";
  const int kSteps = 30;
  for (int i = 0; i < kSteps; ++i) {
    body += "[[steps]]\nid = \"s" + std::to_string(i) + "\"\n";
    if (i >= 4) body += "needs = [\"s" + std::to_string(i % 4) + "\", \"s" + std::to_string(i - 1) + "\"]\n";
    body += "shell = \"sleep 0.0" + std::to_string(1 + i % 9) + "; echo i=" + std::to_string(i) +
            " >> \\\"$CRUCIBLE_OUTPUT\\\"\"\n\n";
  }
  std::string wf = Write("soak.toml", body);
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> delay_ms(20, 400);

  std::string run_id;
  int kills = 0;
  for (int cycle = 0; cycle < cycles; ++cycle) {
    // A kill that came after the run's end was recorded leaves nothing to resume: start another run.
    if (!run_id.empty() && Load(run_id).run_state == "succeeded") run_id.clear();
    std::vector<std::string> args = {"--state-dir", state_dir_};
    if (run_id.empty()) {
      args.insert(args.end(), {"run", wf});
    } else {
      args.insert(args.end(), {"resume", run_id});
    }
    std::unique_ptr<EngineProcess> engine = EngineProcess::Start(args);
    ASSERT_NE(engine, nullptr);
    if (run_id.empty()) {
      ASSERT_TRUE(engine->WaitForStderr([](const std::string& e) { return e.find('\n') != std::string::npos; },
                                        std::chrono::seconds(30)));
      run_id = FirstLine(engine->err());
    }
    // The fault itself: a kill at a random moment of the run.
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    ::kill(engine->pid(), SIGKILL);
    EngineResult r = engine->Wait(std::chrono::seconds(30));
    if (r.exit_code == kKilled) {
      ++kills;
    } else {
      ASSERT_EQ(r.exit_code, 0) << r.err;
      // It ended before the kill: start over with a new run.
      EXPECT_EQ(Load(run_id).run_state, "succeeded");
      run_id.clear();
    }
  }
  if (!run_id.empty() && Load(run_id).run_state != "succeeded") {
    ASSERT_EQ(ResumeToEnd(run_id), 0);
  }
  EXPECT_GE(kills, cycles / 2) << "most kills should land inside a run";
  std::printf("soak: %d cycles, %d kills landed inside a run\n", cycles, kills);

  SQLite::Database db(state_dir_ + "/crucible.db", SQLite::OPEN_READONLY);
  SQLite::Statement runs(db, "SELECT id, state FROM runs");
  while (runs.executeStep()) {
    std::string id = runs.getColumn(0).getString();
    EXPECT_EQ(runs.getColumn(1).getString(), "succeeded") << id;
    FinalState f = Load(id);
    for (int i = 0; i < kSteps; ++i) {
      std::string step = "s" + std::to_string(i);
      EXPECT_EQ(f.steps[step], "succeeded") << id << " " << step;
      EXPECT_EQ(f.outputs[step]["i"], std::to_string(i)) << id << " " << step;
      int succeeded = 0;
      const auto& attempts = f.attempts[step];
      for (size_t k = 0; k < attempts.size(); ++k) {
        EXPECT_EQ(attempts[k].number, static_cast<int>(k + 1)) << id << " " << step;
        if (attempts[k].state == "succeeded") ++succeeded;
        if (attempts[k].state != "succeeded") {
          EXPECT_EQ(attempts[k].reason, "lost") << id << " " << step;
        }
      }
      EXPECT_EQ(succeeded, 1) << id << " " << step << ": ran to success once";
    }
  }
  EXPECT_EQ(IntegrityCheck(), "ok");
  EXPECT_TRUE(WaitUntil([&] { return ProcessesOfThisTest().empty(); }, std::chrono::seconds(10)))
      << "a supervisor or step outlived the runs";
}

/// A run whose one step sleeps until `release` exists; returns the engine once the step runs.
std::unique_ptr<EngineProcess> StartHeld(DurabilityTest* t, const std::string& wf, const std::string& state_dir,
                                         const std::vector<std::string>& env, std::string* run_id) {
  std::unique_ptr<EngineProcess> engine = EngineProcess::Start({"--state-dir", state_dir, "run", wf}, env);
  if (!engine) return nullptr;
  if (!engine->WaitForStderr([](const std::string& e) { return e.find("started held") != std::string::npos; },
                             std::chrono::seconds(30))) {
    ADD_FAILURE() << "the step did not start: " << engine->err();
    return nullptr;
  }
  (void)t;
  *run_id = engine->err().substr(0, engine->err().find('\n'));
  return engine;
}

TEST_F(DurabilityTest, SecondResumeOfALiveRunIsRefusedNamingItsOwner) {
  std::string release = dir_ + "/release";
  std::string wf = Write("held.toml", "[workflow]\nname = \"held\"\n\n[[steps]]\nid = \"held\"\nshell = \"while [ ! -e '" +
                                          release + "' ]; do sleep 0.02; done\"\n");
  std::string run_id;
  std::unique_ptr<EngineProcess> engine = StartHeld(this, wf, state_dir_, {}, &run_id);
  ASSERT_NE(engine, nullptr);
  EngineResult second = Engine({"resume", run_id});
  EXPECT_EQ(second.exit_code, 1) << second.err;
  EXPECT_NE(second.err.find("is owned by pid " + std::to_string(engine->pid())), std::string::npos) << second.err;
  EngineResult forced = Engine({"resume", "--force", run_id});
  EXPECT_EQ(forced.exit_code, 1) << "a fresh lease is never taken over: " << forced.err;
  Write("release", "");
  EngineResult end = engine->Wait();
  EXPECT_EQ(end.exit_code, 0) << end.err;
  EngineResult finished = Engine({"resume", run_id});
  EXPECT_EQ(finished.exit_code, 2) << finished.err;
  EXPECT_NE(finished.err.find("nothing to resume"), std::string::npos) << finished.err;
}

TEST_F(DurabilityTest, FrozenOwnerTakenOverIsFencedAndTheStepIsNotRunAgain) {
  std::string release = dir_ + "/release";
  std::string count = dir_ + "/count";
  std::string wf = Write("held.toml", "[workflow]\nname = \"held\"\n\n[[steps]]\nid = \"held\"\nshell = \"echo x >> '" +
                                          count + "'; while [ ! -e '" + release +
                                          "' ]; do sleep 0.02; done; echo v=1 >> \\\"$CRUCIBLE_OUTPUT\\\"\"\n\n"
                                          "[[steps]]\nid = \"after\"\nneeds = [\"held\"]\nrun = [\"true\"]\n");
  const std::vector<std::string> lease = {"CRUCIBLE_LEASE_MS=600"};
  std::string run_id;
  std::unique_ptr<EngineProcess> old = StartHeld(this, wf, state_dir_, lease, &run_id);
  ASSERT_NE(old, nullptr);
  ASSERT_EQ(::kill(old->pid(), SIGSTOP), 0);
  auto heartbeat_age = [&] {
    SQLite::Database db(state_dir_ + "/crucible.db", SQLite::OPEN_READONLY);
    SQLite::Statement st(db, "SELECT heartbeat_at FROM run_owners WHERE run_id = ?1");
    st.bind(1, run_id);
    st.executeStep();
    auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch()).count();
    return now - st.getColumn(0).getInt64();
  };
  ASSERT_TRUE(WaitUntil([&] { return heartbeat_age() > 600; }, std::chrono::seconds(10)));

  EngineResult plain = RunEngine({"--state-dir", state_dir_, "resume", run_id}, lease);
  EXPECT_EQ(plain.exit_code, 1) << plain.err;
  EXPECT_NE(plain.err.find("lease expired"), std::string::npos) << plain.err;
  EXPECT_NE(plain.err.find("--force"), std::string::npos) << plain.err;

  std::unique_ptr<EngineProcess> taker = EngineProcess::Start({"--state-dir", state_dir_, "resume", "--force", run_id}, lease);
  ASSERT_NE(taker, nullptr);
  ASSERT_TRUE(taker->WaitForStderr([](const std::string& e) { return e.find("took run") != std::string::npos; },
                                   std::chrono::seconds(30)))
      << taker->err();
  ASSERT_TRUE(taker->WaitForStderr([](const std::string& e) { return e.find("using the workflow") != std::string::npos; },
                                   std::chrono::seconds(30)))
      << taker->err();
  ASSERT_EQ(::kill(old->pid(), SIGCONT), 0);
  EngineResult fenced = old->Wait(std::chrono::seconds(30));
  EXPECT_EQ(fenced.exit_code, 1) << fenced.err;
  EXPECT_NE(fenced.err.find("was taken over by pid " + std::to_string(taker->pid())), std::string::npos) << fenced.err;

  Write("release", "");
  EngineResult done = taker->Wait();
  EXPECT_EQ(done.exit_code, 0) << done.err;
  FinalState f = Load(run_id);
  EXPECT_EQ(f.run_state, "succeeded");
  ASSERT_EQ(f.attempts["held"].size(), 1u) << "the running attempt was adopted, not run again";
  EXPECT_EQ(f.attempts["held"][0].state, "succeeded");
  EXPECT_EQ(f.outputs["held"]["v"], "1");
  EXPECT_EQ(Read(count), "x\n") << "the step ran once";
  EXPECT_EQ(IntegrityCheck(), "ok");
}

TEST_F(DurabilityTest, ResumeRunsTheStoredDefinitionWhenTheFileChangedAndSaysSo) {
  std::string release = dir_ + "/release";
  std::string wf = Write("held.toml", "[workflow]\nname = \"held\"\n\n[[steps]]\nid = \"held\"\nshell = \"while [ ! -e '" +
                                          release + "' ]; do sleep 0.02; done\"\n\n[[steps]]\nid = \"second\"\n"
                                          "needs = [\"held\"]\nrun = [\"true\"]\n");
  std::string run_id;
  std::unique_ptr<EngineProcess> engine = StartHeld(this, wf, state_dir_, {}, &run_id);
  ASSERT_NE(engine, nullptr);
  ASSERT_EQ(::kill(engine->pid(), SIGKILL), 0);
  engine->Wait();
  // The file now says something else entirely.
  Write("held.toml", "[workflow]\nname = \"other\"\n\n[[steps]]\nid = \"different\"\nrun = [\"false\"]\n");
  Write("release", "");
  EngineResult r = Engine({"resume", run_id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("using the workflow as submitted"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("differs from it now; the file on disk is not used"), std::string::npos) << r.err;
  FinalState f = Load(run_id);
  EXPECT_EQ(f.run_state, "succeeded");
  EXPECT_EQ(f.steps, (std::map<std::string, std::string>{{"held", "succeeded"}, {"second", "succeeded"}}));
}

TEST_F(DurabilityTest, FullStateDirectoryStopsTheRunWhichResumesOnceThereIsSpace) {
  // A real ENOSPC: the state directory on a 2 MiB tmpfs that a step fills up.
  std::filesystem::create_directories(state_dir_);
  if (::geteuid() != 0 || std::system(("mount -t tmpfs -o size=2m tmpfs '" + state_dir_ + "' 2>/dev/null").c_str()) != 0) {
    GTEST_SKIP() << "needs root to mount a small tmpfs";
  }
  struct Unmount {
    std::string dir;
    ~Unmount() { (void)std::system(("umount -l '" + dir + "'").c_str()); }
  } unmount{state_dir_};
  std::string ballast = state_dir_ + "/ballast";
  std::string body = "[workflow]\nname = \"full\"\nmax_parallel = 1\n\n[[steps]]\nid = \"first\"\nrun = [\"true\"]\n\n"
                     "[[steps]]\nid = \"filler\"\nneeds = [\"first\"]\nshell = \"cat /dev/zero > '" + ballast +
                     "' 2>/dev/null; true\"\n\n";
  for (int i = 0; i < 5; ++i) {
    body += "[[steps]]\nid = \"after" + std::to_string(i) + "\"\nneeds = [\"filler\"]\nshell = \"echo i=" +
            std::to_string(i) + " >> \\\"$CRUCIBLE_OUTPUT\\\"\"\n\n";
  }
  std::string wf = Write("full.toml", body);
  EngineResult r = Engine({"run", wf});
  ASSERT_NE(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("full"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(state_dir_ + "/crucible.db"), std::string::npos) << "names the path: " << r.err;
  std::string run_id = FirstLine(r.err);
  std::filesystem::remove(ballast);
  FinalState mid = Load(run_id);
  EXPECT_EQ(mid.run_state, "running") << "left resumable";
  for (const auto& [step, attempts] : mid.attempts) {
    for (const AttemptRecord& a : attempts) EXPECT_NE(a.state, "failed") << step << ": not a step failure";
  }
  EngineResult resumed = Engine({"resume", run_id});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  FinalState f = Load(run_id);
  EXPECT_EQ(f.run_state, "succeeded");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(f.outputs["after" + std::to_string(i)]["i"], std::to_string(i));
  EXPECT_EQ(f.attempts["filler"].size(), 1u) << "the attempt that ended while nothing could be recorded was adopted";
  EXPECT_EQ(IntegrityCheck(), "ok");
}

}  // namespace
}  // namespace crucible::testing

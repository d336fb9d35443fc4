// History of many runs: the query verbs pick the right run out of several,
// and `prune` deletes old finished runs with their files, keeping the rest.
#include <signal.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <gmock/gmock.h>

#include "integration_fixture.h"

namespace crucible::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class HistoryTest : public IntegrationTest {
 protected:
  /// A two-step workflow whose steps print `word` and output it as `said`.
  std::string Workflow(const std::string& name, const std::string& word) {
    return Write(name + ".toml", "[workflow]\nname = \"" + name + "\"\n\n" +
                                     "[[steps]]\nid = \"speak\"\nshell = \"echo " + word +
                                     "; echo said=" + word + " > $CRUCIBLE_OUTPUT\"\n\n" +
                                     "[[steps]]\nid = \"after\"\nneeds = [\"speak\"]\nrun = [\"true\"]\n");
  }
  /// Runs `file` to its end; returns the run id.
  std::string RunToEnd(const std::string& file, std::vector<std::string> extra = {}, int expect_exit = 0) {
    std::vector<std::string> args = {"run", file};
    args.insert(args.end(), extra.begin(), extra.end());
    EngineResult r = Engine(args);
    EXPECT_EQ(r.exit_code, expect_exit) << r.err;
    return FirstLine(r.err);
  }
  std::string DbPath() const { return state_dir_ + "/crucible.db"; }
  /// Moves a run's end (and start) `days` into the past.
  void Age(const std::string& run_id, int days) {
    SQLite::Database db(DbPath(), SQLite::OPEN_READWRITE);
    db.setBusyTimeout(5000);
    SQLite::Statement st(db,
                         "UPDATE runs SET created_at = created_at - ?2, "
                         "ended_at = CASE WHEN ended_at > 0 THEN ended_at - ?2 ELSE 0 END WHERE id = ?1");
    st.bind(1, run_id);
    st.bind(2, int64_t{days} * 24 * 3600 * 1000);
    ASSERT_EQ(st.exec(), 1);
  }
  int64_t Count(const std::string& sql) {
    SQLite::Database db(DbPath(), SQLite::OPEN_READONLY);
    db.setBusyTimeout(5000);
    return db.execAndGet(sql).getInt64();
  }
  int64_t RowsOf(const std::string& run_id) {
    int64_t n = 0;
    for (const char* table : {"runs", "steps", "attempts", "outputs"}) {
      n += Count(std::string("SELECT count(*) FROM ") + table + " WHERE " +
                 (std::string(table) == "runs" ? "id" : "run_id") + " = '" + run_id + "'");
    }
    return n;
  }
};

TEST_F(HistoryTest, QueryVerbsAnswerForTheRunAskedAmongSeveral) {
  std::vector<std::string> ids;
  for (const char* word : {"alpha", "bravo", "charlie", "delta"}) ids.push_back(RunToEnd(Workflow(word, word)));

  EngineResult runs = Engine({"runs", "--json"});
  ASSERT_EQ(runs.exit_code, 0) << runs.err;
  ASSERT_EQ(Json(runs.out).size(), 4u);
  EXPECT_EQ(Json(runs.out)[0]["run_id"], ids[3]);
  EngineResult two = Engine({"runs", "--json", "--limit", "2"});
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_EQ(Json(two.out).size(), 2u);
  EngineResult all = Engine({"runs", "--json", "--all"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_EQ(Json(all.out).size(), 4u);
  EXPECT_NE(Engine({"runs", "--all", "--limit", "2"}).exit_code, 0) << "--all and --limit exclude each other";

  EngineResult status = Engine({"status", ids[1], "--json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  nlohmann::json s = Json(status.out);
  EXPECT_EQ(s["run_id"], ids[1]);
  EXPECT_EQ(s["workflow"], "bravo");
  EXPECT_EQ(s["steps"].size(), 2u);
  EXPECT_EQ(StepOf(s, "speak")["outputs"]["said"], "bravo");

  EngineResult results = Engine({"results", ids[2], "--json"});
  ASSERT_EQ(results.exit_code, 0) << results.err;
  EXPECT_EQ(Json(results.out)["steps"]["speak"]["said"], "charlie");

  EngineResult logs = Engine({"logs", ids[0], "speak"});
  ASSERT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_EQ(logs.out, "alpha\n");
}

TEST_F(HistoryTest, PruneDeletesOldFinishedRunsWithTheirFilesAndKeepsTheRest) {
  std::string old_ok = RunToEnd(Workflow("old-ok", "one"), {"--keep-work"});
  std::string old_failed = RunToEnd(Write("old-failed.toml", "[workflow]\nname = \"old-failed\"\n\n"
                                                             "[[steps]]\nid = \"no\"\nshell = \"echo sad; exit 3\"\n"),
                                    {}, 1);
  std::string recent = RunToEnd(Workflow("recent", "three"));
  std::string interrupted = RunToEnd(Workflow("interrupted", "four"));
  {
    SQLite::Database db(DbPath(), SQLite::OPEN_READWRITE);
    db.exec("UPDATE runs SET state = 'interrupted' WHERE id = '" + interrupted + "'");
  }
  for (const std::string& id : {old_ok, old_failed, interrupted}) Age(id, 40);
  ASSERT_TRUE(std::filesystem::exists(state_dir_ + "/logs/" + old_ok));
  ASSERT_TRUE(std::filesystem::exists(state_dir_ + "/work/" + old_ok)) << "--keep-work keeps it";
  ASSERT_TRUE(std::filesystem::exists(state_dir_ + "/logs/" + old_failed));

  // A run in progress, started long ago: never pruned, and it finishes normally afterwards.
  std::string pid_file = dir_ + "/step.pid";
  std::string live_wf = Write("live.toml", "[workflow]\nname = \"live\"\n\n[[steps]]\nid = \"wait\"\nshell = \"echo $$ > " +
                                               pid_file + ".tmp && mv " + pid_file + ".tmp " + pid_file +
                                               " && exec sleep 60\"\n");
  std::unique_ptr<EngineProcess> live = EngineProcess::Start({"--state-dir", state_dir_, "run", live_wf});
  ASSERT_NE(live, nullptr);
  ASSERT_TRUE(live->WaitForStderr([](const std::string& e) { return e.find('\n') != std::string::npos; },
                                  std::chrono::seconds(30)))
      << live->err();
  ASSERT_TRUE(WaitUntil([&] { return std::filesystem::exists(pid_file); }, std::chrono::seconds(30))) << live->err();
  std::string running = FirstLine(live->err());
  Age(running, 40);

  EngineResult dry = Engine({"prune", "--older-than", "30d", "--dry-run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_THAT(dry.out, HasSubstr(old_ok));
  EXPECT_THAT(dry.out, HasSubstr(old_failed));
  EXPECT_THAT(dry.out, HasSubstr("would prune 2 runs"));
  EXPECT_THAT(dry.out, Not(HasSubstr(recent)));
  EXPECT_GT(RowsOf(old_ok), 0) << "--dry-run deletes nothing";
  EXPECT_TRUE(std::filesystem::exists(state_dir_ + "/logs/" + old_ok));

  EngineResult pruned = Engine({"prune", "--older-than", "30d"});
  ASSERT_EQ(pruned.exit_code, 0) << pruned.err;
  EXPECT_THAT(pruned.out, HasSubstr("pruned 2 runs"));
  EXPECT_THAT(pruned.out, HasSubstr("of logs"));
  for (const std::string& id : {old_ok, old_failed}) {
    EXPECT_EQ(RowsOf(id), 0) << id;
    EXPECT_FALSE(std::filesystem::exists(state_dir_ + "/logs/" + id)) << id;
    EXPECT_FALSE(std::filesystem::exists(state_dir_ + "/work/" + id)) << id;
    EXPECT_NE(Engine({"status", id}).exit_code, 0);
  }
  for (const std::string& id : {recent, interrupted, running}) {
    EXPECT_EQ(Count("SELECT count(*) FROM runs WHERE id = '" + id + "'"), 1) << id;
    EXPECT_TRUE(std::filesystem::exists(state_dir_ + "/logs/" + id)) << id;
  }
  EXPECT_EQ(Count("PRAGMA freelist_count"), 0) << "compacted";
  EngineResult logs = Engine({"logs", recent, "speak"});
  ASSERT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_EQ(logs.out, "three\n");

  // The live run still records its end after the prune and compaction.
  ASSERT_EQ(kill(live->pid(), SIGINT), 0);
  EngineResult ended = live->Wait(std::chrono::seconds(30));
  EXPECT_EQ(ended.exit_code, 130) << ended.err;
  EngineResult st = Engine({"status", running, "--json"});
  ASSERT_EQ(st.exit_code, 0) << st.err;
  EXPECT_EQ(Json(st.out)["state"], "cancelled");

  EngineResult again = Engine({"prune", "--older-than", "30d"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_THAT(again.out, HasSubstr("pruned 0 runs")) << "the cancelled run ended just now";
}

TEST_F(HistoryTest, PruneWantsADuration) {
  EngineResult r = Engine({"prune", "--older-than", "soon"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--older-than wants a duration"));
  EXPECT_EQ(Engine({"prune"}).exit_code, 2);
}

TEST_F(HistoryTest, PruneOfAnEmptyStateDirCreatesNothing) {
  EngineResult r = Engine({"prune", "--older-than", "1d"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "pruned 0 runs\n");
  EXPECT_FALSE(std::filesystem::exists(state_dir_));
}

}  // namespace
}  // namespace crucible::testing

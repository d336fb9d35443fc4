// Tests of the SQLite store: round trips, transactions, versions, errors, plans.
#include "store/store.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace crucible::store {
namespace {

using ::testing::HasSubstr;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "crucible-store-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    state_dir_ = root_ + "/state/nested";
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  std::unique_ptr<Store> OpenStore() {
    auto s = Store::Open(state_dir_);
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
    return s.ok() ? std::move(s.value()) : nullptr;
  }

  static RunRow MakeRun(const std::string& id, int64_t created) {
    RunRow r;
    r.id = id;
    r.workflow = "grade";
    r.file = "grade.toml";
    r.source_text = "[workflow]\nname = \"grade\"\n";
    r.source_sha256 = "abc123";
    r.params_json = R"({"n":"3"})";
    r.created_at_ms = created;
    return r;
  }

  static std::vector<StepRow> MakeSteps(const std::string& run_id, int n) {
    std::vector<StepRow> steps;
    for (int i = 0; i < n; ++i) {
      StepRow s;
      s.run_id = run_id;
      s.idx = i;
      s.step_id = "step" + std::to_string(i);
      s.backend = "localproc";
      steps.push_back(s);
    }
    return steps;
  }

  std::string root_;
  std::string state_dir_;
};

TEST(StoreStateTest, StatesRoundTripThroughText) {
  for (RunState s : {RunState::kRunning, RunState::kSucceeded, RunState::kFailed, RunState::kCancelled,
                     RunState::kInterrupted}) {
    EXPECT_EQ(ParseRunState(ToString(s)), s);
  }
  for (StepState s : {StepState::kPending, StepState::kRunning, StepState::kSucceeded, StepState::kFailed,
                      StepState::kSkipped, StepState::kCancelled}) {
    EXPECT_EQ(ParseStepState(ToString(s)), s);
  }
  EXPECT_STREQ(ToString(RunState::kInterrupted), "interrupted");
  EXPECT_STREQ(ToString(StepState::kSkipped), "skipped");
  EXPECT_FALSE(ParseRunState("pending").has_value());
  EXPECT_FALSE(ParseStepState("bogus").has_value());
}

TEST_F(StoreTest, OpenCreatesStateDirectoryAndWalDatabase) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  EXPECT_TRUE(std::filesystem::exists(state_dir_ + "/crucible.db"));
  EXPECT_EQ(store->db_path(), state_dir_ + "/crucible.db");
  SQLite::Database db(store->db_path());
  EXPECT_EQ(db.execAndGet("PRAGMA journal_mode").getString(), "wal");
  EXPECT_EQ(db.execAndGet("PRAGMA user_version").getInt(), kSchemaVersion);
}

TEST_F(StoreTest, EveryWriteReadsBack) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->CreateRun(MakeRun("r1", 1000), MakeSteps("r1", 2)).ok());

  AttemptRow a;
  a.run_id = "r1";
  a.step_idx = 1;
  a.number = 1;
  a.state = "running";
  a.started_at_ms = 1100;
  a.log_path = "/state/logs/r1/step1.1.log";
  ASSERT_TRUE(store->InsertAttempt(a).ok());
  ASSERT_TRUE(store->SetAttemptHandle("r1", 1, 1, "pid=42 start=99").ok());
  a.state = "failed";
  a.reason = "timeout";
  a.exit_code = -1;
  a.signal = 9;
  a.ended_at_ms = 1200;
  a.log_bytes = 512;
  a.log_dropped = 7;
  a.message = "killed after 30s";
  a.infra = true;
  ASSERT_TRUE(store->FinishAttempt(a).ok());

  StepRow s = MakeSteps("r1", 2)[1];
  s.state = StepState::kFailed;
  s.reason = "timeout";
  s.attempts = 1;
  s.exit_code = 3;
  s.message = "killed after 30s";
  ASSERT_TRUE(store->SetStepState(s).ok());
  ASSERT_TRUE(store->PutOutputs("r1", 1, {{"passed", "12"}, {"failed", "0"}}).ok());
  ASSERT_TRUE(store->PutOutputs("r1", 0, {{"tests", "5"}}).ok());
  ASSERT_TRUE(store->FinishRun("r1", RunState::kFailed, 1300, 1).ok());

  auto run = store->GetRun("r1");
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_EQ(run->workflow, "grade");
  EXPECT_EQ(run->file, "grade.toml");
  EXPECT_EQ(run->source_text, "[workflow]\nname = \"grade\"\n");
  EXPECT_EQ(run->source_sha256, "abc123");
  EXPECT_EQ(run->params_json, R"({"n":"3"})");
  EXPECT_EQ(run->state, RunState::kFailed);
  EXPECT_EQ(run->created_at_ms, 1000);
  EXPECT_EQ(run->ended_at_ms, 1300);
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_EQ(run->step_count, 2);

  auto steps = store->GetSteps("r1");
  ASSERT_TRUE(steps.ok());
  ASSERT_EQ(steps->size(), 2u);
  EXPECT_EQ((*steps)[0].step_id, "step0");
  EXPECT_EQ((*steps)[0].state, StepState::kPending);
  EXPECT_EQ((*steps)[1].state, StepState::kFailed);
  EXPECT_EQ((*steps)[1].reason, "timeout");
  EXPECT_EQ((*steps)[1].attempts, 1);
  EXPECT_EQ((*steps)[1].exit_code, 3);
  EXPECT_EQ((*steps)[1].message, "killed after 30s");
  EXPECT_EQ((*steps)[0].message, "");
  EXPECT_EQ((*steps)[1].backend, "localproc");

  auto attempts = store->GetAttempts("r1", 1);
  ASSERT_TRUE(attempts.ok());
  ASSERT_EQ(attempts->size(), 1u);
  const AttemptRow& got = (*attempts)[0];
  EXPECT_EQ(got.state, "failed");
  EXPECT_EQ(got.reason, "timeout");
  EXPECT_EQ(got.exit_code, -1);
  EXPECT_EQ(got.signal, 9);
  EXPECT_EQ(got.started_at_ms, 1100);
  EXPECT_EQ(got.ended_at_ms, 1200);
  EXPECT_EQ(got.log_path, "/state/logs/r1/step1.1.log");
  EXPECT_EQ(got.log_bytes, 512);
  EXPECT_EQ(got.log_dropped, 7);
  EXPECT_EQ(got.handle, "pid=42 start=99");
  EXPECT_EQ(got.message, "killed after 30s");
  EXPECT_TRUE(got.infra);
  EXPECT_EQ(store->GetAttempts("r1", 0)->size(), 0u);
  EXPECT_EQ(store->GetAttempts("r1", std::nullopt)->size(), 1u);

  auto outputs = store->GetOutputs("r1");
  ASSERT_TRUE(outputs.ok());
  ASSERT_EQ(outputs->size(), 3u);
  EXPECT_EQ((*outputs)[0].step_id, "step0");
  EXPECT_EQ((*outputs)[0].key, "tests");
  EXPECT_EQ((*outputs)[1].step_id, "step1");
  EXPECT_EQ((*outputs)[1].key, "failed");
  EXPECT_EQ((*outputs)[2].value, "12");
}

TEST_F(StoreTest, UpdatesOfMissingRowsAreNotFound) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->CreateRun(MakeRun("r1", 1), MakeSteps("r1", 1)).ok());
  EXPECT_EQ(store->SetAttemptHandle("r1", 0, 5, "h").error().code, ErrorCode::kNotFound);
  StepRow s = MakeSteps("r1", 3)[2];
  EXPECT_EQ(store->SetStepState(s).error().code, ErrorCode::kNotFound);
  EXPECT_EQ(store->FinishRun("nope", RunState::kFailed, 1, 1).error().code, ErrorCode::kNotFound);
  // An attempt of a step that does not exist violates the foreign key.
  AttemptRow a;
  a.run_id = "r1";
  a.step_idx = 9;
  a.number = 1;
  a.state = "running";
  EXPECT_FALSE(store->InsertAttempt(a).ok());
}

TEST_F(StoreTest, DuplicateRunIsAlreadyExists) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->CreateRun(MakeRun("r1", 1), MakeSteps("r1", 1)).ok());
  auto s = store->CreateRun(MakeRun("r1", 2), {});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kAlreadyExists);
}

TEST_F(StoreTest, FailedTransactionLeavesNothing) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  Status s = store->Transaction([&]() -> Status {
    Status w = store->CreateRun(MakeRun("r1", 1), MakeSteps("r1", 3));
    if (!w.ok()) return w;
    w = store->PutOutputs("r1", 0, {{"k", "v"}});
    if (!w.ok()) return w;
    return MakeError(ErrorCode::kInternal, "changed my mind");
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message, "changed my mind");
  EXPECT_EQ(store->GetRun("r1").error().code, ErrorCode::kNotFound);
  EXPECT_TRUE(store->GetSteps("r1")->empty());
  EXPECT_TRUE(store->ListRuns(10)->empty());
}

TEST_F(StoreTest, FailedWriteInsideTransactionRollsBackEvenIfBodyIgnoresIt) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  Status s = store->Transaction([&]() -> Status {
    (void)store->CreateRun(MakeRun("r1", 1), MakeSteps("r1", 1));
    StepRow missing = MakeSteps("r1", 5)[4];
    (void)store->SetStepState(missing);  // not found: poisons the transaction
    return Ok{};
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(store->GetRun("r1").error().code, ErrorCode::kNotFound);
  // The store is usable afterwards.
  EXPECT_TRUE(store->CreateRun(MakeRun("r2", 1), {}).ok());
}

TEST_F(StoreTest, TransactionCommitsItsWrites) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  Status s = store->Transaction([&]() -> Status {
    Status w = store->CreateRun(MakeRun("r1", 1), MakeSteps("r1", 2));
    if (!w.ok()) return w;
    return store->PutOutputs("r1", 1, {{"k", "v"}});
  });
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(store->GetOutputs("r1")->size(), 1u);
}

TEST_F(StoreTest, ListRunsNewestFirstWithLimit) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->CreateRun(MakeRun("b", 2000), {}).ok());
  ASSERT_TRUE(store->CreateRun(MakeRun("a", 3000), {}).ok());
  ASSERT_TRUE(store->CreateRun(MakeRun("c", 1000), {}).ok());
  auto runs = store->ListRuns(2);
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 2u);
  EXPECT_EQ((*runs)[0].id, "a");
  EXPECT_EQ((*runs)[1].id, "b");
  EXPECT_TRUE((*runs)[0].source_text.empty());  // summaries leave the source out
  EXPECT_EQ(store->ListRuns(100)->size(), 3u);
}

TEST_F(StoreTest, GetRunByUniquePrefix) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->CreateRun(MakeRun("r7f3aa", 1), {}).ok());
  ASSERT_TRUE(store->CreateRun(MakeRun("r7f3bb", 2), {}).ok());
  ASSERT_TRUE(store->CreateRun(MakeRun("r8000", 3), {}).ok());
  auto r = store->GetRun("r7f3b");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->id, "r7f3bb");
  EXPECT_EQ(r->source_text, "[workflow]\nname = \"grade\"\n");
  EXPECT_EQ(store->GetRun("r8")->id, "r8000");
}

TEST_F(StoreTest, AmbiguousPrefixListsCandidates) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->CreateRun(MakeRun("r7f3aa", 1), {}).ok());
  ASSERT_TRUE(store->CreateRun(MakeRun("r7f3bb", 2), {}).ok());
  auto r = store->GetRun("r7f");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_THAT(r.error().message, HasSubstr("ambiguous"));
  EXPECT_THAT(r.error().message, HasSubstr("r7f3aa, r7f3bb"));
}

TEST_F(StoreTest, MissingRunNamesTheDatabase) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->CreateRun(MakeRun("r1", 1), {}).ok());
  auto r = store->GetRun("x9");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(r.error().message, "no run \"x9\" in " + store->db_path());
}

TEST_F(StoreTest, ReopenPreservesData) {
  {
    auto store = OpenStore();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->CreateRun(MakeRun("r1", 1), MakeSteps("r1", 4)).ok());
    ASSERT_TRUE(store->PutOutputs("r1", 2, {{"k", "v"}}).ok());
  }
  auto store = OpenStore();
  ASSERT_TRUE(store);
  EXPECT_EQ(store->GetSteps("r1")->size(), 4u);
  EXPECT_EQ(store->GetOutputs("r1")->at(0).value, "v");
}

TEST_F(StoreTest, NewerSchemaIsRefused) {
  { ASSERT_TRUE(OpenStore()); }
  {
    SQLite::Database db(state_dir_ + "/crucible.db", SQLite::OPEN_READWRITE);
    db.exec("PRAGMA user_version = 99");
  }
  auto s = Store::Open(state_dir_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kVersion);
  EXPECT_EQ(s.error().message, state_dir_ + "/crucible.db: created by a newer crucible-engine (schema 99, this one "
                                            "knows up to " + std::to_string(kSchemaVersion) + ")");
}

TEST_F(StoreTest, FileThatIsNotADatabaseIsRefused) {
  std::filesystem::create_directories(state_dir_);
  {
    std::ofstream f(state_dir_ + "/crucible.db");
    f << "this is not a database, just some text that is long enough to have a header........................\n";
  }
  auto s = Store::Open(state_dir_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kIo);
  EXPECT_THAT(s.error().message, HasSubstr(state_dir_ + "/crucible.db: not a crucible-engine database"));
}

TEST_F(StoreTest, StateDirThatIsAFileIsAnIoError) {
  std::filesystem::create_directories(root_);
  { std::ofstream f(root_ + "/file"); }
  auto s = Store::Open(root_ + "/file/state");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kIo);
  EXPECT_THAT(s.error().message, HasSubstr("cannot create state directory"));
}

TEST_F(StoreTest, FullDatabaseIsStorageFullAndKeepsEarlierData) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->CreateRun(MakeRun("r1", 1), MakeSteps("r1", 3)).ok());
  ASSERT_TRUE(store->PutOutputs("r1", 0, {{"kept", "yes"}}).ok());
  ASSERT_TRUE(store->ExecForTesting("PRAGMA max_page_count = 1").ok());  // clamps to the current size
  std::string big(100000, 'x');
  Status s = store->PutOutputs("r1", 1, {{"big", big}});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kStorageFull);
  EXPECT_THAT(s.error().message, HasSubstr(store->db_path()));
  // Same inside a batch.
  Status t = store->Transaction([&]() -> Status { return store->PutOutputs("r1", 2, {{"big", big}}); });
  EXPECT_EQ(t.error().code, ErrorCode::kStorageFull);
  auto outputs = store->GetOutputs("r1");
  ASSERT_TRUE(outputs.ok());
  ASSERT_EQ(outputs->size(), 1u);
  EXPECT_EQ((*outputs)[0].key, "kept");
}

TEST_F(StoreTest, SecondWriterGetsBusy) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  SQLite::Database other(store->db_path(), SQLite::OPEN_READWRITE);
  other.exec("BEGIN IMMEDIATE");
  ASSERT_TRUE(store->ExecForTesting("PRAGMA busy_timeout = 10").ok());
  Status s = store->CreateRun(MakeRun("r1", 1), {});
  other.exec("ROLLBACK");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kBusy);
}

TEST_F(StoreTest, OpeningACurrentDatabaseDoesNotWaitForAWriter) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->CreateRun(MakeRun("r1", 1), {}).ok());
  SQLite::Database writer(store->db_path(), SQLite::OPEN_READWRITE);
  writer.exec("BEGIN IMMEDIATE");  // a running engine in the middle of a write
  auto reader = Store::Open(state_dir_);
  ASSERT_TRUE(reader.ok()) << reader.error().message;
  Result<RunRow> run = (*reader)->GetRun("r1");
  writer.exec("ROLLBACK");
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_EQ(run->id, "r1");
}

TEST_F(StoreTest, CliQueriesUseIndexes) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  SQLite::Database db(store->db_path(), SQLite::OPEN_READONLY);
  for (const std::string& sql : Store::ReadQueries()) {
    SQLite::Statement plan(db, "EXPLAIN QUERY PLAN " + sql);
    std::string text;
    while (plan.executeStep()) text += plan.getColumn(3).getString() + "\n";
    SCOPED_TRACE(sql + "\n" + text);
    EXPECT_TRUE(text.find("USING INDEX") != std::string::npos ||
                text.find("USING PRIMARY KEY") != std::string::npos ||
                text.find("USING COVERING INDEX") != std::string::npos);
    // Every line that reads a table goes through an index; nothing sorts in a temp b-tree.
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("SCAN", 0) == 0 || line.rfind("SEARCH", 0) == 0) {
        EXPECT_THAT(line, HasSubstr("USING")) << line;
      }
      EXPECT_THAT(line, ::testing::Not(HasSubstr("TEMP B-TREE")));
    }
  }
}

TEST_F(StoreTest, TenThousandStepsBatchedThroughput) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  constexpr int kSteps = 10000;
  constexpr int kBatch = 50;
  ASSERT_TRUE(store->CreateRun(MakeRun("bench", 1), MakeSteps("bench", kSteps)).ok());
  auto start = std::chrono::steady_clock::now();
  for (int first = 0; first < kSteps; first += kBatch) {
    Status s = store->Transaction([&]() -> Status {
      for (int i = first; i < first + kBatch; ++i) {
        AttemptRow a;
        a.run_id = "bench";
        a.step_idx = i;
        a.number = 1;
        a.state = "running";
        a.started_at_ms = i;
        if (Status w = store->InsertAttempt(a); !w.ok()) return w;
        if (Status w = store->SetAttemptHandle("bench", i, 1, "pid=" + std::to_string(i)); !w.ok()) return w;
        a.state = "succeeded";
        a.exit_code = 0;
        a.ended_at_ms = i + 1;
        if (Status w = store->FinishAttempt(a); !w.ok()) return w;
        StepRow st;
        st.run_id = "bench";
        st.idx = i;
        st.state = StepState::kSucceeded;
        st.attempts = 1;
        st.exit_code = 0;
        if (Status w = store->SetStepState(st); !w.ok()) return w;
      }
      return Ok{};
    });
    ASSERT_TRUE(s.ok()) << s.error().message;
  }
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("[ figure   ] %d steps x 4 writes, %d steps per transaction: %.1f ms (%.2f us per write)\n", kSteps,
              kBatch, ms, ms * 1000.0 / (kSteps * 4));
  auto attempts = store->GetAttempts("bench", std::nullopt);
  ASSERT_TRUE(attempts.ok());
  EXPECT_EQ(attempts->size(), static_cast<size_t>(kSteps));
  EXPECT_EQ(attempts->back().handle, "pid=" + std::to_string(kSteps - 1));
}

}  // namespace
}  // namespace crucible::store

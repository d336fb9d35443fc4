// Tests of the store's history operations: step counts for `runs`; pruning (which runs are
// old enough, cascading deletes, compaction).
#include <SQLiteCpp/SQLiteCpp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "store/store.h"

namespace crucible::store {
namespace {

using ::testing::ElementsAre;

class StorePruneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "crucible-prune-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    auto s = Store::Open(root_);
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(s.value());
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(root_);
  }

  /// A run of `steps` steps, each with one attempt and one output, finished in `state` at `ended`.
  void AddRun(const std::string& id, RunState state, int64_t ended, int steps = 3) {
    RunRow r;
    r.id = id;
    r.workflow = "grade";
    r.file = "grade.toml";
    r.source_text = std::string(2000, 'x');
    r.source_sha256 = "abc";
    r.params_json = "{}";
    r.created_at_ms = ended - 10;
    std::vector<StepRow> rows;
    for (int i = 0; i < steps; ++i) {
      StepRow s;
      s.run_id = id;
      s.idx = i;
      s.step_id = "s" + std::to_string(i);
      s.backend = "localproc";
      rows.push_back(s);
    }
    ASSERT_TRUE(store_->CreateRun(r, rows).ok());
    for (int i = 0; i < steps; ++i) {
      AttemptRow a;
      a.run_id = id;
      a.step_idx = i;
      a.number = 1;
      a.state = "running";
      a.message = std::string(500, 'm');
      ASSERT_TRUE(store_->InsertAttempt(a).ok());
      ASSERT_TRUE(store_->PutOutputs(id, i, {{"k", std::string(300, 'v')}}).ok());
    }
    if (state != RunState::kRunning) {
      ASSERT_TRUE(store_->FinishRun(id, state, ended, 0).ok());
    }
  }

  std::vector<std::string> FinishedBefore(int64_t ms) {
    auto runs = store_->ListFinishedBefore(ms);
    EXPECT_TRUE(runs.ok()) << runs.error().message;
    std::vector<std::string> ids;
    if (runs.ok()) {
      for (const RunRow& r : *runs) ids.push_back(r.id);
    }
    return ids;
  }

  /// SELECT count(*) over a table, through a second connection.
  int64_t Count(const std::string& sql) {
    SQLite::Database db(store_->db_path(), SQLite::OPEN_READONLY);
    return db.execAndGet(sql).getInt64();
  }

  std::string root_;
  std::unique_ptr<Store> store_;
};

TEST_F(StorePruneTest, ListsOnlyFinishedRunsEndedBeforeTheCutoffOldestFirst) {
  AddRun("succeeded-old", RunState::kSucceeded, 2000);
  AddRun("failed-old", RunState::kFailed, 1000);
  AddRun("cancelled-old", RunState::kCancelled, 3000);
  AddRun("interrupted-old", RunState::kInterrupted, 1000);
  AddRun("running", RunState::kRunning, 0);
  AddRun("succeeded-new", RunState::kSucceeded, 9000);

  EXPECT_THAT(FinishedBefore(5000), ElementsAre("failed-old", "succeeded-old", "cancelled-old"));
  EXPECT_THAT(FinishedBefore(2000), ElementsAre("failed-old"));  // strictly before
  EXPECT_THAT(FinishedBefore(1000), ElementsAre());
}

TEST_F(StorePruneTest, ListedRunsLeaveTheSourceOut) {
  AddRun("old", RunState::kSucceeded, 1000);
  auto runs = store_->ListFinishedBefore(5000);
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0].state, RunState::kSucceeded);
  EXPECT_EQ((*runs)[0].ended_at_ms, 1000);
  EXPECT_EQ((*runs)[0].step_count, 3);
  EXPECT_TRUE((*runs)[0].source_text.empty());
}

TEST_F(StorePruneTest, DeleteRunCascadesToStepsAttemptsAndOutputsOfThatRunOnly) {
  AddRun("gone", RunState::kSucceeded, 1000);
  AddRun("kept", RunState::kSucceeded, 1000);
  ASSERT_TRUE(store_->DeleteRun("gone").ok());

  EXPECT_FALSE(store_->GetRun("gone").ok());
  EXPECT_EQ(Count("SELECT count(*) FROM steps WHERE run_id = 'gone'"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM attempts WHERE run_id = 'gone'"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM outputs WHERE run_id = 'gone'"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM steps WHERE run_id = 'kept'"), 3);
  EXPECT_EQ(Count("SELECT count(*) FROM attempts WHERE run_id = 'kept'"), 3);
  EXPECT_EQ(Count("SELECT count(*) FROM outputs WHERE run_id = 'kept'"), 3);
}

TEST_F(StorePruneTest, DeleteOfAMissingRunIsNotFound) {
  Status s = store_->DeleteRun("nope");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kNotFound);
}

TEST_F(StorePruneTest, DeletesInAFailedTransactionAreRolledBack) {
  AddRun("a", RunState::kSucceeded, 1000);
  AddRun("b", RunState::kSucceeded, 1000);
  Status s = store_->Transaction([&]() -> Status {
    EXPECT_TRUE(store_->DeleteRun("a").ok());
    return store_->DeleteRun("missing");
  });
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(store_->GetRun("a").ok());
  EXPECT_EQ(Count("SELECT count(*) FROM steps WHERE run_id = 'a'"), 3);
}

TEST_F(StorePruneTest, CompactLeavesNoFreePagesAndShrinksTheFile) {
  for (int i = 0; i < 40; ++i) AddRun("r" + std::to_string(i), RunState::kSucceeded, 1000, 20);
  ASSERT_TRUE(store_->Compact().ok());
  auto before = std::filesystem::file_size(store_->db_path());

  Status s = store_->Transaction([&]() -> Status {
    for (int i = 0; i < 39; ++i) {
      if (Status d = store_->DeleteRun("r" + std::to_string(i)); !d.ok()) return d;
    }
    return Ok{};
  });
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_GT(Count("PRAGMA freelist_count"), 0);

  ASSERT_TRUE(store_->Compact().ok());
  EXPECT_EQ(Count("PRAGMA freelist_count"), 0);
  EXPECT_LT(std::filesystem::file_size(store_->db_path()), before / 4);
  EXPECT_EQ(std::filesystem::file_size(store_->db_path() + "-wal"), 0u);
  EXPECT_TRUE(store_->GetRun("r39").ok());
  EXPECT_EQ(Count("SELECT count(*) FROM steps"), 20);
}

TEST_F(StorePruneTest, CountStepsCountsEachStateOfThatRunOnly) {
  AddRun("counted", RunState::kFailed, 1000, 5);
  AddRun("other", RunState::kSucceeded, 1000, 7);
  StepRow s;
  s.run_id = "counted";
  for (auto [idx, state] : {std::pair{0, StepState::kSucceeded}, {1, StepState::kSucceeded},
                            {2, StepState::kFailed}, {3, StepState::kSkipped}}) {
    s.idx = idx;
    s.state = state;
    ASSERT_TRUE(store_->SetStepState(s).ok());
  }
  auto counts = store_->CountSteps("counted");
  ASSERT_TRUE(counts.ok()) << counts.error().message;
  std::map<StepState, int> by_state(counts->begin(), counts->end());
  EXPECT_EQ(by_state, (std::map<StepState, int>{{StepState::kSucceeded, 2},
                                                {StepState::kFailed, 1},
                                                {StepState::kSkipped, 1},
                                                {StepState::kPending, 1}}));
  ASSERT_TRUE(store_->CountSteps("missing").ok());
  EXPECT_TRUE(store_->CountSteps("missing")->empty());
}

}  // namespace
}  // namespace crucible::store

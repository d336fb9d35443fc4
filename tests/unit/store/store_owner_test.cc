// Tests of the run owner (schema version 2): migration of a version 1 database, and the owner round trip.
#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "store/store.h"

namespace crucible::store {
namespace {

/// The schema of version 1, as it was released.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE runs (
  id TEXT PRIMARY KEY NOT NULL,
  workflow TEXT NOT NULL,
  file TEXT NOT NULL,
  source_text TEXT NOT NULL,
  source_sha256 TEXT NOT NULL,
  params_json TEXT NOT NULL,
  state TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  ended_at INTEGER NOT NULL DEFAULT 0,
  exit_code INTEGER NOT NULL DEFAULT -1,
  step_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_created ON runs (created_at, id);
CREATE TABLE steps (
  run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  step_id TEXT NOT NULL,
  backend TEXT NOT NULL,
  state TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  attempts INTEGER NOT NULL DEFAULT 0,
  exit_code INTEGER NOT NULL DEFAULT -1,
  PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;
CREATE UNIQUE INDEX steps_by_step_id ON steps (run_id, step_id);
CREATE TABLE attempts (
  run_id TEXT NOT NULL,
  step_idx INTEGER NOT NULL,
  number INTEGER NOT NULL,
  state TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  exit_code INTEGER NOT NULL DEFAULT -1,
  signal INTEGER NOT NULL DEFAULT 0,
  started_at INTEGER NOT NULL DEFAULT 0,
  ended_at INTEGER NOT NULL DEFAULT 0,
  log_path TEXT NOT NULL DEFAULT '',
  log_bytes INTEGER NOT NULL DEFAULT 0,
  log_dropped INTEGER NOT NULL DEFAULT 0,
  handle TEXT NOT NULL DEFAULT '',
  message TEXT NOT NULL DEFAULT '',
  infra INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (run_id, step_idx, number),
  FOREIGN KEY (run_id, step_idx) REFERENCES steps (run_id, idx) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE outputs (
  run_id TEXT NOT NULL,
  step_idx INTEGER NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (run_id, step_idx, key),
  FOREIGN KEY (run_id, step_idx) REFERENCES steps (run_id, idx) ON DELETE CASCADE
) WITHOUT ROWID;
)sql";

class StoreOwnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "crucible-owner-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    state_dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(state_dir_); }
  std::string state_dir_;
};

TEST_F(StoreOwnerTest, VersionOneDatabaseMigratesKeepingItsRuns) {
  {
    SQLite::Database db(state_dir_ + "/crucible.db", SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    db.exec(kSchemaV1);
    db.exec("PRAGMA user_version = 1");
    db.exec("INSERT INTO runs (id, workflow, file, source_text, source_sha256, params_json, state, created_at, "
            "ended_at, exit_code, step_count) VALUES ('old', 'wf', 'wf.toml', 'text', 'sha', '{}', 'succeeded', "
            "10, 20, 0, 1)");
    db.exec("INSERT INTO steps (run_id, idx, step_id, backend, state) VALUES ('old', 0, 'a', 'localproc', "
            "'succeeded')");
  }
  auto opened = Store::Open(state_dir_);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  Store& store = **opened;
  Result<RunRow> run = store.GetRun("old");
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_EQ(run->workflow, "wf");
  EXPECT_EQ(run->state, RunState::kSucceeded);
  EXPECT_EQ(run->source_text, "text");
  EXPECT_EQ(run->owner_pid, 0);
  EXPECT_EQ(run->owner_host, "");
  ASSERT_EQ(store.GetSteps("old")->size(), 1u);
  EXPECT_EQ(store.GetSteps("old")->at(0).step_id, "a");
  SQLite::Database db(state_dir_ + "/crucible.db");
  EXPECT_EQ(db.execAndGet("PRAGMA user_version").getInt(), kSchemaVersion);
}

TEST_F(StoreOwnerTest, OwnerIsWrittenWithTheRunAndUpdated) {
  auto opened = Store::Open(state_dir_);
  ASSERT_TRUE(opened.ok());
  Store& store = **opened;
  RunRow r;
  r.id = "r1";
  r.workflow = "wf";
  r.file = "wf.toml";
  r.owner_pid = 4242;
  r.owner_host = "box";
  r.owner_start = "12345";
  ASSERT_TRUE(store.CreateRun(r, {}).ok());
  Result<RunRow> got = store.GetRun("r1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->owner_pid, 4242);
  EXPECT_EQ(got->owner_host, "box");
  EXPECT_EQ(got->owner_start, "12345");
  ASSERT_TRUE(store.SetRunOwner("r1", 7, "other", "99").ok());
  got = store.GetRun("r1");
  EXPECT_EQ(got->owner_pid, 7);
  EXPECT_EQ(got->owner_host, "other");
  EXPECT_EQ(got->owner_start, "99");
  EXPECT_EQ(store.SetRunOwner("nope", 1, "h", "1").error().code, ErrorCode::kNotFound);
}

}  // namespace
}  // namespace crucible::store

// Store over SQLiteCpp. Every SQLiteCpp exception stops in this file.
#include "store/store.h"

#include <sqlite3.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <cerrno>
#include <filesystem>
#include <string_view>
#include <system_error>

namespace crucible::store {

namespace {

/// The schema, one entry per version: entry i migrates version i to i+1.
const char* const kMigrations[] = {
    // Version 1: the initial schema.
    R"sql(
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
)sql",
    // Version 2: the engine process that owns a running run, for `cancel`.
    R"sql(
ALTER TABLE runs ADD COLUMN owner_pid INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN owner_host TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN owner_start TEXT NOT NULL DEFAULT '';
)sql",
    // Version 3: the owner in a table of its own, with its lease (heartbeat)
    // and fencing token. Every write transaction reads the token and the
    // heartbeat rewrites the row: in `runs`, beside the workflow's text (up to
    // megabytes, in overflow pages), each would read or rewrite all of it.
    R"sql(
CREATE TABLE run_owners (
  run_id TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
  pid INTEGER NOT NULL DEFAULT 0,
  host TEXT NOT NULL DEFAULT '',
  start TEXT NOT NULL DEFAULT '',
  token INTEGER NOT NULL DEFAULT 0,
  heartbeat_at INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO run_owners (run_id, pid, host, start) SELECT id, owner_pid, owner_host, owner_start FROM runs;
ALTER TABLE runs DROP COLUMN owner_pid;
ALTER TABLE runs DROP COLUMN owner_host;
ALTER TABLE runs DROP COLUMN owner_start;
CREATE INDEX runs_by_end ON runs (ended_at);
)sql",
    // Version 4: why a step ended as it did, for `status` long after the run
    // (a failed attempt's message, or why the step could not start).
    R"sql(
ALTER TABLE steps ADD COLUMN message TEXT NOT NULL DEFAULT '';
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == kSchemaVersion,
              "one migration per schema version");

constexpr int kBusyTimeoutMs = 5000;

// The read queries (also handed to tests for EXPLAIN QUERY PLAN).
constexpr const char* kListRunsSql =
    "SELECT id, workflow, file, source_sha256, params_json, state, created_at, ended_at, exit_code, step_count "
    "FROM runs ORDER BY created_at DESC, id DESC LIMIT ?1";
constexpr const char* kGetRunExactSql =
    "SELECT id, workflow, file, source_sha256, params_json, state, created_at, ended_at, exit_code, step_count, "
    "source_text, pid, host, start, token, heartbeat_at FROM runs LEFT JOIN run_owners ON run_id = id WHERE id = ?1";
constexpr const char* kGetRunPrefixSql = "SELECT id FROM runs WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT 11";
constexpr const char* kGetStepsSql =
    "SELECT run_id, idx, step_id, backend, state, reason, attempts, exit_code, message FROM steps WHERE run_id = ?1 "
    "ORDER BY idx";
constexpr const char* kAttemptColumns =
    "SELECT run_id, step_idx, number, state, reason, exit_code, signal, started_at, ended_at, log_path, log_bytes, "
    "log_dropped, handle, message, infra FROM attempts ";
const std::string kGetAttemptsSql = std::string(kAttemptColumns) + "WHERE run_id = ?1 ORDER BY step_idx, number";
const std::string kGetStepAttemptsSql =
    std::string(kAttemptColumns) + "WHERE run_id = ?1 AND step_idx = ?2 ORDER BY number";
constexpr const char* kGetOutputsSql =
    "SELECT o.step_idx, s.step_id, o.key, o.value FROM outputs o JOIN steps s ON s.run_id = o.run_id AND "
    "s.idx = o.step_idx WHERE o.run_id = ?1 ORDER BY o.step_idx, o.key";

/// Turns a SQLiteCpp exception into an Error naming the database.
Error FromException(const std::string& db_path, const std::string& doing, const SQLite::Exception& e) {
  int code = e.getErrorCode() & 0xff;
  std::string what = db_path + ": " + doing + ": " + e.what();
  switch (code) {
    case SQLITE_FULL:
      return MakeError(ErrorCode::kStorageFull, db_path + ": " + doing + ": database or disk is full (" +
                                                    e.what() + ")");
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return MakeError(ErrorCode::kBusy, what + " (another crucible-engine holds the database)");
    case SQLITE_NOTADB:
      return MakeError(ErrorCode::kIo, db_path + ": not a crucible-engine database (" + std::string(e.what()) + ")");
    case SQLITE_CONSTRAINT:
      if (e.getExtendedErrorCode() == SQLITE_CONSTRAINT_PRIMARYKEY ||
          e.getExtendedErrorCode() == SQLITE_CONSTRAINT_UNIQUE) {
        return MakeError(ErrorCode::kAlreadyExists, what);
      }
      return MakeError(ErrorCode::kInvalidArgument, what);
    case SQLITE_IOERR:
      if (e.getExtendedErrorCode() == SQLITE_IOERR_WRITE || e.getExtendedErrorCode() == SQLITE_IOERR_FSYNC) {
        // ENOSPC often surfaces as a write error; say "full" when errno says so.
        if (errno == ENOSPC) {
          return MakeError(ErrorCode::kStorageFull, db_path + ": " + doing + ": no space left on device (" +
                                                        e.what() + ")");
        }
      }
      return MakeError(ErrorCode::kIo, what);
    default:
      return MakeError(ErrorCode::kIo, what);
  }
}

/// Resets a cached statement on scope exit, so it holds no lock between uses.
class StatementUse {
 public:
  explicit StatementUse(SQLite::Statement& st) : st_(st) {
    st_.tryReset();
    st_.clearBindings();
  }
  ~StatementUse() { st_.tryReset(); }
  StatementUse(const StatementUse&) = delete;
  StatementUse& operator=(const StatementUse&) = delete;
  SQLite::Statement* operator->() { return &st_; }
  SQLite::Statement& operator*() { return st_; }

 private:
  SQLite::Statement& st_;
};

std::string Text(SQLite::Statement& st, int col) { return st.getColumn(col).getString(); }

RunRow ReadRunSummary(SQLite::Statement& st) {
  RunRow r;
  r.id = Text(st, 0);
  r.workflow = Text(st, 1);
  r.file = Text(st, 2);
  r.source_sha256 = Text(st, 3);
  r.params_json = Text(st, 4);
  r.state = ParseRunState(Text(st, 5)).value_or(RunState::kInterrupted);
  r.created_at_ms = st.getColumn(6).getInt64();
  r.ended_at_ms = st.getColumn(7).getInt64();
  r.exit_code = st.getColumn(8).getInt();
  r.step_count = st.getColumn(9).getInt();
  return r;
}

AttemptRow ReadAttempt(SQLite::Statement& st) {
  AttemptRow a;
  a.run_id = Text(st, 0);
  a.step_idx = st.getColumn(1).getInt();
  a.number = st.getColumn(2).getInt();
  a.state = Text(st, 3);
  a.reason = Text(st, 4);
  a.exit_code = st.getColumn(5).getInt();
  a.signal = st.getColumn(6).getInt();
  a.started_at_ms = st.getColumn(7).getInt64();
  a.ended_at_ms = st.getColumn(8).getInt64();
  a.log_path = Text(st, 9);
  a.log_bytes = st.getColumn(10).getInt64();
  a.log_dropped = st.getColumn(11).getInt64();
  a.handle = Text(st, 12);
  a.message = Text(st, 13);
  a.infra = st.getColumn(14).getInt() != 0;
  return a;
}

}  // namespace

const char* ToString(RunState s) {
  switch (s) {
    case RunState::kRunning: return "running";
    case RunState::kSucceeded: return "succeeded";
    case RunState::kFailed: return "failed";
    case RunState::kCancelled: return "cancelled";
    case RunState::kInterrupted: return "interrupted";
  }
  return "unknown";
}

const char* ToString(StepState s) {
  switch (s) {
    case StepState::kPending: return "pending";
    case StepState::kRunning: return "running";
    case StepState::kSucceeded: return "succeeded";
    case StepState::kFailed: return "failed";
    case StepState::kSkipped: return "skipped";
    case StepState::kCancelled: return "cancelled";
  }
  return "unknown";
}

std::optional<RunState> ParseRunState(const std::string& s) {
  for (RunState v : {RunState::kRunning, RunState::kSucceeded, RunState::kFailed, RunState::kCancelled,
                     RunState::kInterrupted}) {
    if (s == ToString(v)) return v;
  }
  return std::nullopt;
}

std::optional<StepState> ParseStepState(const std::string& s) {
  for (StepState v : {StepState::kPending, StepState::kRunning, StepState::kSucceeded, StepState::kFailed,
                      StepState::kSkipped, StepState::kCancelled}) {
    if (s == ToString(v)) return v;
  }
  return std::nullopt;
}

/// The connection and its cached statements.
struct Store::Impl {
  explicit Impl(const std::string& path)
      : db(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE | SQLite::OPEN_NOMUTEX, kBusyTimeoutMs) {}

  /// Prepares the cached statements (after migration: the tables exist).
  void Prepare() {
    insert_run = std::make_unique<SQLite::Statement>(
        db,
        "INSERT INTO runs (id, workflow, file, source_text, source_sha256, params_json, state, created_at, "
        "ended_at, exit_code, step_count) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
    insert_owner = std::make_unique<SQLite::Statement>(
        db, "INSERT INTO run_owners (run_id, pid, host, start, token, heartbeat_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    check_owner = std::make_unique<SQLite::Statement>(db, "SELECT token, pid, host FROM run_owners WHERE run_id = ?1");
    heartbeat = std::make_unique<SQLite::Statement>(db, "UPDATE run_owners SET heartbeat_at = ?2 WHERE run_id = ?1");
    insert_step = std::make_unique<SQLite::Statement>(
        db,
        "INSERT INTO steps (run_id, idx, step_id, backend, state, reason, attempts, exit_code) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    insert_attempt = std::make_unique<SQLite::Statement>(
        db,
        "INSERT INTO attempts (run_id, step_idx, number, state, reason, exit_code, signal, started_at, ended_at, "
        "log_path, log_bytes, log_dropped, handle, message, infra) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)");
    set_handle = std::make_unique<SQLite::Statement>(
        db, "UPDATE attempts SET handle = ?4 WHERE run_id = ?1 AND step_idx = ?2 AND number = ?3");
    finish_attempt = std::make_unique<SQLite::Statement>(
        db,
        "UPDATE attempts SET state = ?4, reason = ?5, exit_code = ?6, signal = ?7, ended_at = ?8, "
        "log_bytes = ?9, log_dropped = ?10, message = ?11, infra = ?12, "
        "started_at = CASE WHEN ?13 != 0 THEN ?13 ELSE started_at END, "
        "log_path = CASE WHEN ?14 != '' THEN ?14 ELSE log_path END, "
        "handle = CASE WHEN ?15 != '' THEN ?15 ELSE handle END "
        "WHERE run_id = ?1 AND step_idx = ?2 AND number = ?3");
    set_step = std::make_unique<SQLite::Statement>(
        db, "UPDATE steps SET state = ?3, reason = ?4, attempts = ?5, exit_code = ?6, message = ?7 "
            "WHERE run_id = ?1 AND idx = ?2");
    put_output = std::make_unique<SQLite::Statement>(
        db, "INSERT OR REPLACE INTO outputs (run_id, step_idx, key, value) VALUES (?1, ?2, ?3, ?4)");
    finish_run = std::make_unique<SQLite::Statement>(
        db, "UPDATE runs SET state = ?2, ended_at = ?3, exit_code = ?4 WHERE id = ?1");
    list_runs = std::make_unique<SQLite::Statement>(db, kListRunsSql);
    get_run_exact = std::make_unique<SQLite::Statement>(db, kGetRunExactSql);
    get_run_prefix = std::make_unique<SQLite::Statement>(db, kGetRunPrefixSql);
    get_steps = std::make_unique<SQLite::Statement>(db, kGetStepsSql);
    get_attempts = std::make_unique<SQLite::Statement>(db, kGetAttemptsSql);
    get_step_attempts = std::make_unique<SQLite::Statement>(db, kGetStepAttemptsSql);
    get_outputs = std::make_unique<SQLite::Statement>(db, kGetOutputsSql);
  }

  bool InTransaction() const { return sqlite3_get_autocommit(db.getHandle()) == 0; }

  void RollbackQuietly() {
    if (InTransaction()) db.tryExec("ROLLBACK");
  }

  SQLite::Database db;
  bool in_tx = false;              ///< inside Store::Transaction()
  std::optional<Error> tx_error;   ///< the first failed write inside it
  std::unique_ptr<SQLite::Statement> insert_run, insert_owner, check_owner, heartbeat, insert_step, insert_attempt, set_handle, finish_attempt, set_step,
      put_output, finish_run, list_runs, get_run_exact, get_run_prefix, get_steps, get_attempts, get_step_attempts,
      get_outputs;
};

namespace {

/// Runs one write: inside Store::Transaction() it joins it, otherwise it is
/// its own BEGIN IMMEDIATE transaction. `body` may throw SQLite::Exception and
/// returns a Status for logical failures (row not found).
template <typename ImplT, typename Body>
Status Write(ImplT& impl, const std::string& db_path, const char* doing, Body&& body) {
  if (impl.in_tx && impl.tx_error) return *impl.tx_error;
  bool own = !impl.in_tx;
  try {
    if (own) impl.db.exec("BEGIN IMMEDIATE");
    Status s = body();
    if (own) {
      if (s.ok()) {
        impl.db.exec("COMMIT");
      } else {
        impl.RollbackQuietly();
      }
    } else if (!s.ok()) {
      impl.tx_error = s.error();
    }
    return s;
  } catch (const SQLite::Exception& e) {
    Error err = FromException(db_path, doing, e);
    if (own) {
      impl.RollbackQuietly();
    } else {
      impl.tx_error = err;
    }
    return err;
  }
}

/// Runs one read, turning exceptions into errors.
template <typename T, typename Body>
Result<T> Read(const std::string& db_path, const char* doing, Body&& body) {
  try {
    return body();
  } catch (const SQLite::Exception& e) {
    return FromException(db_path, doing, e);
  }
}

Status NotFoundUnless(int changes, const std::string& what) {
  if (changes == 0) return MakeError(ErrorCode::kNotFound, "no " + what);
  return Ok{};
}

std::string AttemptName(const std::string& run_id, int step_idx, int number) {
  return "attempt " + std::to_string(number) + " of step " + std::to_string(step_idx) + " in run " + run_id;
}

}  // namespace

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Store::~Store() {
  if (impl_) impl_->RollbackQuietly();
}

Result<std::unique_ptr<Store>> Store::Open(const std::string& state_dir) {
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) {
    return MakeError(ErrorCode::kIo, "cannot create state directory " + state_dir + ": " + ec.message());
  }
  std::string db_path = (std::filesystem::path(state_dir) / "crucible.db").string();
  std::unique_ptr<Impl> impl;
  try {
    impl = std::make_unique<Impl>(db_path);
  } catch (const SQLite::Exception& e) {
    return FromException(db_path, "cannot open", e);
  }
  const char* doing = "reading the schema version";
  try {
    // Reading the version first also tells a file that is not a database.
    int version = impl->db.execAndGet("PRAGMA user_version").getInt();
    if (version > kSchemaVersion) {
      return MakeError(ErrorCode::kVersion, db_path + ": created by a newer crucible-engine (schema " +
                                                std::to_string(version) + ", this one knows up to " +
                                                std::to_string(kSchemaVersion) + ")");
    }
    doing = "setting up the connection";
    impl->db.exec("PRAGMA journal_mode = WAL");
    impl->db.exec("PRAGMA synchronous = NORMAL");
    impl->db.exec("PRAGMA foreign_keys = ON");
    doing = "migrating the schema";
    // A current database needs no write lock: readers (status, logs) never wait behind a running engine here.
    while (version < kSchemaVersion) {
      impl->db.exec("BEGIN IMMEDIATE");
      // Read again under the write lock: another process may have migrated meanwhile.
      int current = impl->db.execAndGet("PRAGMA user_version").getInt();
      if (current > kSchemaVersion) {
        impl->RollbackQuietly();
        return MakeError(ErrorCode::kVersion, db_path + ": created by a newer crucible-engine (schema " +
                                                  std::to_string(current) + ", this one knows up to " +
                                                  std::to_string(kSchemaVersion) + ")");
      }
      if (current == kSchemaVersion) {
        impl->db.exec("COMMIT");
        break;
      }
      impl->db.exec(kMigrations[current]);
      impl->db.exec("PRAGMA user_version = " + std::to_string(current + 1));
      impl->db.exec("COMMIT");
      version = current + 1;
    }
    doing = "preparing statements";
    impl->Prepare();
  } catch (const SQLite::Exception& e) {
    impl->RollbackQuietly();
    return FromException(db_path, doing, e);
  }
  auto store = std::unique_ptr<Store>(new Store(std::move(impl)));
  store->state_dir_ = state_dir;
  store->db_path_ = db_path;
  return store;
}

Status Store::Transaction(const std::function<Status()>& body) {
  CRUCIBLE_CHECK(!impl_->in_tx, "Store::Transaction is not reentrant");
  try {
    impl_->db.exec("BEGIN IMMEDIATE");
  } catch (const SQLite::Exception& e) {
    return FromException(db_path_, "beginning a transaction", e);
  }
  impl_->in_tx = true;
  impl_->tx_error.reset();
  Status s = body();
  impl_->in_tx = false;
  std::optional<Error> write_error = std::move(impl_->tx_error);
  impl_->tx_error.reset();
  if (s.ok() && write_error) s = *write_error;
  if (!s.ok()) {
    impl_->RollbackQuietly();
    return s;
  }
  try {
    impl_->db.exec("COMMIT");
  } catch (const SQLite::Exception& e) {
    impl_->RollbackQuietly();
    return FromException(db_path_, "committing", e);
  }
  return Ok{};
}

Status Store::ExecForTesting(const std::string& sql) {
  try {
    impl_->db.exec(sql);
    return Ok{};
  } catch (const SQLite::Exception& e) {
    return FromException(db_path_, "executing", e);
  }
}

std::vector<std::string> Store::ReadQueries() {
  return {kListRunsSql, kGetRunExactSql, kGetRunPrefixSql, kGetStepsSql, kGetAttemptsSql, kGetStepAttemptsSql,
          kGetOutputsSql};
}

Status Store::CreateRun(const RunRow& run, const std::vector<StepRow>& steps) {
  return Write(*impl_, db_path_, "creating a run", [&]() -> Status {
    {
      StatementUse st(*impl_->insert_run);
      st->bind(1, run.id);
      st->bind(2, run.workflow);
      st->bind(3, run.file);
      st->bind(4, run.source_text);
      st->bind(5, run.source_sha256);
      st->bind(6, run.params_json);
      st->bind(7, ToString(run.state));
      st->bind(8, run.created_at_ms);
      st->bind(9, run.ended_at_ms);
      st->bind(10, run.exit_code);
      st->bind(11, run.step_count != 0 ? run.step_count : static_cast<int>(steps.size()));
      st->exec();
    }
    {
      StatementUse st(*impl_->insert_owner);
      st->bind(1, run.id);
      st->bind(2, run.owner_pid);
      st->bind(3, run.owner_host);
      st->bind(4, run.owner_start);
      st->bind(5, run.owner_token);
      st->bind(6, run.heartbeat_at_ms);
      st->exec();
    }
    for (const StepRow& step : steps) {
      StatementUse st(*impl_->insert_step);
      st->bind(1, run.id);
      st->bind(2, step.idx);
      st->bind(3, step.step_id);
      st->bind(4, step.backend);
      st->bind(5, ToString(step.state));
      st->bind(6, step.reason);
      st->bind(7, step.attempts);
      st->bind(8, step.exit_code);
      st->exec();
    }
    return Ok{};
  });
}

Status Store::InsertAttempt(const AttemptRow& a) {
  return Write(*impl_, db_path_, "recording an attempt", [&]() -> Status {
    StatementUse st(*impl_->insert_attempt);
    st->bind(1, a.run_id);
    st->bind(2, a.step_idx);
    st->bind(3, a.number);
    st->bind(4, a.state);
    st->bind(5, a.reason);
    st->bind(6, a.exit_code);
    st->bind(7, a.signal);
    st->bind(8, a.started_at_ms);
    st->bind(9, a.ended_at_ms);
    st->bind(10, a.log_path);
    st->bind(11, a.log_bytes);
    st->bind(12, a.log_dropped);
    st->bind(13, a.handle);
    st->bind(14, a.message);
    st->bind(15, a.infra ? 1 : 0);
    st->exec();
    return Ok{};
  });
}

Status Store::SetAttemptHandle(const std::string& run_id, int step_idx, int number, const std::string& handle) {
  return Write(*impl_, db_path_, "recording an attempt handle", [&]() -> Status {
    StatementUse st(*impl_->set_handle);
    st->bind(1, run_id);
    st->bind(2, step_idx);
    st->bind(3, number);
    st->bind(4, handle);
    return NotFoundUnless(st->exec(), AttemptName(run_id, step_idx, number));
  });
}

Status Store::FinishAttempt(const AttemptRow& a) {
  return Write(*impl_, db_path_, "finishing an attempt", [&]() -> Status {
    StatementUse st(*impl_->finish_attempt);
    st->bind(1, a.run_id);
    st->bind(2, a.step_idx);
    st->bind(3, a.number);
    st->bind(4, a.state);
    st->bind(5, a.reason);
    st->bind(6, a.exit_code);
    st->bind(7, a.signal);
    st->bind(8, a.ended_at_ms);
    st->bind(9, a.log_bytes);
    st->bind(10, a.log_dropped);
    st->bind(11, a.message);
    st->bind(12, a.infra ? 1 : 0);
    st->bind(13, a.started_at_ms);
    st->bind(14, a.log_path);
    st->bind(15, a.handle);
    return NotFoundUnless(st->exec(), AttemptName(a.run_id, a.step_idx, a.number));
  });
}

Status Store::SetStepState(const StepRow& step) {
  return Write(*impl_, db_path_, "recording a step state", [&]() -> Status {
    StatementUse st(*impl_->set_step);
    st->bind(1, step.run_id);
    st->bind(2, step.idx);
    st->bind(3, ToString(step.state));
    st->bind(4, step.reason);
    st->bind(5, step.attempts);
    st->bind(6, step.exit_code);
    st->bind(7, step.message);
    return NotFoundUnless(st->exec(), "step " + std::to_string(step.idx) + " in run " + step.run_id);
  });
}

Status Store::PutOutputs(const std::string& run_id, int step_idx,
                         const std::vector<std::pair<std::string, std::string>>& outputs) {
  return Write(*impl_, db_path_, "recording outputs", [&]() -> Status {
    for (const auto& [key, value] : outputs) {
      StatementUse st(*impl_->put_output);
      st->bind(1, run_id);
      st->bind(2, step_idx);
      st->bind(3, key);
      st->bind(4, value);
      st->exec();
    }
    return Ok{};
  });
}

Status Store::FinishRun(const std::string& run_id, RunState state, int64_t ended_at_ms, int exit_code) {
  return Write(*impl_, db_path_, "finishing a run", [&]() -> Status {
    StatementUse st(*impl_->finish_run);
    st->bind(1, run_id);
    st->bind(2, ToString(state));
    st->bind(3, ended_at_ms);
    st->bind(4, exit_code);
    return NotFoundUnless(st->exec(), "run \"" + run_id + "\" in " + db_path_);
  });
}

Status Store::SetRunOwner(const std::string& run_id, int64_t pid, const std::string& host,
                          const std::string& start) {
  return Write(*impl_, db_path_, "recording a run's owner", [&]() -> Status {
    SQLite::Statement st(impl_->db,
                         "UPDATE run_owners SET pid = ?2, host = ?3, start = ?4 WHERE run_id = ?1");
    st.bind(1, run_id);
    st.bind(2, pid);
    st.bind(3, host);
    st.bind(4, start);
    return NotFoundUnless(st.exec(), "run \"" + run_id + "\" in " + db_path_);
  });
}

Result<int64_t> Store::TakeOver(const std::string& run_id, const OwnerChange& change) {
  // One UPDATE, conditional on the token: it is its own transaction.
  Status s = Write(*impl_, db_path_, "taking over a run", [&]() -> Status {
    SQLite::Statement st(impl_->db,
                         "UPDATE run_owners SET pid = ?3, host = ?4, start = ?5, token = token + 1, "
                         "heartbeat_at = ?6 WHERE run_id = ?1 AND token = ?2");
    st.bind(1, run_id);
    st.bind(2, change.expect_token);
    st.bind(3, change.pid);
    st.bind(4, change.host);
    st.bind(5, change.start);
    st.bind(6, change.now_ms);
    if (st.exec() == 0) {
      return MakeError(ErrorCode::kBusy, "run " + run_id + " changed owner meanwhile; look at it again");
    }
    return Ok{};
  });
  if (!s.ok()) return s.error();
  return change.expect_token + 1;
}

Status Store::CheckOwner(const std::string& run_id, int64_t token) {
  return Write(*impl_, db_path_, "checking the run's owner", [&]() -> Status {
    StatementUse st(*impl_->check_owner);
    st->bind(1, run_id);
    if (!st->executeStep()) return MakeError(ErrorCode::kNotFound, "no run \"" + run_id + "\" in " + db_path_);
    int64_t now = st->getColumn(0).getInt64();
    if (now == token) return Ok{};
    return MakeError(ErrorCode::kFenced, "run " + run_id + " was taken over by pid " +
                                             std::to_string(st->getColumn(1).getInt64()) + " on host \"" +
                                             Text(*st, 2) + "\" (token " + std::to_string(now) + ", this engine's " +
                                             std::to_string(token) + "); this engine stops without writing");
  });
}

Status Store::Heartbeat(const std::string& run_id, int64_t now_ms) {
  return Write(*impl_, db_path_, "recording a heartbeat", [&]() -> Status {
    StatementUse st(*impl_->heartbeat);
    st->bind(1, run_id);
    st->bind(2, now_ms);
    return NotFoundUnless(st->exec(), "owner of run \"" + run_id + "\" in " + db_path_);
  });
}

Status Store::ClearOutputs(const std::string& run_id, int step_idx) {
  return Write(*impl_, db_path_, "clearing outputs", [&]() -> Status {
    SQLite::Statement st(impl_->db, "DELETE FROM outputs WHERE run_id = ?1 AND step_idx = ?2");
    st.bind(1, run_id);
    st.bind(2, step_idx);
    st.exec();
    return Ok{};
  });
}

Result<std::vector<RunRow>> Store::ListRuns(int limit) const {
  return Read<std::vector<RunRow>>(db_path_, "listing runs", [&]() -> Result<std::vector<RunRow>> {
    std::vector<RunRow> out;
    StatementUse st(*impl_->list_runs);
    st->bind(1, limit < 0 ? int64_t{-1} : int64_t{limit});
    while (st->executeStep()) out.push_back(ReadRunSummary(*st));
    return out;
  });
}

Result<RunRow> Store::GetRun(const std::string& id_or_prefix) const {
  return Read<RunRow>(db_path_, "reading a run", [&]() -> Result<RunRow> {
    auto exact = [&](const std::string& id) -> std::optional<RunRow> {
      StatementUse st(*impl_->get_run_exact);
      st->bind(1, id);
      if (!st->executeStep()) return std::nullopt;
      RunRow r = ReadRunSummary(*st);
      r.source_text = Text(*st, 10);
      r.owner_pid = st->getColumn(11).getInt64();
      r.owner_host = Text(*st, 12);
      r.owner_start = Text(*st, 13);
      r.owner_token = st->getColumn(14).getInt64();
      r.heartbeat_at_ms = st->getColumn(15).getInt64();
      return r;
    };
    if (id_or_prefix.empty()) return MakeError(ErrorCode::kInvalidArgument, "empty run id");
    if (auto r = exact(id_or_prefix)) return *r;
    std::vector<std::string> candidates;
    {
      StatementUse st(*impl_->get_run_prefix);
      st->bind(1, id_or_prefix);
      st->bind(2, id_or_prefix + "\xff");
      while (st->executeStep()) candidates.push_back(Text(*st, 0));
    }
    if (candidates.empty()) {
      return MakeError(ErrorCode::kNotFound, "no run \"" + id_or_prefix + "\" in " + db_path_);
    }
    if (candidates.size() > 1) {
      std::string list;
      for (size_t i = 0; i < candidates.size() && i < 10; ++i) list += (i ? ", " : "") + candidates[i];
      if (candidates.size() > 10) list += ", ...";
      return MakeError(ErrorCode::kInvalidArgument,
                       "run prefix \"" + id_or_prefix + "\" is ambiguous: it matches " + list);
    }
    if (auto r = exact(candidates[0])) return *r;
    return MakeError(ErrorCode::kNotFound, "no run \"" + id_or_prefix + "\" in " + db_path_);
  });
}

Result<std::vector<StepRow>> Store::GetSteps(const std::string& run_id) const {
  return Read<std::vector<StepRow>>(db_path_, "reading steps", [&]() -> Result<std::vector<StepRow>> {
    std::vector<StepRow> out;
    StatementUse st(*impl_->get_steps);
    st->bind(1, run_id);
    while (st->executeStep()) {
      StepRow s;
      s.run_id = Text(*st, 0);
      s.idx = st->getColumn(1).getInt();
      s.step_id = Text(*st, 2);
      s.backend = Text(*st, 3);
      s.state = ParseStepState(Text(*st, 4)).value_or(StepState::kPending);
      s.reason = Text(*st, 5);
      s.attempts = st->getColumn(6).getInt();
      s.exit_code = st->getColumn(7).getInt();
      s.message = Text(*st, 8);
      out.push_back(std::move(s));
    }
    return out;
  });
}

Result<std::vector<AttemptRow>> Store::GetAttempts(const std::string& run_id, std::optional<int> step_idx) const {
  return Read<std::vector<AttemptRow>>(db_path_, "reading attempts", [&]() -> Result<std::vector<AttemptRow>> {
    std::vector<AttemptRow> out;
    StatementUse st(step_idx ? *impl_->get_step_attempts : *impl_->get_attempts);
    st->bind(1, run_id);
    if (step_idx) st->bind(2, *step_idx);
    while (st->executeStep()) out.push_back(ReadAttempt(*st));
    return out;
  });
}

Result<std::vector<OutputRow>> Store::GetOutputs(const std::string& run_id) const {
  return Read<std::vector<OutputRow>>(db_path_, "reading outputs", [&]() -> Result<std::vector<OutputRow>> {
    std::vector<OutputRow> out;
    StatementUse st(*impl_->get_outputs);
    st->bind(1, run_id);
    while (st->executeStep()) {
      OutputRow o;
      o.step_idx = st->getColumn(0).getInt();
      o.step_id = Text(*st, 1);
      o.key = Text(*st, 2);
      o.value = Text(*st, 3);
      out.push_back(std::move(o));
    }
    return out;
  });
}


namespace {

// Pruning (rare: statements prepared per call, not cached).
constexpr const char* kListFinishedBeforeSql =
    "SELECT id, workflow, file, source_sha256, params_json, state, created_at, ended_at, exit_code, step_count "
    "FROM runs WHERE state IN ('succeeded', 'failed', 'cancelled') AND ended_at > 0 AND ended_at < ?1 "
    "ORDER BY ended_at, id";
constexpr const char* kDeleteRunSql = "DELETE FROM runs WHERE id = ?1";
// For `runs`: counting in SQLite instead of reading every step row back.
constexpr const char* kCountStepsSql = "SELECT state, count(*) FROM steps WHERE run_id = ?1 GROUP BY state";

}  // namespace

Result<std::vector<std::pair<StepState, int>>> Store::CountSteps(const std::string& run_id) const {
  using Counts = std::vector<std::pair<StepState, int>>;
  return Read<Counts>(db_path_, "counting steps", [&]() -> Result<Counts> {
    Counts out;
    SQLite::Statement st(impl_->db, kCountStepsSql);
    st.bind(1, run_id);
    while (st.executeStep()) {
      out.emplace_back(ParseStepState(Text(st, 0)).value_or(StepState::kPending), st.getColumn(1).getInt());
    }
    return out;
  });
}

Result<std::vector<RunRow>> Store::ListFinishedBefore(int64_t ended_before_ms) const {
  return Read<std::vector<RunRow>>(db_path_, "listing finished runs", [&]() -> Result<std::vector<RunRow>> {
    std::vector<RunRow> out;
    SQLite::Statement st(impl_->db, kListFinishedBeforeSql);
    st.bind(1, ended_before_ms);
    while (st.executeStep()) out.push_back(ReadRunSummary(st));
    return out;
  });
}

Status Store::DeleteRun(const std::string& run_id) {
  return Write(*impl_, db_path_, "deleting a run", [&]() -> Status {
    // The cascades from runs to steps, attempts and outputs need foreign keys on (set in Open()).
    SQLite::Statement st(impl_->db, kDeleteRunSql);
    st.bind(1, run_id);
    return NotFoundUnless(st.exec(), "run \"" + run_id + "\" in " + db_path_);
  });
}

Status Store::Compact() {
  CRUCIBLE_CHECK(!impl_->in_tx, "Store::Compact inside a transaction");
  const char* doing = "compacting (VACUUM)";
  try {
    // VACUUM rewrites the file through the WAL; the checkpoint copies it back and
    // truncates both the database and the WAL.
    impl_->db.exec("VACUUM");
    doing = "compacting (WAL checkpoint)";
    SQLite::Statement st(impl_->db, "PRAGMA wal_checkpoint(TRUNCATE)");
    if (st.executeStep() && st.getColumn(0).getInt() != 0) {
      return MakeError(ErrorCode::kBusy, db_path_ + ": " + doing +
                                             ": another crucible-engine is reading the database; the WAL "
                                             "is truncated when it finishes");
    }
    return Ok{};
  } catch (const SQLite::Exception& e) {
    return FromException(db_path_, doing, e);
  }
}

}  // namespace crucible::store

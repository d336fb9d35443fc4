// The `prune` verb: deletes finished runs older than a duration, their rows,
// log directories and work directories, then compacts the database.
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <system_error>

#include "cli/commands.h"
#include "cli/run_view.h"
#include "cli/views.h"
#include "common/units.h"
#include "scheduler/scheduler.h"
#include "scheduler/step_io.h"
#include "store/store.h"

namespace crucible::cli {
namespace {

namespace fs = std::filesystem;

/// 3565158 -> "3.4 MiB".
std::string FormatBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  size_t u = 0;
  while (v >= 1024.0 && u + 1 < std::size(kUnits)) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%" PRIu64 " B", bytes);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  }
  return buf;
}

/// The bytes of the regular files under `dir` (0 when it does not exist).
uint64_t TreeBytes(const fs::path& dir) {
  std::error_code ec;
  uint64_t total = 0;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code fec;
    if (it->is_regular_file(fec)) {
      uint64_t n = it->file_size(fec);
      if (!fec) total += n;
    }
  }
  return total;
}

uint64_t FileBytes(const std::string& path) {
  std::error_code ec;
  uint64_t n = fs::file_size(path, ec);
  return ec ? 0 : n;
}

/// The database and its WAL.
uint64_t DatabaseBytes(const store::Store& store) {
  return FileBytes(store.db_path()) + FileBytes(store.db_path() + "-wal");
}

/// One run to prune and where its files are.
struct Doomed {
  store::RunRow run;
  fs::path logs;
  fs::path work;
  uint64_t log_bytes = 0;
  uint64_t work_bytes = 0;
};

int Fail(const Error& e) {
  std::cerr << "crucible-engine: error: " << e.message << "\n";
  return kExitFailed;
}

}  // namespace

int CmdPrune(const GlobalOptions& g, const PruneArgs& a) {
  std::optional<int64_t> age_ms = ParseDuration(a.older_than);
  if (!age_ms) {
    std::cerr << "crucible-engine: error: --older-than wants a duration like 30d, 12h or 90m, got \""
              << a.older_than << "\"\n";
    return kExitUsage;
  }
  Result<std::unique_ptr<store::Store>> opened = OpenExistingStore(g.state_dir);
  if (!opened.ok()) {
    if (opened.error().code != ErrorCode::kNotFound) return Fail(opened.error());
    std::cout << (a.dry_run ? "would prune 0 runs\n" : "pruned 0 runs\n");
    return kExitOk;
  }
  store::Store& store = **opened;
  scheduler::SystemClock clock;
  int64_t now = clock.NowMs();
  Result<std::vector<store::RunRow>> runs = store.ListFinishedBefore(now - *age_ms);
  if (!runs.ok()) return Fail(runs.error());

  std::vector<Doomed> doomed;
  uint64_t log_bytes = 0;
  uint64_t work_bytes = 0;
  for (store::RunRow& r : *runs) {
    Doomed d;
    // SafeName never yields a '/' or "..": the directories stay inside the state directory.
    std::string safe = scheduler::SafeName(r.id);
    d.logs = fs::path(g.state_dir) / "logs" / safe;
    d.work = fs::path(g.state_dir) / "work" / safe;
    d.log_bytes = TreeBytes(d.logs);
    d.work_bytes = TreeBytes(d.work);
    log_bytes += d.log_bytes;
    work_bytes += d.work_bytes;
    d.run = std::move(r);
    doomed.push_back(std::move(d));
  }

  auto summary = [&](const char* verb) {
    std::string s = std::string(verb) + " " + std::to_string(doomed.size()) + (doomed.size() == 1 ? " run" : " runs");
    if (!doomed.empty()) s += ", " + FormatBytes(log_bytes) + " of logs";
    if (work_bytes > 0) s += ", " + FormatBytes(work_bytes) + " of work directories";
    return s;
  };

  if (a.dry_run) {
    std::vector<std::vector<std::string>> rows;
    if (!doomed.empty()) rows.push_back({"RUN", "WORKFLOW", "STATE", "ENDED", "LOGS"});
    for (const Doomed& d : doomed) {
      rows.push_back({d.run.id, d.run.workflow, store::ToString(d.run.state),
                      FormatDuration((now - d.run.ended_at_ms) / 1000 * 1000) + " ago", FormatBytes(d.log_bytes + d.work_bytes)});
    }
    std::cout << FormatTable(rows) << summary("would prune") << "\n" << std::flush;
    return kExitOk;
  }
  if (doomed.empty()) {
    std::cout << summary("pruned") << "\n" << std::flush;
    return kExitOk;
  }

  // Rows first, in one transaction: files without rows are harmless, rows
  // pointing at deleted logs are not.
  uint64_t db_before = DatabaseBytes(store);
  Status deleted = store.Transaction([&]() -> Status {
    for (const Doomed& d : doomed) {
      if (Status s = store.DeleteRun(d.run.id); !s.ok()) return s;
    }
    return Ok{};
  });
  if (!deleted.ok()) return Fail(deleted.error());

  int exit_code = kExitOk;
  for (const Doomed& d : doomed) {
    for (const fs::path& dir : {d.logs, d.work}) {
      std::error_code ec;
      fs::remove_all(dir, ec);
      if (ec) {
        std::cerr << "crucible-engine: warning: cannot remove " << dir.string() << ": " << ec.message() << "\n";
        exit_code = kExitFailed;
      }
    }
  }
  Status compacted = store.Compact();
  if (!compacted.ok()) {
    std::cerr << "crucible-engine: warning: " << compacted.error().message << "\n";
  }
  uint64_t db_after = DatabaseBytes(store);
  std::cout << summary("pruned") << "; database " << FormatBytes(db_before) << " -> " << FormatBytes(db_after)
            << "\n"
            << std::flush;
  return exit_code;
}

}  // namespace crucible::cli

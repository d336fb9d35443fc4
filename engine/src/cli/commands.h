// The verbs of the command line, one function each, called by RunCli once
// CLI11 has parsed argv. Each returns the process exit code and writes to
// std::cout / std::cerr.
#ifndef CRUCIBLE_CLI_COMMANDS_H_
#define CRUCIBLE_CLI_COMMANDS_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace crucible::cli {

/// Exit codes of the command line (the scheduler's ExitCode plus usage).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitBackend = 3;

/// What every verb shares.
struct GlobalOptions {
  std::string state_dir;  ///< absolute
};

/// `run`, `validate` and `graph`.
struct WorkflowArgs {
  std::string file;
  std::optional<std::string> backend;
  std::vector<std::pair<std::string, std::string>> params;
  int max_parallel = 0;
  bool json = false;
  bool keep_work = false;
};

struct LogsArgs {
  std::string run;
  std::string step;  ///< "" for every step
  int attempt = 0;   ///< 0: the last
  bool follow = false;
};

/// `prune`.
struct PruneArgs {
  std::string older_than;  ///< a duration: "30d", "12h"
  bool dry_run = false;
};

/// `retry`.
struct RetryArgs {
  std::string run;
  int max_parallel = 0;
  bool json = false;
  bool keep_work = false;
};

/// `resume`.
struct ResumeArgs {
  std::string run;
  bool force = false;  ///< take over an owner whose lease expired
  int max_parallel = 0;
  bool json = false;
  bool keep_work = false;
};

int CmdRun(const GlobalOptions& g, const WorkflowArgs& a);
/// Continues a run whose engine died, from the database and the workflow
/// stored with it: finished steps are kept, running attempts followed.
int CmdResume(const GlobalOptions& g, const ResumeArgs& a);
/// Runs again what failed, was skipped or was cancelled in a finished run, from
/// the workflow stored with it, keeping what succeeded.
int CmdRetry(const GlobalOptions& g, const RetryArgs& a);
int CmdValidate(const GlobalOptions& g, const WorkflowArgs& a);
int CmdGraph(const GlobalOptions& g, const WorkflowArgs& a);
int CmdRuns(const GlobalOptions& g, bool json, int limit);
int CmdStatus(const GlobalOptions& g, const std::string& run, bool json);
int CmdResults(const GlobalOptions& g, const std::string& run, bool json);
int CmdLogs(const GlobalOptions& g, const LogsArgs& a);
int CmdPlugins(const GlobalOptions& g, bool json);
int CmdPrune(const GlobalOptions& g, const PruneArgs& a);
/// Cancels a run from another process: through its live engine (SIGTERM), or,
/// where that engine is gone, by stopping its step processes and recording the cancel.
int CmdCancel(const GlobalOptions& g, const std::string& run);
/// For `cancel` of a run whose engine is gone and whose steps only their
/// backend can stop: takes the run over as `resume` does, has the backends
/// adopt what runs, cancels it at once and records the end. The exit code of
/// the run (130 once cancelled).
int CancelThroughBackends(const GlobalOptions& g, const std::string& run_id);

}  // namespace crucible::cli

#endif  // CRUCIBLE_CLI_COMMANDS_H_

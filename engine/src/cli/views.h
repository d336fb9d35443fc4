// What the query verbs print: the status object, run lists, results and
// plugin listings, as JSON (json_views.cc, the one file that uses
// nlohmann-json) and as text tables (text_views.cc). Pure functions of store
// rows, testable without a database or a terminal.
//
// Thread-safety: free functions, no shared state.
#ifndef CRUCIBLE_CLI_VIEWS_H_
#define CRUCIBLE_CLI_VIEWS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "host/plugin_host.h"
#include "store/store.h"

namespace crucible::cli {

/// One run with its steps and outputs, as read from the store.
struct RunView {
  store::RunRow run;
  std::vector<store::StepRow> steps;
  std::vector<store::OutputRow> outputs;
};

/// One line of `runs`: a run and how many of its steps are in each state.
struct RunListEntry {
  store::RunRow run;
  std::map<store::StepState, int> counts;
};

/// The status object of `status --json` and `run --json`.
std::string StatusJson(const RunView& view);
/// `results --json`: {"run_id": ..., "steps": {"prepare": {"tests": "3"}}}.
std::string ResultsJson(const RunView& view);
/// `runs --json`: an array of run objects, newest first.
std::string RunsJson(const std::vector<RunListEntry>& runs, int64_t now_ms);
/// `plugins --json`.
std::string PluginsJson(const host::PluginHost& host, const std::vector<std::string>& search_path);

/// `status`: a header and one row per step (step, state, attempts, exit, reason).
std::string StatusText(const RunView& view, int64_t now_ms);
/// `results`: the outputs per step, `step  key=value`.
std::string ResultsText(const RunView& view);
/// `runs`: id, workflow, state, created, duration, step counts.
std::string RunsText(const std::vector<RunListEntry>& runs, int64_t now_ms);
/// `plugins`: each plugin with its facts, then every file that failed to load.
std::string PluginsText(const host::PluginHost& host, const std::vector<std::string>& search_path);

/// "3 succeeded, 1 failed, 1 skipped" (states with a zero count left out; "no steps" when empty).
std::string CountsText(const std::map<store::StepState, int>& counts);

/// Run duration in ms: end - start, or now - start while running.
int64_t RunDurationMs(const store::RunRow& run, int64_t now_ms);

/// Columns aligned with two spaces between them; cells with control bytes escaped.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);

}  // namespace crucible::cli

#endif  // CRUCIBLE_CLI_VIEWS_H_

// The validation pipeline shared by `validate`, `graph` and `run`:
// load -> plan -> plugin checks, every finding reported at once, nothing written.
//
// Thread-safety: free functions, no shared state.
#ifndef CRUCIBLE_CLI_VALIDATE_PIPELINE_H_
#define CRUCIBLE_CLI_VALIDATE_PIPELINE_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/diagnostic.h"
#include "host/plugin_host.h"
#include "loader/workflow_spec.h"
#include "plan/plan.h"

namespace crucible::cli {

/// A workflow that passed every check, ready to run.
struct ValidatedWorkflow {
  loader::WorkflowSpec spec;
  plan::Plan plan;
  /// Validated [backends.NAME] values for every backend a step uses.
  std::map<std::string, std::vector<host::OptionValue>> backend_options;
  /// Validated [steps.NAME] values per TaskId, for the step's own backend.
  std::vector<std::vector<host::OptionValue>> step_options;
};

/// What validation concluded.
struct ValidationOutcome {
  /// 0: valid; 2: invalid workflow; 3: a backend named by a step is not a loaded plugin.
  int exit_code = 0;
  /// Set when exit_code is 0.
  std::optional<ValidatedWorkflow> workflow;
};

/// Loads, plans and checks `file` against the plugins of `host`. Every finding
/// (warnings included) goes to `diags`, in the order found.
ValidationOutcome ValidateWorkflow(const std::string& file, const plan::PlanOptions& options,
                                   const host::PluginHost& host, Diagnostics& diags);

/// Runs the plugin checks on an already loaded spec (and its plan, when planning
/// succeeded). Returns 0, 2 or 3 as ValidationOutcome::exit_code, and fills
/// `backend_options` with the validated [backends.NAME] values of used backends
/// and `step_options` (when given) with each instance's [steps.NAME] values.
int CheckBackends(const loader::WorkflowSpec& spec, const plan::Plan* plan, const plan::PlanOptions& options,
                  const host::PluginHost& host, Diagnostics& diags,
                  std::map<std::string, std::vector<host::OptionValue>>* backend_options,
                  std::vector<std::vector<host::OptionValue>>* step_options = nullptr);

}  // namespace crucible::cli

#endif  // CRUCIBLE_CLI_VALIDATE_PIPELINE_H_

// Plan: the immutable, expanded DAG of step instances of one workflow.
//
// Built from a WorkflowSpec: [defaults] merged, [params] and --set applied,
// for_each expanded, static placeholders substituted, inputs globbed, the DAG
// checked for unknown needs and cycles (reported as paths). What can only be
// known at dispatch ({{run.id}}, {{steps.X.outputs.K}}, {{env.NAME}}) stays a
// Template, rendered by the scheduler.
//
// Thread-safety: a Plan is immutable once built and may be read from any thread.
#ifndef CRUCIBLE_PLAN_PLAN_H_
#define CRUCIBLE_PLAN_PLAN_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/diagnostic.h"
#include "loader/workflow_spec.h"

namespace crucible::plan {

/// Index of a step instance in Plan::steps().
using TaskId = uint32_t;

using loader::RawOptionTable;
using loader::RetryOn;
using loader::When;

/// A string with parts known only at dispatch.
struct Template {
  struct Part {
    enum class Kind {
      kLiteral,  ///< text
      kRunId,    ///< {{run.id}}
      kOutput,   ///< {{steps.ID.outputs.KEY}}: `task` and `key`
      kEnv,      ///< {{env.NAME}}: `key` is NAME; read at dispatch, never stored, masked in logs
    };
    Kind kind = Kind::kLiteral;
    std::string text;
    TaskId task = 0;
    std::string key;
  };
  std::vector<Part> parts;
  /// In a `shell` script each substituted value is shell-quoted when rendered.
  bool shell_quote = false;

  bool is_literal() const { return parts.size() <= 1 && (parts.empty() || parts[0].kind == Part::Kind::kLiteral); }
  /// The text when is_literal(), else "".
  std::string literal() const { return parts.empty() ? std::string() : parts[0].text; }
  bool uses_env() const;

  /// What dispatch knows. Returns nullopt and sets `missing` to a message when an
  /// output key is missing ("step \"prepare\" did not write output \"tests\"").
  struct Context {
    std::string run_id;
    std::function<std::optional<std::string>(TaskId, const std::string&)> output;
    std::function<std::optional<std::string>(const std::string&)> env;
  };
  std::optional<std::string> Render(const Context& ctx, std::string* missing) const;
};

/// Quotes a value for /bin/sh: 'it'\''s'.
std::string ShellQuote(const std::string& value);

/// A file to copy into the working directory.
struct Input {
  std::string source;  ///< absolute path, inside the workflow's directory
  std::string dest;    ///< relative path in the working directory
};

/// One step instance: a step, or one item / combination of a for_each.
struct PlannedStep {
  std::string id;           ///< instance id: "evaluate[alice]", "evaluate[model=a,split=test]", or "prepare"
  std::string step_id;      ///< the [[steps]] id: "evaluate"
  size_t spec_index = 0;    ///< index in WorkflowSpec::steps
  std::vector<TaskId> needs;  ///< direct needs, as instances (a need on a fan-out: every instance)
  When when = When::kOnSuccess;
  std::vector<Template> argv;  ///< for `shell`: "/bin/sh", "-c", script
  std::vector<std::pair<std::string, Template>> env;  ///< [env] then the step's env
  std::vector<Input> inputs;
  std::string image;
  std::string backend;
  int64_t timeout_ms = 0;   ///< 0: none
  int retries = 0;
  std::vector<RetryOn> retry_on;  ///< empty: every failure is retried
  int64_t retry_delay_ms = 1000;
  int64_t cpu_millicores = 0;     ///< 0: unlimited
  int64_t memory_bytes = 0;       ///< 0: unlimited
  /// [steps.NAME] tables (merged with [defaults.NAME]).
  std::map<std::string, RawOptionTable> backend_options;
  SourcePos pos;  ///< of the [[steps]] entry
};

/// What the planner needs besides the spec.
struct PlanOptions {
  /// --set NAME=VALUE; an unknown NAME is a diagnostic.
  std::vector<std::pair<std::string, std::string>> params;
  /// --backend NAME: overrides [workflow] backend (not steps that name their own).
  std::optional<std::string> backend;
  /// The spec is partial: the loader reported errors (loader::OnErrors::kPartial).
  /// Only graph and placeholder errors are reported then; what the loader already
  /// judged (run/shell, inputs, duplicate ids) is not reported a second time.
  bool after_schema_errors = false;
};

class Planner;

/// The expanded DAG. Immutable.
class Plan {
 public:
  /// Builds the plan; reports every problem to `diags` and returns nullopt if any is an error.
  static std::optional<Plan> Build(const loader::WorkflowSpec& spec, const PlanOptions& options, Diagnostics& diags);

  const std::vector<PlannedStep>& steps() const { return steps_; }
  size_t step_count() const { return steps_.size(); }
  const PlannedStep& step(TaskId id) const { return steps_[id]; }
  /// Instances that need `id` directly.
  const std::vector<TaskId>& dependents(TaskId id) const { return dependents_[id]; }
  /// A topological order (needs before dependents), computed without recursion.
  const std::vector<TaskId>& topological_order() const { return order_; }
  /// Instance id -> TaskId.
  std::optional<TaskId> Find(const std::string& instance_id) const;

  const std::string& workflow_name() const { return workflow_name_; }
  const std::string& workflow_dir() const { return workflow_dir_; }
  int max_parallel() const { return max_parallel_; }  ///< default: number of CPUs
  bool fail_fast() const { return fail_fast_; }
  int64_t timeout_ms() const { return timeout_ms_; }  ///< 0: none
  /// Backends named by any step.
  std::vector<std::string> backend_names() const;
  /// The params after --set, for the record.
  const std::vector<std::pair<std::string, std::string>>& params() const { return params_; }

  /// Graphviz DOT of the instance graph.
  std::string ToDot() const;

 private:
  friend class Planner;  ///< builds it (plan.cc)

  std::vector<PlannedStep> steps_;
  std::vector<std::vector<TaskId>> dependents_;
  std::vector<TaskId> order_;
  std::map<std::string, TaskId> index_;
  std::string workflow_name_;
  std::string workflow_dir_;
  int max_parallel_ = 1;
  bool fail_fast_ = false;
  int64_t timeout_ms_ = 0;
  std::vector<std::pair<std::string, std::string>> params_;
};

}  // namespace crucible::plan

#endif  // CRUCIBLE_PLAN_PLAN_H_

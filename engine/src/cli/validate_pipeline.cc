#include "cli/validate_pipeline.h"

#include <algorithm>
#include <set>
#include <tuple>
#include <utility>

#include "loader/loader.h"

namespace crucible::cli {
namespace {

using loader::RawOptionTable;
using loader::StepFields;
using loader::StepSpec;
using loader::WorkflowSpec;

/// ", loaded: a, b" or a did-you-mean hint for an unknown backend name.
std::string UnknownBackendHint(const std::string& name, const host::PluginHost& host) {
  std::vector<std::string> names = host.names();
  std::string hint = DidYouMean(name, names);
  for (const host::LoadFailure& f : host.failures()) {
    if (f.path.find("libcrucible-backend-" + name + ".") != std::string::npos) {
      return hint + ": " + f.path + " failed to load: " + f.why;
    }
  }
  if (!hint.empty()) return hint;
  if (names.empty()) return " (no backend plugins were found; see `crucible-engine plugins`)";
  std::string list;
  for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
  return " (loaded backends: " + list + ")";
}

/// The backend a [[steps]] entry uses when there is no plan to ask.
std::string SpecStepBackend(const WorkflowSpec& spec, const StepSpec& step, const plan::PlanOptions& options) {
  if (step.backend) return step.backend->value;
  if (spec.defaults.backend) return spec.defaults.backend->value;
  if (options.backend) return *options.backend;
  return spec.backend.value;
}

/// Where the backend `name` of `step` was named; line 0 when it came from --backend.
SourcePos BackendNamedAt(const WorkflowSpec& spec, const StepSpec& step, const std::string& name) {
  if (step.backend && step.backend->value == name) return step.backend->pos;
  if (spec.defaults.backend && spec.defaults.backend->value == name) return spec.defaults.backend->pos;
  if (spec.backend.value == name) return spec.backend.pos.line > 0 ? spec.backend.pos : step.pos;
  return SourcePos{};
}

/// The position of a field named by a plugin's check_step finding.
SourcePos FieldPos(const StepSpec& step, const StepFields& defaults, const std::string& field) {
  auto pick = [&](const auto& mine, const auto& theirs) -> SourcePos {
    if (mine) return mine->pos;
    if (theirs) return theirs->pos;
    return step.pos;
  };
  if (field == "image") return pick(step.image, defaults.image);
  if (field == "resources.memory" || field == "memory") return pick(step.memory_bytes, defaults.memory_bytes);
  if (field == "resources.cpu" || field == "cpu") return pick(step.cpu_millicores, defaults.cpu_millicores);
  if (field == "resources") {
    SourcePos p = pick(step.memory_bytes, defaults.memory_bytes);
    return p.line == step.pos.line && p.column == step.pos.column ? pick(step.cpu_millicores, defaults.cpu_millicores)
                                                                  : p;
  }
  if (field == "timeout") return pick(step.timeout_ms, defaults.timeout_ms);
  if (field == "run") return pick(step.run, defaults.run);
  if (field == "shell") return pick(step.shell, defaults.shell);
  if (field == "inputs") return pick(step.inputs, defaults.inputs);
  if (field == "retries") return pick(step.retries, defaults.retries);
  if (field == "backend") return pick(step.backend, defaults.backend);
  size_t dot = field.find('.');
  if (dot != std::string::npos) {
    std::string table = field.substr(0, dot);
    std::string key = field.substr(dot + 1);
    for (const auto* fields : {static_cast<const StepFields*>(&step), &defaults}) {
      auto it = fields->backend_options.find(table);
      if (it == fields->backend_options.end()) continue;
      for (const loader::RawOption& opt : it->second.options) {
        if (opt.key == key) return opt.pos;
      }
      return it->second.pos;
    }
  }
  return step.pos;
}

/// Checks the [steps.NAME] / [defaults.NAME] sub-tables of one StepFields.
void CheckSubTables(const StepFields& fields, const std::string& prefix, const host::PluginHost& host,
                    Diagnostics& diags) {
  for (const auto& [name, table] : fields.backend_options) {
    const host::Plugin* plugin = host.Find(name);
    if (plugin == nullptr) {
      // A misspelt step table (`[steps.resorces]`) reads as a backend sub-table: suggest both kinds.
      std::string hint = DidYouMean(name, {"env", "resources"});
      if (hint.empty()) hint = UnknownBackendHint(name, host);
      diags.Error(table.pos, "unknown backend sub-table [" + prefix + "." + name + "]" + hint);
      continue;
    }
    plugin->CheckOptions(table, CRUCIBLE_SCOPE_STEP, prefix + "." + name, diags);
  }
}

}  // namespace

int CheckBackends(const WorkflowSpec& spec, const plan::Plan* plan, const plan::PlanOptions& options,
                  const host::PluginHost& host, Diagnostics& out,
                  std::map<std::string, std::vector<host::OptionValue>>* backend_options,
                  std::vector<std::vector<host::OptionValue>>* step_options_out) {
  bool unknown_named = false;
  Diagnostics diags(out.file());  // sorted into `out` by position at the end

  // 1. The backend of every [[steps]] entry (the plan's answer when there is one).
  std::vector<std::string> step_backend(spec.steps.size());
  for (size_t i = 0; i < spec.steps.size(); ++i) step_backend[i] = SpecStepBackend(spec, spec.steps[i], options);
  if (plan != nullptr) {
    for (const plan::PlannedStep& ps : plan->steps()) {
      if (ps.spec_index < step_backend.size()) step_backend[ps.spec_index] = ps.backend;
    }
  }
  std::map<std::string, SourcePos> used;  // backend name -> where first named
  std::set<std::tuple<std::string, int, int>> reported;
  for (size_t i = 0; i < spec.steps.size(); ++i) {
    const std::string& name = step_backend[i];
    SourcePos pos = BackendNamedAt(spec, spec.steps[i], name);
    used.emplace(name, pos.line > 0 ? pos : spec.steps[i].pos);
    if (host.Find(name) != nullptr) continue;
    unknown_named = true;
    if (!reported.insert({name, pos.line, pos.column}).second) continue;
    std::string from = pos.line > 0 ? "" : " (given by --backend)";
    diags.Error(pos, "unknown backend \"" + name + "\"" + from + UnknownBackendHint(name, host));
  }

  // 2. [backends.NAME] tables.
  std::map<std::string, std::vector<host::OptionValue>> typed;
  for (const auto& [name, table] : spec.backends) {
    const host::Plugin* plugin = host.Find(name);
    if (plugin == nullptr) {
      if (used.count(name) == 0) {
        diags.Error(table.pos, "unknown backend \"" + name + "\" in [backends." + name + "]" +
                                   UnknownBackendHint(name, host));
      }
      continue;
    }
    typed[name] = plugin->CheckOptions(table, CRUCIBLE_SCOPE_BACKEND, "backends." + name, diags);
  }
  for (const auto& [name, pos] : used) {
    const host::Plugin* plugin = host.Find(name);
    if (plugin == nullptr || typed.count(name) != 0) continue;
    // No table: the plugin's required options are still required.
    typed[name] = plugin->CheckOptions(RawOptionTable{{}, pos}, CRUCIBLE_SCOPE_BACKEND, "backends." + name, diags);
  }

  // 3. [defaults.NAME] and [steps.NAME] sub-tables.
  CheckSubTables(spec.defaults, "defaults", host, diags);
  for (const StepSpec& step : spec.steps) CheckSubTables(step, "steps", host, diags);

  // 4. What each backend cannot honour, per step instance, each finding once per [[steps]] entry.
  if (plan != nullptr) {
    std::set<std::tuple<std::string, int, std::string, std::string>> seen;
    if (step_options_out != nullptr) step_options_out->assign(plan->step_count(), {});
    for (const plan::PlannedStep& ps : plan->steps()) {
      const host::Plugin* plugin = host.Find(ps.backend);
      if (plugin == nullptr || ps.spec_index >= spec.steps.size()) continue;
      std::vector<host::OptionValue> step_options;
      auto it = ps.backend_options.find(ps.backend);
      if (it != ps.backend_options.end()) {
        Diagnostics scratch(diags.file());  // already reported per [[steps]] entry above
        step_options = plugin->CheckOptions(it->second, CRUCIBLE_SCOPE_STEP, "steps." + ps.backend, scratch);
        if (step_options_out != nullptr) (*step_options_out)[&ps - plan->steps().data()] = step_options;
      }
      std::vector<host::Plugin::StepFinding> findings =
          plugin->CheckStep(ps.id, ps.image, ps.cpu_millicores, ps.memory_bytes, ps.timeout_ms, typed[ps.backend],
                            step_options);
      for (const host::Plugin::StepFinding& f : findings) {
        if (!seen.insert({ps.step_id, static_cast<int>(f.severity), f.field, f.message}).second) continue;
        SourcePos pos = FieldPos(spec.steps[ps.spec_index], spec.defaults, f.field);
        std::string message = "step \"" + ps.step_id + "\": " + f.message + " (backend " + ps.backend + ")";
        if (f.severity == CRUCIBLE_SEVERITY_WARNING) {
          diags.Warning(pos, std::move(message));
        } else {
          diags.Error(pos, std::move(message));
        }
      }
    }
  }

  if (backend_options != nullptr) {
    backend_options->clear();
    for (const auto& [name, pos] : used) {
      auto it = typed.find(name);
      if (it != typed.end()) (*backend_options)[name] = it->second;
    }
  }
  std::vector<Diagnostic> found = diags.all();
  std::stable_sort(found.begin(), found.end(), [](const Diagnostic& a, const Diagnostic& b) {
    return std::tie(a.pos.line, a.pos.column) < std::tie(b.pos.line, b.pos.column);
  });
  for (Diagnostic& d : found) {
    if (d.severity == Severity::kError) {
      out.Error(d.pos, std::move(d.message));
    } else {
      out.Warning(d.pos, std::move(d.message));
    }
  }
  if (unknown_named) return 3;
  return out.has_errors() ? 2 : 0;
}

ValidationOutcome ValidateWorkflow(const std::string& file, const plan::PlanOptions& options,
                                   const host::PluginHost& host, Diagnostics& diags) {
  ValidationOutcome outcome;
  // Schema errors do not stop the planner: every error of the file is reported in one go.
  std::optional<WorkflowSpec> spec = loader::LoadWorkflowFile(file, diags, loader::OnErrors::kPartial);
  if (!spec) {
    outcome.exit_code = 2;
    return outcome;
  }
  bool schema_errors = diags.has_errors();
  plan::PlanOptions plan_options = options;
  plan_options.after_schema_errors = schema_errors;
  std::optional<plan::Plan> plan = plan::Plan::Build(*spec, plan_options, diags);
  if (schema_errors) {
    // Plugin checks would judge values the loader already refused.
    diags.SortByPosition();
    outcome.exit_code = 2;
    return outcome;
  }
  std::map<std::string, std::vector<host::OptionValue>> backend_options;
  std::vector<std::vector<host::OptionValue>> step_options;
  int code = CheckBackends(*spec, plan ? &*plan : nullptr, options, host, diags, &backend_options, &step_options);
  if (!plan || diags.has_errors()) {
    outcome.exit_code = code == 0 ? 2 : code;
    return outcome;
  }
  outcome.exit_code = code;
  if (code == 0) {
    outcome.workflow = ValidatedWorkflow{std::move(*spec), std::move(*plan), std::move(backend_options),
                                         std::move(step_options)};
  }
  return outcome;
}

}  // namespace crucible::cli

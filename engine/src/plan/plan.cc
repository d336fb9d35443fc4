// Plan::Build: defaults, params, for_each, substitution, inputs, the DAG.
#include "plan/plan.h"

#include <algorithm>
#include <limits>
#include <set>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "plan/inputs.h"
#include "plan/placeholder.h"
#include "plan/task_graph.h"

namespace crucible::plan {

namespace {

using loader::ForEach;
using loader::Located;
using loader::StepFields;
using loader::StepSpec;
using loader::WorkflowSpec;

/// More instances than this from one for_each is refused (a cartesian product gone wrong).
constexpr size_t kMaxInstancesPerStep = 1'000'000;
/// The most descendant sets kept for checking {{steps.ID...}} (each one byte a step).
constexpr size_t kMaxDescendantSets = 256;
/// The most cycles reported for one workflow.
constexpr size_t kMaxCyclesReported = 100;

using EnvList = std::vector<std::pair<std::string, Located<std::string>>>;

/// `over` wins key by key; keys keep the order they first appeared in.
EnvList MergeEnv(const EnvList& base, const EnvList& over) {
  EnvList out = base;
  for (const auto& [key, value] : over) {
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& e) { return e.first == key; });
    if (it != out.end()) {
      it->second = value;
    } else {
      out.emplace_back(key, value);
    }
  }
  return out;
}

/// [defaults] under a step: the step's own value wins; tables merge key by key; lists are replaced.
StepFields MergeDefaults(const StepFields& d, const StepFields& s) {
  StepFields m = s;
  // `run` and `shell` are one choice (the command): a step giving either ignores both defaults.
  if (!s.run && !s.shell) {
    m.run = d.run;
    m.shell = d.shell;
  }
  if (!m.when) m.when = d.when;
  if (!m.inputs) m.inputs = d.inputs;
  if (!m.timeout_ms) m.timeout_ms = d.timeout_ms;
  if (!m.retries) m.retries = d.retries;
  if (!m.retry_on) m.retry_on = d.retry_on;
  if (!m.retry_delay_ms) m.retry_delay_ms = d.retry_delay_ms;
  if (!m.cpu_millicores) m.cpu_millicores = d.cpu_millicores;
  if (!m.memory_bytes) m.memory_bytes = d.memory_bytes;
  if (!m.image) m.image = d.image;
  if (!m.backend) m.backend = d.backend;
  m.env = MergeEnv(d.env, s.env);
  for (const auto& [name, table] : d.backend_options) {
    auto it = m.backend_options.find(name);
    if (it == m.backend_options.end()) {
      m.backend_options.emplace(name, table);
      continue;
    }
    loader::RawOptionTable merged = table;
    merged.pos = it->second.pos;
    for (const loader::RawOption& opt : it->second.options) {
      auto o = std::find_if(merged.options.begin(), merged.options.end(),
                            [&](const loader::RawOption& x) { return x.key == opt.key; });
      if (o != merged.options.end()) {
        *o = opt;
      } else {
        merged.options.push_back(opt);
      }
    }
    it->second = std::move(merged);
  }
  return m;
}

/// One instance of a step before it is planned: its id and its for_each values.
struct Instance {
  std::string id;
  std::vector<std::pair<std::string, std::string>> bindings;  ///< "item" or axis names
};

/// A cached expansion of one inputs pattern.
struct Expansion {
  bool ok = false;
  std::vector<Input> files;
  std::string error;
};

}  // namespace

/// Everything Build needs while it resolves placeholders and inputs.
class Planner {
 public:
  Planner(const WorkflowSpec& spec, const PlanOptions& options, Diagnostics& diags, Plan& plan)
      : spec_(spec), options_(options), diags_(diags), plan_(plan) {}

  bool Run();

 private:
  /// Reports once per position and text: a value from [env] or [defaults] that is wrong
  /// the same way for many steps or instances is reported for the first of them.
  void Error(SourcePos pos, std::string message) {
    std::string key = message;
    const std::string who = Who();
    if (key.compare(0, who.size(), who) == 0) key.erase(0, who.size());
    if (seen_.emplace(pos.line, pos.column, std::move(key)).second) diags_.Error(pos, std::move(message));
  }
  std::string Who() const { return "step \"" + spec_.steps[step_].id.value + "\": "; }

  void ApplyParams();
  void ResolveNeeds();
  void ExpandInstances();
  void PlanStep(uint32_t s);
  std::optional<Template> Resolve(const std::string& text, SourcePos pos, bool shell, const char* static_only);
  bool ResolveOutput(const std::string& expr, SourcePos pos, Template::Part* part);
  bool IsAncestor(uint32_t ancestor, uint32_t step);
  void ExpandInputs(const Located<std::vector<Located<std::string>>>& inputs, PlannedStep* out);

  const WorkflowSpec& spec_;
  const PlanOptions& options_;
  Diagnostics& diags_;
  Plan& plan_;
  std::set<std::tuple<int, int, std::string>> seen_;

  std::unordered_map<std::string, uint32_t> by_id_;
  std::vector<std::vector<uint32_t>> step_needs_;
  std::vector<uint32_t> step_order_;
  bool cyclic_ = false;
  std::vector<TaskId> first_task_;
  std::vector<uint32_t> task_count_;
  std::vector<Instance> instances_;  // by TaskId, freed after planning
  std::unordered_map<std::string, Expansion> input_cache_;
  std::vector<std::vector<uint32_t>> step_dependents_;  // built on first use
  std::unordered_map<uint32_t, std::vector<char>> descendants_;

  // The step and instance being planned.
  uint32_t step_ = 0;
  const Instance* instance_ = nullptr;
};

void Planner::ApplyParams() {
  auto& params = plan_.params_;
  for (const auto& [name, value] : spec_.params) params.emplace_back(name, value.value);
  for (const auto& [name, value] : options_.params) {
    auto it = std::find_if(params.begin(), params.end(), [&](const auto& p) { return p.first == name; });
    if (it == params.end()) {
      std::vector<std::string> names;
      for (const auto& p : params) names.push_back(p.first);
      Error(SourcePos{}, "--set: unknown parameter \"" + name + "\"" + DidYouMean(name, names));
      continue;
    }
    it->second = value;
  }
}

void Planner::ResolveNeeds() {
  const size_t n = spec_.steps.size();
  for (uint32_t i = 0; i < n; ++i) by_id_.emplace(spec_.steps[i].id.value, i);
  step_needs_.resize(n);
  std::vector<TaskGraph::Edge> edges;
  std::vector<uint32_t> mark(n, std::numeric_limits<uint32_t>::max());
  std::vector<std::string> ids;
  for (uint32_t s = 0; s < n; ++s) {
    const StepSpec& step = spec_.steps[s];
    for (const Located<std::string>& need : step.needs) {
      auto it = by_id_.find(need.value);
      if (it == by_id_.end()) {
        if (ids.empty()) {
          for (const StepSpec& st : spec_.steps) ids.push_back(st.id.value);
        }
        Error(need.pos, "step \"" + step.id.value + "\" needs unknown step \"" + need.value + "\"" +
                            DidYouMean(need.value, ids));
        continue;
      }
      uint32_t u = it->second;
      if (mark[u] == s) continue;  // named twice
      mark[u] = s;
      step_needs_[s].push_back(u);
      edges.emplace_back(u, s);
    }
  }
  TaskGraph graph(n, edges);
  edges = {};
  step_order_ = graph.TopologicalOrder();
  if (step_order_.size() == n) return;
  cyclic_ = true;
  for (const std::vector<uint32_t>& cycle : graph.Cycles(kMaxCyclesReported)) {
    std::string text = "cycle: ";
    for (uint32_t v : cycle) text += spec_.steps[v].id.value + " -> ";
    text += spec_.steps[cycle.front()].id.value;
    Error(spec_.steps[cycle.front()].pos, std::move(text));
  }
}

void Planner::ExpandInstances() {
  const size_t n = spec_.steps.size();
  first_task_.resize(n);
  task_count_.resize(n);
  for (uint32_t s = 0; s < n; ++s) {
    const StepSpec& step = spec_.steps[s];
    const ForEach& fe = step.for_each;
    first_task_[s] = static_cast<TaskId>(instances_.size());
    switch (fe.kind) {
      case ForEach::Kind::kNone:
        instances_.push_back(Instance{step.id.value, {}});
        break;
      case ForEach::Kind::kList:
        if (fe.items.empty()) {
          Error(fe.pos, "step \"" + step.id.value + "\": for_each has no items");
          break;
        }
        for (const std::string& item : fe.items) {
          instances_.push_back(Instance{step.id.value + "[" + item + "]", {{"item", item}}});
        }
        break;
      case ForEach::Kind::kAxes: {
        size_t total = 1;
        bool empty = fe.axes.empty();
        for (const auto& axis : fe.axes) {
          if (axis.second.empty()) empty = true;
          total = axis.second.empty() ? 0 : std::min(total * axis.second.size(), kMaxInstancesPerStep + 1);
        }
        if (empty) {
          Error(fe.pos, "step \"" + step.id.value + "\": for_each has an axis with no values");
          break;
        }
        if (total > kMaxInstancesPerStep) {
          Error(fe.pos, "step \"" + step.id.value + "\": for_each gives more than " +
                            std::to_string(kMaxInstancesPerStep) + " instances");
          break;
        }
        // An odometer over the axes, the first axis turning slowest.
        std::vector<size_t> at(fe.axes.size(), 0);
        for (size_t k = 0; k < total; ++k) {
          Instance inst;
          inst.id = step.id.value + "[";
          for (size_t a = 0; a < fe.axes.size(); ++a) {
            const std::string& value = fe.axes[a].second[at[a]];
            if (a > 0) inst.id += ",";
            inst.id += fe.axes[a].first + "=" + value;
            inst.bindings.emplace_back(fe.axes[a].first, value);
          }
          inst.id += "]";
          instances_.push_back(std::move(inst));
          for (size_t a = fe.axes.size(); a-- > 0;) {
            if (++at[a] < fe.axes[a].second.size()) break;
            at[a] = 0;
          }
        }
        break;
      }
    }
    task_count_[s] = static_cast<uint32_t>(instances_.size() - first_task_[s]);
  }
  Plan& plan = plan_;
  plan.steps_.resize(instances_.size());
  for (uint32_t s = 0; s < n; ++s) {
    for (TaskId t = first_task_[s]; t < first_task_[s] + task_count_[s]; ++t) {
      PlannedStep& ps = plan.steps_[t];
      ps.id = instances_[t].id;
      ps.step_id = spec_.steps[s].id.value;
      ps.spec_index = s;
      ps.pos = spec_.steps[s].pos;
      if (!plan.index_.emplace(ps.id, t).second && !options_.after_schema_errors) {
        Error(spec_.steps[s].for_each.pos,
              "step \"" + ps.step_id + "\": for_each gives the instance \"" + ps.id + "\" twice");
      }
    }
  }
}

bool Planner::IsAncestor(uint32_t ancestor, uint32_t step) {
  for (uint32_t u : step_needs_[step]) {
    if (u == ancestor) return true;
  }
  // Everything below `ancestor`, found once per named step by a forward walk
  // and kept (a step named from far down by many steps costs one walk).
  auto cached = descendants_.find(ancestor);
  if (cached == descendants_.end()) {
    if (step_dependents_.empty()) {
      step_dependents_.resize(spec_.steps.size());
      for (uint32_t s = 0; s < spec_.steps.size(); ++s) {
        for (uint32_t u : step_needs_[s]) step_dependents_[u].push_back(s);
      }
    }
    std::vector<char> below(spec_.steps.size(), 0);
    std::vector<uint32_t> queue{ancestor};
    for (size_t head = 0; head < queue.size(); ++head) {
      for (uint32_t w : step_dependents_[queue[head]]) {
        if (below[w]) continue;
        below[w] = 1;
        queue.push_back(w);
      }
    }
    if (descendants_.size() >= kMaxDescendantSets) descendants_.clear();
    cached = descendants_.emplace(ancestor, std::move(below)).first;
  }
  return cached->second[step] != 0;
}

bool Planner::ResolveOutput(const std::string& expr, SourcePos pos, Template::Part* part) {
  const std::string malformed =
      Who() + "malformed placeholder {{" + expr + "}}: expected {{steps.ID.outputs.KEY}}";
  static const std::string kOutputs = ".outputs.";
  std::string rest = expr.substr(6);
  size_t bracket = rest.find('[');
  size_t dot = rest.find('.');
  size_t id_end = dot;
  if (bracket != std::string::npos && (dot == std::string::npos || bracket < dot)) {
    // An item may hold '.' or ']': the instance id ends at the last "].outputs.".
    size_t close = rest.rfind("]" + kOutputs);
    id_end = close == std::string::npos || close < bracket ? std::string::npos : close + 1;
  }
  if (id_end == std::string::npos || id_end == 0 || rest.compare(id_end, kOutputs.size(), kOutputs) != 0 ||
      rest.size() == id_end + kOutputs.size()) {
    Error(pos, malformed);
    return false;
  }
  std::string id = rest.substr(0, id_end);
  std::string key = rest.substr(id_end + kOutputs.size());
  std::string base = id.substr(0, id.find('['));
  auto it = by_id_.find(base);
  if (it == by_id_.end()) {
    std::vector<std::string> ids;
    for (const StepSpec& st : spec_.steps) ids.push_back(st.id.value);
    Error(pos, Who() + "{{" + expr + "}} names unknown step \"" + base + "\"" + DidYouMean(base, ids));
    return false;
  }
  uint32_t u = it->second;
  if (u == step_ || !IsAncestor(u, step_)) {
    Error(pos, Who() + "{{" + expr + "}} names step \"" + base +
                   "\", which is not among its needs (directly or further up)");
    return false;
  }
  const Plan& plan = plan_;
  TaskId task = first_task_[u];
  if (id.size() > base.size()) {
    auto found = plan.index_.find(id);
    if (found == plan.index_.end() || plan.steps_[found->second].spec_index != u) {
      std::vector<std::string> ids;
      for (TaskId t = first_task_[u]; t < first_task_[u] + task_count_[u]; ++t) ids.push_back(plan.steps_[t].id);
      Error(pos, Who() + "{{" + expr + "}} names unknown instance \"" + id + "\"" + DidYouMean(id, ids));
      return false;
    }
    task = found->second;
  } else if (spec_.steps[u].for_each.kind != ForEach::Kind::kNone) {
    std::string example = task_count_[u] > 0 ? plan.steps_[first_task_[u]].id : base + "[...]";
    Error(pos, Who() + "{{" + expr + "}} names the fan-out step \"" + base + "\": name one instance (like {{steps." +
                   example + ".outputs." + key + "}}) or read $CRUCIBLE_UPSTREAM");
    return false;
  }
  part->kind = Template::Part::Kind::kOutput;
  part->task = task;
  part->key = key;
  part->text = plan.steps_[task].id;
  return true;
}

std::optional<Template> Planner::Resolve(const std::string& text, SourcePos pos, bool shell,
                                         const char* static_only) {
  std::vector<Piece> pieces;
  if (std::optional<std::string> err = SplitPlaceholders(text, &pieces)) {
    Error(pos, Who() + *err);
    return std::nullopt;
  }
  Template t;
  t.shell_quote = shell;
  auto literal = [&t](const std::string& s) {
    if (!t.parts.empty() && t.parts.back().kind == Template::Part::Kind::kLiteral) {
      t.parts.back().text += s;
    } else {
      t.parts.push_back(Template::Part{Template::Part::Kind::kLiteral, s, 0, {}});
    }
  };
  bool ok = true;
  const auto& params = plan_.params_;
  for (const Piece& piece : pieces) {
    if (!piece.placeholder) {
      literal(piece.text);
      continue;
    }
    const std::string& expr = piece.text;
    const std::string* value = nullptr;
    for (const auto& [name, v] : instance_->bindings) {
      if (expr == name) value = &v;
    }
    if (!value && expr.rfind("params.", 0) == 0) {
      for (const auto& [name, v] : params) {
        if (expr.compare(7, std::string::npos, name) == 0) value = &v;
      }
    }
    if (!value && expr == "workflow.name") value = &spec_.name.value;
    if (value) {
      literal(shell ? ShellQuote(*value) : *value);
      continue;
    }
    Template::Part part;
    if (expr == "run.id") {
      part.kind = Template::Part::Kind::kRunId;
    } else if (expr.rfind("env.", 0) == 0 && expr.size() > 4) {
      part.kind = Template::Part::Kind::kEnv;
      part.key = expr.substr(4);
    } else if (expr.rfind("steps.", 0) == 0) {
      if (!ResolveOutput(expr, pos, &part)) {
        ok = false;
        continue;
      }
    } else {
      std::vector<std::string> names;
      for (const auto& b : instance_->bindings) names.push_back(b.first);
      for (const auto& p : params) names.push_back("params." + p.first);
      names.push_back("workflow.name");
      names.push_back("run.id");
      std::string hint = DidYouMean(expr, names);
      if (hint.empty() && expr == "item" && spec_.steps[step_].for_each.kind == ForEach::Kind::kNone) {
        hint = " (the step has no for_each list)";
      }
      Error(pos, Who() + "unknown placeholder {{" + expr + "}}" + hint);
      ok = false;
      continue;
    }
    if (static_only) {
      Error(pos, Who() + "{{" + expr + "}} cannot be used in " + static_only +
                     ": its value is known only when the step starts");
      ok = false;
      continue;
    }
    t.parts.push_back(std::move(part));
  }
  if (!ok) return std::nullopt;
  return t;
}

void Planner::ExpandInputs(const Located<std::vector<Located<std::string>>>& inputs, PlannedStep* out) {
  std::set<std::string> dests;
  for (const Located<std::string>& in : inputs.value) {
    std::optional<Template> t = Resolve(in.value, in.pos, false, "inputs");
    if (!t) continue;
    std::string pattern = t->literal();
    auto [it, inserted] = input_cache_.try_emplace(pattern);
    Expansion& e = it->second;
    if (inserted) {
      Result<std::vector<Input>> r = ExpandInput(spec_.dir, pattern);
      e.ok = r.ok();
      if (r.ok()) {
        e.files = std::move(r).value();
      } else {
        e.error = r.error().message;
      }
    }
    if (!e.ok) {
      Error(in.pos, Who() + "input \"" + pattern + "\" " + e.error);
      continue;
    }
    for (const Input& f : e.files) {
      if (dests.insert(f.dest).second) out->inputs.push_back(f);
    }
  }
}

void Planner::PlanStep(uint32_t s) {
  step_ = s;
  const StepSpec& spec_step = spec_.steps[s];
  StepFields m = MergeDefaults(spec_.defaults, spec_step);
  if (options_.after_schema_errors && (m.run.has_value() == m.shell.has_value())) return;
  if (m.run && m.shell) {
    Error(spec_step.pos, "step \"" + spec_step.id.value + "\" has both \"run\" and \"shell\" (give exactly one)");
    return;
  }
  if (!m.run && !m.shell) {
    Error(spec_step.pos, "step \"" + spec_step.id.value + "\" has neither \"run\" nor \"shell\" (give exactly one)");
    return;
  }
  EnvList env = MergeEnv(spec_.env, m.env);
  std::vector<TaskId> needs;
  for (uint32_t u : step_needs_[s]) {
    for (TaskId t = first_task_[u]; t < first_task_[u] + task_count_[u]; ++t) needs.push_back(t);
  }
  std::string backend = m.backend               ? m.backend->value
                        : options_.backend ? *options_.backend
                                               : spec_.backend.value;
  Plan& plan = plan_;
  for (TaskId t = first_task_[s]; t < first_task_[s] + task_count_[s]; ++t) {
    instance_ = &instances_[t];
    PlannedStep& ps = plan.steps_[t];
    ps.needs = needs;
    if (m.when) ps.when = m.when->value;
    if (m.run) {
      ps.argv.reserve(m.run->value.size());
      for (const std::string& arg : m.run->value) {
        std::optional<Template> a = Resolve(arg, m.run->pos, false, nullptr);
        if (a) ps.argv.push_back(std::move(*a));
      }
    } else {
      ps.argv.reserve(3);
      ps.argv.push_back(Template{{Template::Part{Template::Part::Kind::kLiteral, "/bin/sh", 0, {}}}, false});
      ps.argv.push_back(Template{{Template::Part{Template::Part::Kind::kLiteral, "-c", 0, {}}}, false});
      std::optional<Template> script = Resolve(m.shell->value, m.shell->pos, true, nullptr);
      if (script) ps.argv.push_back(std::move(*script));
    }
    ps.env.reserve(env.size());
    for (const auto& [key, value] : env) {
      std::optional<Template> v = Resolve(value.value, value.pos, false, nullptr);
      if (v) ps.env.emplace_back(key, std::move(*v));
    }
    if (m.inputs && !options_.after_schema_errors) ExpandInputs(*m.inputs, &ps);
    if (m.image) {
      std::optional<Template> image = Resolve(m.image->value, m.image->pos, false, "image");
      if (image) ps.image = image->literal();
    }
    ps.backend = backend;
    if (m.timeout_ms) ps.timeout_ms = m.timeout_ms->value;
    if (m.retries) ps.retries = static_cast<int>(m.retries->value);
    if (m.retry_on) ps.retry_on = m.retry_on->value;
    if (m.retry_delay_ms) ps.retry_delay_ms = m.retry_delay_ms->value;
    if (m.cpu_millicores) ps.cpu_millicores = m.cpu_millicores->value;
    if (m.memory_bytes) ps.memory_bytes = m.memory_bytes->value;
    ps.backend_options = m.backend_options;
  }
  instance_ = nullptr;
}

bool Planner::Run() {
  Plan& plan = plan_;
  plan.workflow_name_ = spec_.name.value;
  plan.workflow_dir_ = spec_.dir;
  plan.fail_fast_ = spec_.fail_fast;
  plan.timeout_ms_ = spec_.timeout_ms ? spec_.timeout_ms->value : 0;
  plan.max_parallel_ = spec_.max_parallel ? static_cast<int>(spec_.max_parallel->value)
                                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  ApplyParams();
  ResolveNeeds();
  ExpandInstances();
  for (uint32_t s = 0; s < spec_.steps.size(); ++s) PlanStep(s);
  instances_ = {};
  input_cache_ = {};
  descendants_ = {};
  step_dependents_ = {};
  if (diags_.has_errors()) return false;

  plan.dependents_.resize(plan.steps_.size());
  std::vector<uint32_t> count(plan.steps_.size(), 0);
  for (const PlannedStep& ps : plan.steps_) {
    for (TaskId n : ps.needs) ++count[n];
  }
  for (TaskId t = 0; t < plan.steps_.size(); ++t) plan.dependents_[t].reserve(count[t]);
  for (TaskId t = 0; t < plan.steps_.size(); ++t) {
    for (TaskId n : plan.steps_[t].needs) plan.dependents_[n].push_back(t);
  }
  // Instances inherit their step's place: edges only run between steps, so this order is valid.
  plan.order_.reserve(plan.steps_.size());
  for (uint32_t s : step_order_) {
    for (TaskId t = first_task_[s]; t < first_task_[s] + task_count_[s]; ++t) plan.order_.push_back(t);
  }
  return true;
}

namespace {

std::string DotQuote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

}  // namespace

std::optional<Plan> Plan::Build(const loader::WorkflowSpec& spec, const PlanOptions& options, Diagnostics& diags) {
  Plan plan;
  Planner planner(spec, options, diags, plan);
  if (!planner.Run()) return std::nullopt;
  return plan;
}

std::optional<TaskId> Plan::Find(const std::string& instance_id) const {
  auto it = index_.find(instance_id);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> Plan::backend_names() const {
  std::set<std::string> names;
  for (const PlannedStep& s : steps_) names.insert(s.backend);
  return {names.begin(), names.end()};
}

std::string Plan::ToDot() const {
  std::string out = "digraph " + DotQuote(workflow_name_) + " {\n";
  for (const PlannedStep& s : steps_) out += "  " + DotQuote(s.id) + ";\n";
  for (const PlannedStep& s : steps_) {
    for (TaskId n : s.needs) out += "  " + DotQuote(steps_[n].id) + " -> " + DotQuote(s.id) + ";\n";
  }
  out += "}\n";
  return out;
}

}  // namespace crucible::plan

// The one file of the command line that uses nlohmann-json.
#include <nlohmann/json.hpp>

#include "cli/terminal.h"
#include "cli/views.h"

namespace crucible::cli {
namespace {

using nlohmann::json;

std::string Dump(const json& j, int indent) {
  // Invalid UTF-8 (step outputs are bytes) becomes U+FFFD rather than an exception.
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

json OrNull(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }
json CodeOrNull(int code) { return code < 0 ? json(nullptr) : json(code); }
json TimeOrNull(int64_t ms) { return ms <= 0 ? json(nullptr) : json(FormatIsoUtc(ms)); }

json StepOutputs(const RunView& view, int idx) {
  json out = json::object();
  for (const store::OutputRow& o : view.outputs) {
    if (o.step_idx == idx) out[o.key] = o.value;
  }
  return out;
}

json CountsJson(const std::map<store::StepState, int>& counts) {
  json j = json::object();
  for (const auto& [state, n] : counts) j[store::ToString(state)] = n;
  return j;
}

}  // namespace

std::string StatusJson(const RunView& view) {
  json steps = json::array();
  for (const store::StepRow& s : view.steps) {
    steps.push_back({{"id", s.step_id},
                     {"state", store::ToString(s.state)},
                     {"reason", OrNull(s.reason)},
                     {"attempts", s.attempts},
                     {"exit_code", CodeOrNull(s.exit_code)},
                     {"backend", s.backend},
                     {"message", OrNull(s.message)},
                     {"outputs", StepOutputs(view, s.idx)}});
  }
  const store::RunRow& r = view.run;
  json j = {{"run_id", r.id},
            {"workflow", r.workflow},
            {"state", store::ToString(r.state)},
            {"file", r.file},
            {"created_at", TimeOrNull(r.created_at_ms)},
            {"ended_at", TimeOrNull(r.ended_at_ms)},
            {"exit_code", CodeOrNull(r.exit_code)},
            {"steps", steps}};
  return Dump(j, 2);
}

std::string ResultsJson(const RunView& view) {
  json steps = json::object();
  for (const store::StepRow& s : view.steps) steps[s.step_id] = StepOutputs(view, s.idx);
  return Dump(json{{"run_id", view.run.id}, {"steps", steps}}, 2);
}

std::string RunsJson(const std::vector<RunListEntry>& runs, int64_t now_ms) {
  json arr = json::array();
  for (const RunListEntry& e : runs) {
    const store::RunRow& r = e.run;
    arr.push_back({{"run_id", r.id},
                   {"workflow", r.workflow},
                   {"state", store::ToString(r.state)},
                   {"file", r.file},
                   {"created_at", TimeOrNull(r.created_at_ms)},
                   {"ended_at", TimeOrNull(r.ended_at_ms)},
                   {"duration_ms", RunDurationMs(r, now_ms)},
                   {"exit_code", CodeOrNull(r.exit_code)},
                   {"step_count", r.step_count},
                   {"steps", CountsJson(e.counts)}});
  }
  return Dump(arr, 2);
}

std::string PluginsJson(const host::PluginHost& host, const std::vector<std::string>& search_path) {
  static const char* const kTypes[] = {"unset", "string", "int", "bool", "float", "duration", "string_list",
                                       "string_map"};
  static const char* const kScopes[] = {"unset", "backend", "step"};
  json plugins = json::array();
  for (const auto& p : host.plugins()) {
    json options = json::array();
    for (const crucible_option_decl& d : p->options()) {
      auto type = static_cast<size_t>(d.type);
      auto scope = static_cast<size_t>(d.scope);
      options.push_back({{"name", d.name ? d.name : ""},
                         {"type", type < std::size(kTypes) ? kTypes[type] : "unknown"},
                         {"scope", scope < std::size(kScopes) ? kScopes[scope] : "unknown"},
                         {"required", d.required != 0},
                         {"description", d.description ? d.description : ""}});
    }
    plugins.push_back({{"name", p->name()},
                       {"version", p->version()},
                       {"abi", p->abi()},
                       {"path", p->path()},
                       {"description", p->description()},
                       {"describe", p->Describe()},
                       {"options", options}});
  }
  json failures = json::array();
  for (const host::LoadFailure& f : host.failures()) failures.push_back({{"path", f.path}, {"why", f.why}});
  return Dump(json{{"plugins", plugins}, {"failures", failures}, {"search_path", search_path}}, 2);
}

}  // namespace crucible::cli

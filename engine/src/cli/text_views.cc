#include <algorithm>

#include "cli/terminal.h"
#include "cli/views.h"

namespace crucible::cli {
namespace {

/// Cell text: control bytes (newlines and tabs too) escaped, so rows stay rows.
std::string Cell(const std::string& s) {
  std::string out = EscapeControlBytes(s);
  std::string clean;
  clean.reserve(out.size());
  for (char c : out) {
    if (c == '\n') {
      clean += "\\n";
    } else if (c == '\t') {
      clean += "\\t";
    } else {
      clean += c;
    }
  }
  return clean;
}

/// Display width, counting UTF-8 continuation bytes as nothing.
size_t Width(const std::string& s) {
  size_t w = 0;
  for (char c : s) {
    if ((static_cast<unsigned char>(c) & 0xc0) != 0x80) ++w;
  }
  return w;
}

std::string ExitText(int code) { return code < 0 ? "-" : std::to_string(code); }

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

}  // namespace

std::string FormatTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::vector<std::string>> cells;
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    std::vector<std::string> r;
    for (size_t i = 0; i < row.size(); ++i) {
      r.push_back(Cell(row[i]));
      if (widths.size() <= i) widths.push_back(0);
      widths[i] = std::max(widths[i], Width(r.back()));
    }
    cells.push_back(std::move(r));
  }
  std::string out;
  for (const auto& row : cells) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - Width(row[i]) + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

int64_t RunDurationMs(const store::RunRow& run, int64_t now_ms) {
  int64_t end = run.ended_at_ms > 0 ? run.ended_at_ms : now_ms;
  return std::max<int64_t>(0, end - run.created_at_ms);
}

std::string CountsText(const std::map<store::StepState, int>& counts) {
  static constexpr store::StepState kOrder[] = {store::StepState::kSucceeded, store::StepState::kFailed,
                                                store::StepState::kSkipped,   store::StepState::kCancelled,
                                                store::StepState::kRunning,   store::StepState::kPending};
  std::string out;
  for (store::StepState s : kOrder) {
    auto it = counts.find(s);
    if (it == counts.end() || it->second == 0) continue;
    if (!out.empty()) out += ", ";
    out += std::to_string(it->second) + " " + store::ToString(s);
  }
  return out.empty() ? "no steps" : out;
}

std::string StatusText(const RunView& view, int64_t now_ms) {
  const store::RunRow& r = view.run;
  std::map<store::StepState, int> counts;
  for (const store::StepRow& s : view.steps) ++counts[s.state];
  std::string out = "run " + Cell(r.id) + "  " + Cell(r.workflow) + "  " + store::ToString(r.state) + "  (" +
                    CountsText(counts) + ")\n";
  out += "file " + Cell(r.file) + ", started " + FormatLocalDateTime(r.created_at_ms) + ", " +
         (r.ended_at_ms > 0 ? "took " : "running for ") + FormatElapsed(RunDurationMs(r, now_ms)) + "\n\n";
  std::vector<std::vector<std::string>> rows = {{"STEP", "STATE", "ATTEMPTS", "EXIT", "REASON", "BACKEND"}};
  for (const store::StepRow& s : view.steps) {
    rows.push_back({s.step_id, store::ToString(s.state), std::to_string(s.attempts), ExitText(s.exit_code),
                    OrDash(s.reason), s.backend});
  }
  out += FormatTable(rows);
  // Why steps ended as they did, where a backend or the engine said so.
  std::string why;
  for (const store::StepRow& s : view.steps) {
    if (!s.message.empty()) why += Cell(s.step_id) + ": " + Cell(s.message) + "\n";
  }
  return why.empty() ? out : out + "\n" + why;
}

std::string ResultsText(const RunView& view) {
  std::vector<std::vector<std::string>> rows;
  for (const store::StepRow& s : view.steps) {
    for (const store::OutputRow& o : view.outputs) {
      if (o.step_idx == s.idx) rows.push_back({s.step_id, o.key + "=" + o.value});
    }
  }
  if (rows.empty()) return "run " + Cell(view.run.id) + ": no outputs\n";
  return FormatTable(rows);
}

std::string RunsText(const std::vector<RunListEntry>& runs, int64_t now_ms) {
  std::vector<std::vector<std::string>> rows = {{"RUN", "WORKFLOW", "STATE", "CREATED", "DURATION", "STEPS"}};
  for (const RunListEntry& e : runs) {
    rows.push_back({e.run.id, e.run.workflow, store::ToString(e.run.state), FormatLocalDateTime(e.run.created_at_ms),
                    FormatElapsed(RunDurationMs(e.run, now_ms)), CountsText(e.counts)});
  }
  return FormatTable(rows);
}

std::string PluginsText(const host::PluginHost& host, const std::vector<std::string>& search_path) {
  std::string out;
  for (const auto& p : host.plugins()) {
    out += p->name() + " " + p->version() + " (ABI " + p->abi() + ")\n";
    out += "  path: " + p->path() + "\n";
    if (!p->description().empty()) out += "  " + p->description() + "\n";
    std::string facts = p->Describe();
    size_t start = 0;
    while (start < facts.size()) {
      size_t nl = facts.find('\n', start);
      if (nl == std::string::npos) nl = facts.size();
      if (nl > start) out += "  " + facts.substr(start, nl - start) + "\n";
      start = nl + 1;
    }
    for (const crucible_option_decl& d : p->options()) {
      out += std::string("  option ") + (d.scope == CRUCIBLE_SCOPE_STEP ? "[steps." : "[backends.") + p->name() +
             "] " + (d.name ? d.name : "") + (d.required ? " (required)" : "") +
             (d.description ? std::string(": ") + d.description : "") + "\n";
    }
  }
  if (host.plugins().empty()) out += "no backend plugins loaded\n";
  for (const host::LoadFailure& f : host.failures()) out += "failed to load " + f.path + ": " + f.why + "\n";
  std::string dirs;
  for (const std::string& d : search_path) dirs += (dirs.empty() ? "" : ":") + d;
  out += "search path: " + dirs + "\n";
  return out;
}

}  // namespace crucible::cli

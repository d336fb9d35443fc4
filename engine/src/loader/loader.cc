// The workflow loader. This is the one file that calls toml++ and catches its exceptions.
#include "loader/loader.h"

#include <toml++/toml.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/sha256.h"
#include "common/units.h"
#include "loader/nesting_check.h"

namespace crucible::loader {

namespace {

/// Workflow files from this size on trim the heap after loading (a DOM of megabytes was just freed).
constexpr size_t kTrimAfterBytes = 1u << 20;

namespace fs = std::filesystem;

const std::vector<std::string> kTopKeys = {"workflow", "params", "defaults", "env", "backends", "steps"};
const std::vector<std::string> kWorkflowKeys = {"name",         "description", "backend",
                                                "max_parallel", "fail_fast",   "timeout"};
const std::vector<std::string> kStepKeys = {"id",      "needs",   "when",     "run",         "shell",
                                            "for_each", "env",    "inputs",   "timeout",     "retries",
                                            "retry_on", "retry_delay", "resources", "image", "backend"};
const std::vector<std::string> kDefaultsKeys = {"when",     "run",         "shell",     "env",   "inputs",
                                                "timeout",  "retries",     "retry_on",  "retry_delay",
                                                "resources", "image",      "backend"};
const std::vector<std::string> kResourceKeys = {"cpu", "memory"};
const std::vector<std::string> kWhenValues = {"on_success", "on_failure", "always"};
const std::vector<std::string> kRetryReasons = {"timeout", "oom_killed", "exited"};

constexpr char kDurationHint[] = "a duration like \"30s\", \"5m\" or \"1h30m\"";
/// Durations above this (about 31,700 years) are refused rather than overflowing.
constexpr int64_t kMaxDurationSeconds = 1'000'000'000'000;

SourcePos PosOf(const toml::source_region& region) {
  return SourcePos{static_cast<int>(region.begin.line), static_cast<int>(region.begin.column)};
}

SourcePos PosOf(const toml::node& node) { return PosOf(node.source()); }

SourcePos PosOf(const toml::key& key) { return PosOf(key.source()); }

bool Before(const SourcePos& a, const SourcePos& b) {
  return a.line != b.line ? a.line < b.line : a.column < b.column;
}

/// `s` in double quotes for a message: escaped, and cut short when long.
std::string Quote(std::string_view s) {
  constexpr size_t kMaxShown = 64;
  std::string out = "\"";
  size_t shown = std::min(s.size(), kMaxShown);
  for (size_t i = 0; i < shown; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMaxShown) out += "...";
  out += '"';
  return out;
}

/// "a string", "an integer", ... for "got ..." in messages.
std::string TypeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    default:
      return "nothing";
  }
}

/// What a value was, for "got ...": the string itself, or its type.
std::string Got(const toml::node& node) {
  if (const auto* s = node.as_string()) return Quote(s->get());
  return TypeName(node);
}

bool IsScalar(const toml::node& node) {
  return node.is_string() || node.is_integer() || node.is_floating_point() || node.is_boolean();
}

std::string FloatText(double value) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  if (ec != std::errc()) return std::to_string(value);
  return std::string(buf, end);
}

/// A scalar as text: strings as they are, numbers and booleans as written in TOML.
std::string ScalarText(const toml::node& node) {
  if (const auto* s = node.as_string()) return s->get();
  if (const auto* i = node.as_integer()) return std::to_string(i->get());
  if (const auto* f = node.as_floating_point()) return FloatText(f->get());
  if (const auto* b = node.as_boolean()) return b->get() ? "true" : "false";
  return "";
}

nlohmann::json ToJson(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return node.as_string()->get();
    case toml::node_type::integer:
      return node.as_integer()->get();
    case toml::node_type::floating_point:
      return node.as_floating_point()->get();
    case toml::node_type::boolean:
      return node.as_boolean()->get();
    case toml::node_type::array: {
      nlohmann::json out = nlohmann::json::array();
      for (const toml::node& element : *node.as_array()) out.push_back(ToJson(element));
      return out;
    }
    case toml::node_type::table: {
      nlohmann::json out = nlohmann::json::object();
      for (auto&& [key, value] : *node.as_table()) out[std::string(key.str())] = ToJson(value);
      return out;
    }
    default: {
      std::ostringstream text;
      if (const auto* d = node.as_date()) text << d->get();
      if (const auto* t = node.as_time()) text << t->get();
      if (const auto* dt = node.as_date_time()) text << dt->get();
      return text.str();
    }
  }
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsLower(char c) { return c >= 'a' && c <= 'z'; }
bool IsAlpha(char c) { return IsLower(c) || (c >= 'A' && c <= 'Z'); }
bool IsAlnum(char c) { return IsAlpha(c) || IsDigit(c); }

/// `[a-z0-9][a-z0-9-]{0,62}`
bool IsWorkflowName(std::string_view s) {
  if (s.empty() || s.size() > 63 || !(IsLower(s[0]) || IsDigit(s[0]))) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return IsLower(c) || IsDigit(c) || c == '-'; });
}

/// `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`
bool IsStepId(std::string_view s) {
  if (s.empty() || s.size() > 64 || !IsAlnum(s[0])) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return IsAlnum(c) || c == '_' || c == '-'; });
}

/// `[A-Za-z_][A-Za-z0-9_]*`
bool IsIdentifier(std::string_view s) {
  if (s.empty() || !(IsAlpha(s[0]) || s[0] == '_')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return IsAlnum(c) || c == '_'; });
}

/// A table's entries in file order (toml++ keeps them sorted by name).
std::vector<std::pair<const toml::key*, const toml::node*>> InFileOrder(const toml::table& table) {
  std::vector<std::pair<const toml::key*, const toml::node*>> entries;
  entries.reserve(table.size());
  for (auto&& [key, value] : table) entries.emplace_back(&key, &value);
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return Before(PosOf(*a.first), PosOf(*b.first)); });
  return entries;
}

/// One finding before sorting by position.
struct Finding {
  SourcePos pos;
  std::string message;
};

/// Turns a parsed TOML document into a WorkflowSpec, collecting every error.
class SpecBuilder {
 public:
  explicit SpecBuilder(std::string dir) : dir_(std::move(dir)) {}

  /// Fills spec from root. A [[steps]] table with a long `needs` list is emptied
  /// once read, so a large DOM (a node per `needs` entry) and the spec are never
  /// both whole in memory.
  void Build(toml::table& root, WorkflowSpec& spec) {
    const toml::node* workflow = nullptr;
    const toml::node* steps = nullptr;
    for (auto&& [key_ptr, value_ptr] : InFileOrder(root)) {
      const toml::key& key = *key_ptr;
      const toml::node& value = *value_ptr;
      std::string_view name = key.str();
      if (name == "workflow") {
        workflow = &value;
        LoadWorkflow(key, value, spec);
      } else if (name == "params") {
        LoadParams(value, spec);
      } else if (name == "defaults") {
        LoadDefaults(value, spec.defaults);
      } else if (name == "env") {
        LoadEnv(value, spec.env);
      } else if (name == "backends") {
        LoadBackends(value, spec);
      } else if (name == "steps") {
        steps = &value;
      } else {
        Error(PosOf(key), "unknown key " + Quote(name) + DidYouMean(std::string(name), kTopKeys));
      }
    }
    if (workflow == nullptr) Error(SourcePos{}, "missing [workflow] table (it needs at least a \"name\")");
    if (steps == nullptr) {
      Error(SourcePos{}, "no steps: a workflow needs at least one [[steps]] table");
    } else {
      LoadSteps(*root.get("steps"), spec);
    }
  }

  bool has_errors() const { return !findings_.empty(); }

  /// Reports the findings into `diags`, in file order.
  void Emit(Diagnostics& diags) {
    std::stable_sort(findings_.begin(), findings_.end(),
                     [](const Finding& a, const Finding& b) { return Before(a.pos, b.pos); });
    for (Finding& f : findings_) diags.Error(f.pos, std::move(f.message));
  }

 private:
  void Error(SourcePos pos, std::string message) { findings_.push_back(Finding{pos, std::move(message)}); }

  void TypeError(const toml::node& value, std::string_view field, std::string_view expected) {
    Error(PosOf(value), "\"" + std::string(field) + "\" must be " + std::string(expected) + ", got " +
                            TypeName(value));
  }

  std::optional<std::string> String(const toml::node& value, std::string_view field) {
    if (const auto* s = value.as_string()) return s->get();
    TypeError(value, field, "a string");
    return std::nullopt;
  }

  std::optional<Located<std::string>> LocatedString(const toml::node& value, std::string_view field) {
    std::optional<std::string> s = String(value, field);
    if (!s) return std::nullopt;
    return Located<std::string>{std::move(*s), PosOf(value)};
  }

  std::optional<int64_t> Integer(const toml::node& value, std::string_view field, int64_t min) {
    const auto* i = value.as_integer();
    if (i == nullptr) {
      TypeError(value, field, "an integer");
      return std::nullopt;
    }
    if (i->get() < min) {
      Error(PosOf(value), "\"" + std::string(field) + "\" must be >= " + std::to_string(min) + ", got " +
                              std::to_string(i->get()));
      return std::nullopt;
    }
    return i->get();
  }

  std::optional<bool> Boolean(const toml::node& value, std::string_view field) {
    if (const auto* b = value.as_boolean()) return b->get();
    TypeError(value, field, "a boolean (true or false)");
    return std::nullopt;
  }

  /// A duration in milliseconds; `allow_zero` for delays, not for limits.
  std::optional<Located<int64_t>> Duration(const toml::node& value, std::string_view field, bool allow_zero) {
    std::string quoted_field = "\"" + std::string(field) + "\"";
    std::optional<int64_t> ms;
    if (const auto* i = value.as_integer()) {
      if (i->get() < 0) {
        Error(PosOf(value), quoted_field + " must not be negative, got " + std::to_string(i->get()));
        return std::nullopt;
      }
      if (i->get() > kMaxDurationSeconds) {
        Error(PosOf(value), quoted_field + " is too long: " + std::to_string(i->get()) + " seconds");
        return std::nullopt;
      }
      ms = i->get() * 1000;
    } else if (const auto* s = value.as_string()) {
      ms = ParseDuration(s->get());
    }
    if (!ms) {
      Error(PosOf(value), quoted_field + " must be " + kDurationHint + ", got " + Got(value));
      return std::nullopt;
    }
    if (*ms == 0 && !allow_zero) {
      Error(PosOf(value), quoted_field + " must be greater than zero");
      return std::nullopt;
    }
    return Located<int64_t>{*ms, PosOf(value)};
  }

  /// A list of strings, each with its position.
  std::optional<Located<std::vector<Located<std::string>>>> StringList(const toml::node& value,
                                                                       std::string_view field) {
    const auto* array = value.as_array();
    if (array == nullptr) {
      TypeError(value, field, "a list of strings");
      return std::nullopt;
    }
    Located<std::vector<Located<std::string>>> out{{}, PosOf(value)};
    out.value.reserve(array->size());
    bool ok = true;
    for (const toml::node& element : *array) {
      if (const auto* s = element.as_string()) {
        out.value.push_back(Located<std::string>{s->get(), PosOf(element)});
      } else {
        Error(PosOf(element), "\"" + std::string(field) + "\" entries must be strings, got " + TypeName(element));
        ok = false;
      }
    }
    if (!ok) return std::nullopt;
    return out;
  }

  void LoadWorkflow(const toml::key& key, const toml::node& node, WorkflowSpec& spec) {
    const auto* table = node.as_table();
    if (table == nullptr) {
      TypeError(node, "workflow", "a table");
      return;
    }
    spec.workflow_pos = PosOf(node);
    if (spec.workflow_pos.line == 0) spec.workflow_pos = PosOf(key);
    bool has_name = false;
    for (auto&& [k, v] : InFileOrder(*table)) {
      std::string_view name = k->str();
      const toml::node& value = *v;
      if (name == "name") {
        has_name = true;
        if (auto s = LocatedString(value, "name")) {
          if (!IsWorkflowName(s->value)) {
            Error(s->pos, "workflow name " + Quote(s->value) +
                              " must match [a-z0-9][a-z0-9-]{0,62} (lowercase letters, digits and dashes)");
          }
          spec.name = std::move(*s);
        }
      } else if (name == "description") {
        if (auto s = String(value, "description")) spec.description = std::move(*s);
      } else if (name == "backend") {
        if (auto s = LocatedString(value, "backend")) {
          if (s->value.empty()) Error(s->pos, "\"backend\" must not be empty");
          spec.backend = std::move(*s);
        }
      } else if (name == "max_parallel") {
        if (auto n = Integer(value, "max_parallel", 1)) spec.max_parallel = Located<int64_t>{*n, PosOf(value)};
      } else if (name == "fail_fast") {
        if (auto b = Boolean(value, "fail_fast")) spec.fail_fast = *b;
      } else if (name == "timeout") {
        spec.timeout_ms = Duration(value, "timeout", /*allow_zero=*/false);
      } else {
        Error(PosOf(*k), "unknown key " + Quote(name) + " in [workflow]" + DidYouMean(std::string(name), kWorkflowKeys));
      }
    }
    if (!has_name) Error(spec.workflow_pos, "missing required key \"name\" in [workflow]");
  }

  void LoadParams(const toml::node& node, WorkflowSpec& spec) {
    const auto* table = node.as_table();
    if (table == nullptr) {
      TypeError(node, "params", "a table");
      return;
    }
    for (auto&& [k, v] : InFileOrder(*table)) {
      if (!IsScalar(*v)) {
        Error(PosOf(*v), "param " + Quote(k->str()) + " must be a string, number or boolean, got " + TypeName(*v));
        continue;
      }
      spec.params.emplace_back(std::string(k->str()), Located<std::string>{ScalarText(*v), PosOf(*v)});
    }
  }

  /// `[env]` or a step's `env`: a table of strings.
  void LoadEnv(const toml::node& node, std::vector<std::pair<std::string, Located<std::string>>>& out) {
    const auto* table = node.as_table();
    if (table == nullptr) {
      TypeError(node, "env", "a table of strings");
      return;
    }
    for (auto&& [k, v] : InFileOrder(*table)) {
      std::string_view name = k->str();
      if (name.empty() || name.find('=') != std::string_view::npos || name.find('\0') != std::string_view::npos) {
        Error(PosOf(*k), "invalid environment variable name " + Quote(name));
        continue;
      }
      const auto* s = v->as_string();
      if (s == nullptr) {
        Error(PosOf(*v), "env " + Quote(name) + " must be a string, got " + TypeName(*v));
        continue;
      }
      out.emplace_back(std::string(name), Located<std::string>{s->get(), PosOf(*v)});
    }
  }

  RawOptionTable RawOptions(const toml::table& table) {
    RawOptionTable out;
    out.pos = PosOf(table);
    out.options.reserve(table.size());
    for (auto&& [k, v] : InFileOrder(table)) out.options.push_back(RawOption{std::string(k->str()), ToJson(*v), PosOf(*k)});
    return out;
  }

  void LoadBackends(const toml::node& node, WorkflowSpec& spec) {
    const auto* table = node.as_table();
    if (table == nullptr) {
      TypeError(node, "backends", "a table of [backends.NAME] tables");
      return;
    }
    for (auto&& [k, v] : InFileOrder(*table)) {
      const auto* options = v->as_table();
      if (options == nullptr) {
        Error(PosOf(*v), "\"backends." + std::string(k->str()) + "\" must be a table, got " + TypeName(*v));
        continue;
      }
      spec.backends[std::string(k->str())] = RawOptions(*options);
    }
  }

  void LoadDefaults(const toml::node& node, StepFields& fields) {
    const auto* table = node.as_table();
    if (table == nullptr) {
      TypeError(node, "defaults", "a table");
      return;
    }
    for (auto&& [k, v] : InFileOrder(*table)) {
      std::string_view name = k->str();
      if (name == "id" || name == "needs" || name == "for_each") {
        Error(PosOf(*k), Quote(name) + " cannot be set in [defaults], only in a step");
        continue;
      }
      LoadStepField(*k, *v, fields, "[defaults]", kDefaultsKeys);
    }
    CheckRunOrShell(fields, "[defaults]");
  }

  void LoadSteps(toml::node& node, WorkflowSpec& spec) {
    auto* array = node.as_array();
    if (array == nullptr) {
      TypeError(node, "steps", "an array of tables ([[steps]])");
      return;
    }
    if (array->empty()) {
      Error(PosOf(node), "no steps: a workflow needs at least one [[steps]] table");
      return;
    }
    spec.steps.reserve(array->size());
    std::unordered_map<std::string, int> first_line;
    first_line.reserve(array->size());
    int index = 0;
    for (toml::node& element : *array) {
      ++index;
      auto* table = element.as_table();
      if (table == nullptr) {
        Error(PosOf(element), "each entry of \"steps\" must be a table, got " + TypeName(element));
        continue;
      }
      StepSpec& step = spec.steps.emplace_back();
      LoadStep(*table, index, step, first_line);
      // Read: free a large table's nodes now (a long `needs` list is most of a big
      // DOM). Small ones go with the DOM: freeing them one by one while the spec
      // grows leaves holes the planner cannot use, which costs more than it saves.
      if (const toml::array* needs = table->get_as<toml::array>("needs"); needs != nullptr && needs->size() >= 8) {
        table->clear();
      }
    }
  }

  void LoadStep(const toml::table& table, int index, StepSpec& step,
                std::unordered_map<std::string, int>& first_line) {
    step.pos = PosOf(table);
    std::string where = "step " + std::to_string(index);
    if (const toml::node* id = table.get("id")) {
      if (auto s = LocatedString(*id, "id")) {
        step.id = std::move(*s);
        if (!IsStepId(step.id.value)) {
          Error(step.id.pos, "step id " + Quote(step.id.value) + " must match [A-Za-z0-9][A-Za-z0-9_-]{0,63}");
        } else {
          where = "step " + Quote(step.id.value);
          auto [it, inserted] = first_line.emplace(step.id.value, step.id.pos.line);
          if (!inserted) {
            Error(step.id.pos, "duplicate step id " + Quote(step.id.value) + " (first defined at line " +
                                   std::to_string(it->second) + ")");
          }
        }
      }
    } else {
      Error(step.pos, where + " has no \"id\"");
    }
    for (auto&& [key, value] : table) {
      std::string_view name = key.str();
      if (name == "id") continue;
      if (name == "needs") {
        if (auto needs = StringList(value, "needs")) step.needs = std::move(needs->value);
      } else if (name == "for_each") {
        LoadForEach(value, step.for_each);
      } else {
        LoadStepField(key, value, step, where, kStepKeys);
      }
    }
    CheckRunOrShell(step, where);
  }

  /// A key that a step and [defaults] share; anything else is a backend sub-table or an error.
  void LoadStepField(const toml::key& key, const toml::node& value, StepFields& f, const std::string& where,
                     const std::vector<std::string>& candidates) {
    std::string_view name = key.str();
    if (name == "run") {
      auto run = StringList(value, "run");
      if (run && run->value.empty()) {
        Error(run->pos, "\"run\" must not be empty");
      } else if (run) {
        Located<std::vector<std::string>> argv{{}, run->pos};
        argv.value.reserve(run->value.size());
        for (Located<std::string>& arg : run->value) argv.value.push_back(std::move(arg.value));
        f.run = std::move(argv);
      }
    } else if (name == "shell") {
      if (auto s = LocatedString(value, "shell")) {
        if (s->value.empty()) Error(s->pos, "\"shell\" must not be empty");
        f.shell = std::move(*s);
      }
    } else if (name == "when") {
      LoadWhen(value, f);
    } else if (name == "env") {
      LoadEnv(value, f.env);
    } else if (name == "inputs") {
      if (auto inputs = StringList(value, "inputs")) {
        for (const Located<std::string>& input : inputs->value) CheckInput(input);
        f.inputs = std::move(*inputs);
      }
    } else if (name == "timeout") {
      f.timeout_ms = Duration(value, "timeout", /*allow_zero=*/false);
    } else if (name == "retries") {
      if (auto n = Integer(value, "retries", 0)) f.retries = Located<int64_t>{*n, PosOf(value)};
    } else if (name == "retry_on") {
      LoadRetryOn(value, f);
    } else if (name == "retry_delay") {
      f.retry_delay_ms = Duration(value, "retry_delay", /*allow_zero=*/true);
    } else if (name == "resources") {
      LoadResources(value, f);
    } else if (name == "image") {
      if (auto s = LocatedString(value, "image")) {
        if (s->value.empty()) Error(s->pos, "\"image\" must not be empty");
        f.image = std::move(*s);
      }
    } else if (name == "backend") {
      if (auto s = LocatedString(value, "backend")) {
        if (s->value.empty()) Error(s->pos, "\"backend\" must not be empty");
        f.backend = std::move(*s);
      }
    } else if (const auto* table = value.as_table()) {
      RawOptionTable options = RawOptions(*table);
      if (options.pos.line == 0) options.pos = PosOf(key);
      f.backend_options[std::string(name)] = std::move(options);
    } else {
      Error(PosOf(key), "unknown key " + Quote(name) + " in " + where + DidYouMean(std::string(name), candidates));
    }
  }

  void CheckRunOrShell(const StepFields& f, const std::string& where) {
    if (!f.run || !f.shell) return;
    SourcePos second = Before(f.run->pos, f.shell->pos) ? f.shell->pos : f.run->pos;
    Error(second, where + " has both \"run\" and \"shell\" (give exactly one)");
  }

  void LoadWhen(const toml::node& value, StepFields& f) {
    const auto* s = value.as_string();
    if (s == nullptr) {
      TypeError(value, "when", "one of \"on_success\", \"on_failure\", \"always\"");
      return;
    }
    const std::string& text = s->get();
    When when;
    if (text == "on_success") {
      when = When::kOnSuccess;
    } else if (text == "on_failure") {
      when = When::kOnFailure;
    } else if (text == "always") {
      when = When::kAlways;
    } else {
      Error(PosOf(value), "\"when\" must be one of \"on_success\", \"on_failure\", \"always\", got " + Quote(text) +
                              DidYouMean(text, kWhenValues));
      return;
    }
    f.when = Located<When>{when, PosOf(value)};
  }

  void LoadRetryOn(const toml::node& value, StepFields& f) {
    const auto* array = value.as_array();
    if (array == nullptr) {
      TypeError(value, "retry_on", "a list of reasons and exit codes");
      return;
    }
    static const std::string kExpected =
        "\"retry_on\" entries must be \"timeout\", \"oom_killed\", \"exited\" or an exit code 0-255, got ";
    Located<std::vector<RetryOn>> out{{}, PosOf(value)};
    bool ok = true;
    for (const toml::node& element : *array) {
      RetryOn entry;
      if (const auto* s = element.as_string()) {
        const std::string& text = s->get();
        if (text == "timeout") {
          entry.kind = RetryOn::Kind::kTimeout;
        } else if (text == "oom_killed") {
          entry.kind = RetryOn::Kind::kOomKilled;
        } else if (text == "exited") {
          entry.kind = RetryOn::Kind::kExited;
        } else {
          Error(PosOf(element), kExpected + Quote(text) + DidYouMean(text, kRetryReasons));
          ok = false;
          continue;
        }
      } else if (const auto* i = element.as_integer()) {
        if (i->get() < 0 || i->get() > 255) {
          Error(PosOf(element), kExpected + std::to_string(i->get()));
          ok = false;
          continue;
        }
        entry.kind = RetryOn::Kind::kExitCode;
        entry.exit_code = static_cast<int>(i->get());
      } else {
        Error(PosOf(element), kExpected + TypeName(element));
        ok = false;
        continue;
      }
      out.value.push_back(entry);
    }
    if (ok) f.retry_on = std::move(out);
  }

  void LoadResources(const toml::node& value, StepFields& f) {
    const auto* table = value.as_table();
    if (table == nullptr) {
      TypeError(value, "resources", "a table like { cpu = 0.5, memory = \"256Mi\" }");
      return;
    }
    for (auto&& [k, v] : InFileOrder(*table)) {
      std::string_view name = k->str();
      if (name == "cpu") {
        LoadCpu(*v, f);
      } else if (name == "memory") {
        LoadMemory(*v, f);
      } else {
        Error(PosOf(*k), "unknown key " + Quote(name) + " in \"resources\"" + DidYouMean(std::string(name), kResourceKeys));
      }
    }
  }

  void LoadCpu(const toml::node& value, StepFields& f) {
    std::optional<int64_t> millicores;
    if (const auto* i = value.as_integer()) {
      if (i->get() >= 0 && i->get() <= 1'000'000'000) millicores = i->get() * 1000;
    } else if (const auto* d = value.as_floating_point()) {
      double cores = d->get();
      if (cores >= 0 && cores <= 1e9) millicores = static_cast<int64_t>(cores * 1000 + 0.5);
    } else if (const auto* s = value.as_string()) {
      millicores = ParseCpuMillicores(s->get());
    }
    if (!millicores) {
      Error(PosOf(value), "\"cpu\" must be a number of cores like 0.5 or millicores like \"500m\", got " + Got(value));
      return;
    }
    if (*millicores <= 0) {
      Error(PosOf(value), "\"cpu\" must be at least 1m (0.001 cores)");
      return;
    }
    f.cpu_millicores = Located<int64_t>{*millicores, PosOf(value)};
  }

  void LoadMemory(const toml::node& value, StepFields& f) {
    std::optional<int64_t> bytes;
    if (const auto* i = value.as_integer()) {
      if (i->get() >= 0) bytes = i->get();
    } else if (const auto* s = value.as_string()) {
      bytes = ParseMemory(s->get());
    }
    if (!bytes) {
      Error(PosOf(value), "\"memory\" must be a quantity like \"256Mi\", \"1Gi\" or \"500M\", got " + Got(value));
      return;
    }
    if (*bytes <= 0) {
      Error(PosOf(value), "\"memory\" must be greater than zero");
      return;
    }
    f.memory_bytes = Located<int64_t>{*bytes, PosOf(value)};
  }

  /// Scalars of a `for_each` list or axis as text; false (and errors) when one is not a scalar or repeats.
  bool ForEachValues(const toml::array& array, std::string_view what, std::vector<std::string>& out) {
    bool ok = true;
    std::unordered_set<std::string> seen;
    out.reserve(array.size());
    for (const toml::node& element : array) {
      if (!IsScalar(element)) {
        Error(PosOf(element), std::string(what) + " items must be strings, numbers or booleans, got " +
                                  TypeName(element));
        ok = false;
        continue;
      }
      std::string text = ScalarText(element);
      if (!seen.insert(text).second) {
        Error(PosOf(element), "duplicate " + std::string(what) + " item " + Quote(text));
        ok = false;
        continue;
      }
      out.push_back(std::move(text));
    }
    return ok;
  }

  void LoadForEach(const toml::node& value, ForEach& fe) {
    fe.pos = PosOf(value);
    if (const auto* array = value.as_array()) {
      if (array->empty()) {
        Error(fe.pos, "\"for_each\" must not be empty");
        return;
      }
      std::vector<std::string> items;
      if (ForEachValues(*array, "\"for_each\"", items)) {
        fe.kind = ForEach::Kind::kList;
        fe.items = std::move(items);
      }
      return;
    }
    const auto* table = value.as_table();
    if (table == nullptr) {
      TypeError(value, "for_each", "a list or a table of lists");
      return;
    }
    if (table->empty()) {
      Error(fe.pos, "\"for_each\" must not be empty");
      return;
    }
    bool ok = true;
    std::vector<std::pair<std::string, std::vector<std::string>>> axes;
    for (auto&& [k, v] : InFileOrder(*table)) {
      std::string name(k->str());
      if (!IsIdentifier(name)) {
        Error(PosOf(*k), "for_each axis " + Quote(name) + " must be an identifier ([A-Za-z_][A-Za-z0-9_]*)");
        ok = false;
        continue;
      }
      const auto* values = v->as_array();
      if (values == nullptr || values->empty()) {
        Error(PosOf(*v), "for_each axis " + Quote(name) + " must be a non-empty list, got " +
                             (values == nullptr ? TypeName(*v) : std::string("an empty list")));
        ok = false;
        continue;
      }
      std::vector<std::string> items;
      if (!ForEachValues(*values, "for_each axis " + Quote(name), items)) {
        ok = false;
        continue;
      }
      axes.emplace_back(std::move(name), std::move(items));
    }
    if (ok) {
      fe.kind = ForEach::Kind::kAxes;
      fe.axes = std::move(axes);
    }
  }

  /// An `inputs` entry must stay inside the workflow's directory.
  void CheckInput(const Located<std::string>& input) {
    const std::string& path = input.value;
    if (path.empty()) {
      Error(input.pos, "\"inputs\" entries must not be empty");
      return;
    }
    if (path[0] == '/') {
      Error(input.pos, "input " + Quote(path) + " is an absolute path; inputs are relative to the workflow's directory");
      return;
    }
    // Split into components; the ones before the first glob or placeholder name real files.
    std::string fixed_prefix;
    bool dynamic = false;
    size_t start = 0;
    while (start <= path.size()) {
      size_t end = path.find('/', start);
      if (end == std::string::npos) end = path.size();
      std::string_view part(path.data() + start, end - start);
      if (part == "..") {
        Error(input.pos, "input " + Quote(path) + " leaves the workflow's directory");
        return;
      }
      if (!dynamic) {
        if (part.find_first_of("*?[") != std::string_view::npos || part.find("{{") != std::string_view::npos) {
          dynamic = true;
        } else if (!part.empty()) {
          if (!fixed_prefix.empty()) fixed_prefix += '/';
          fixed_prefix += part;
        }
      }
      start = end + 1;
    }
    if (fixed_prefix.empty()) return;
    std::error_code ec;
    fs::path resolved = fs::weakly_canonical(fs::path(dir_) / fixed_prefix, ec);
    if (ec) return;  // unreadable here; the planner checks again when it expands inputs
    const std::string& r = resolved.native();
    bool inside = dir_ == "/" || r == dir_ || (r.size() > dir_.size() && r.compare(0, dir_.size(), dir_) == 0 &&
                                               r[dir_.size()] == '/');
    if (!inside) {
      Error(input.pos, "input " + Quote(path) + " leaves the workflow's directory (it resolves to " + Quote(r) + ")");
    }
  }

  std::string dir_;
  std::vector<Finding> findings_;
};

/// The absolute, canonical directory holding `path` (which need not exist).
std::string CanonicalDir(const std::string& path) {
  std::error_code ec;
  fs::path absolute = fs::absolute(fs::path(path), ec);
  if (ec) absolute = fs::path(path);
  fs::path parent = absolute.parent_path();
  fs::path canonical = fs::weakly_canonical(parent, ec);
  if (ec) canonical = parent.lexically_normal();
  std::string out = canonical.native();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

std::string TooLarge(uintmax_t size) {
  return "file is too large: " + std::to_string(size) + " bytes, the limit is " + std::to_string(kMaxWorkflowBytes) +
         " (" + std::to_string(kMaxWorkflowBytes / (1024 * 1024)) + " MiB)";
}

/// Parses text; `release`, when given, owns text and is emptied once parsed (the DOM is large enough).
std::optional<WorkflowSpec> LoadText(const std::string& text, const std::string& path, Diagnostics& diags,
                                     OnErrors on_errors, std::string* release = nullptr);

}  // namespace

std::optional<WorkflowSpec> LoadWorkflowFile(const std::string& path, Diagnostics& diags) {
  return LoadWorkflowFile(path, diags, OnErrors::kNothing);
}

std::optional<WorkflowSpec> LoadWorkflowFile(const std::string& path, Diagnostics& diags, OnErrors on_errors) {
  std::error_code ec;
  fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    diags.Error(SourcePos{}, "cannot open workflow file: " + (ec ? ec.message() : std::string("no such file")));
    return std::nullopt;
  }
  if (fs::is_directory(status)) {
    diags.Error(SourcePos{}, "cannot open workflow file: it is a directory");
    return std::nullopt;
  }
  if (fs::is_regular_file(status)) {
    uintmax_t size = fs::file_size(path, ec);
    if (!ec && size > kMaxWorkflowBytes) {
      diags.Error(SourcePos{}, TooLarge(size));
      return std::nullopt;
    }
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    diags.Error(SourcePos{}, std::string("cannot open workflow file: ") + std::strerror(errno));
    return std::nullopt;
  }
  std::string text;
  {
    // Reserve the whole file at once: growing by doubling would hold up to twice its size during parse.
    std::error_code ec;
    uintmax_t size = std::filesystem::file_size(path, ec);
    if (!ec && size <= kMaxWorkflowBytes) text.reserve(static_cast<size_t>(size) + 1);
  }
  std::vector<char> buffer(1 << 16);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    text.append(buffer.data(), static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxWorkflowBytes) {
      diags.Error(SourcePos{}, TooLarge(text.size()) + " (stopped reading there)");
      return std::nullopt;
    }
  }
  if (in.bad()) {
    diags.Error(SourcePos{}, std::string("cannot read workflow file: ") + std::strerror(errno));
    return std::nullopt;
  }
  return LoadText(text, path, diags, on_errors, &text);
}

std::optional<WorkflowSpec> LoadWorkflowText(const std::string& text, const std::string& path, Diagnostics& diags) {
  return LoadText(text, path, diags, OnErrors::kNothing);
}

namespace {

std::optional<WorkflowSpec> LoadText(const std::string& text, const std::string& path, Diagnostics& diags,
                                     OnErrors on_errors, std::string* release) {
  if (text.size() > kMaxWorkflowBytes) {
    diags.Error(SourcePos{}, TooLarge(text.size()));
    return std::nullopt;
  }
  if (std::optional<SourcePos> where = FindExcessiveNesting(text, kMaxNestingDepth)) {
    diags.Error(*where, "too deeply nested: more than " + std::to_string(kMaxNestingDepth) +
                            " levels of arrays, inline tables, dotted keys or table headers");
    return std::nullopt;
  }
  toml::table root;
  try {
    root = toml::parse(std::string_view(text), std::string_view(path));
  } catch (const toml::parse_error& e) {
    diags.Error(PosOf(e.source()), std::string(e.description()));
    return std::nullopt;
  }
  WorkflowSpec spec;
  spec.file = path;
  spec.dir = CanonicalDir(path);
  spec.source_sha256 = Sha256Hex(text);
  size_t text_bytes = text.size();
  if (release != nullptr) std::string().swap(*release);  // `text` is gone from here on
  SpecBuilder builder(spec.dir);
  builder.Build(root, spec);
  root.clear();
#ifdef __GLIBC__
  // The DOM left the heap full of holes: hand whole free pages back before planning allocates.
  if (text_bytes >= kTrimAfterBytes) malloc_trim(0);
#endif
  bool failed = builder.has_errors();
  builder.Emit(diags);
  if (failed && on_errors == OnErrors::kNothing) return std::nullopt;
  return spec;
}

}  // namespace
}  // namespace crucible::loader

// Template rendering, shell quoting and placeholder splitting.
#include <string_view>

#include "plan/placeholder.h"
#include "plan/plan.h"

namespace crucible::plan {

namespace {

bool IsShellSafe(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
         c == '.' || c == '/' || c == ',' || c == ':' || c == '=' || c == '+' || c == '@' || c == '%';
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

void AppendLiteral(std::vector<Piece>* out, std::string_view text) {
  if (text.empty()) return;
  if (!out->empty() && !out->back().placeholder) {
    out->back().text.append(text);
  } else {
    out->push_back(Piece{false, std::string(text)});
  }
}

}  // namespace

std::string ShellQuote(const std::string& value) {
  if (!value.empty()) {
    bool safe = true;
    for (char c : value) safe = safe && IsShellSafe(c);
    if (safe) return value;
  }
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  out += '\'';
  return out;
}

bool Template::uses_env() const {
  for (const Part& p : parts) {
    if (p.kind == Part::Kind::kEnv) return true;
  }
  return false;
}

std::optional<std::string> Template::Render(const Context& ctx, std::string* missing) const {
  std::string out;
  for (const Part& p : parts) {
    std::optional<std::string> value;
    switch (p.kind) {
      case Part::Kind::kLiteral:
        out += p.text;
        continue;
      case Part::Kind::kRunId:
        value = ctx.run_id;
        break;
      case Part::Kind::kOutput:
        if (ctx.output) value = ctx.output(p.task, p.key);
        if (!value) {
          // `text` holds the instance id of the upstream step.
          if (missing) *missing = "step \"" + p.text + "\" did not write output \"" + p.key + "\"";
          return std::nullopt;
        }
        break;
      case Part::Kind::kEnv:
        if (ctx.env) value = ctx.env(p.key);
        if (!value) {
          if (missing) *missing = "environment variable \"" + p.key + "\" is not set in the engine's environment";
          return std::nullopt;
        }
        break;
    }
    out += shell_quote ? ShellQuote(*value) : *value;
  }
  return out;
}

std::optional<std::string> SplitPlaceholders(const std::string& text, std::vector<Piece>* out) {
  std::string_view rest(text);
  while (!rest.empty()) {
    size_t open = rest.find("{{");
    if (open == std::string_view::npos) {
      AppendLiteral(out, rest);
      break;
    }
    AppendLiteral(out, rest.substr(0, open));
    size_t close = rest.find("}}", open + 2);
    if (close == std::string_view::npos) {
      return "unterminated placeholder in \"" + text + "\" (a literal \"{{\" is written {{'{{'}})";
    }
    std::string_view expr = Trim(rest.substr(open + 2, close - open - 2));
    if (expr == "'{{'") {
      AppendLiteral(out, "{{");
    } else {
      out->push_back(Piece{true, std::string(expr)});
    }
    rest.remove_prefix(close + 2);
  }
  return std::nullopt;
}

}  // namespace crucible::plan

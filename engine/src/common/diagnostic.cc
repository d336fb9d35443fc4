#include "common/diagnostic.h"

#include <algorithm>
#include <tuple>

namespace crucible {

std::string Diagnostic::Format() const {
  std::string out = file;
  if (pos.line > 0) {
    out += ":" + std::to_string(pos.line);
    if (pos.column > 0) out += ":" + std::to_string(pos.column);
  }
  out += severity == Severity::kError ? ": error: " : ": warning: ";
  out += message;
  return out;
}

void Diagnostics::Error(SourcePos pos, std::string message) {
  all_.push_back(Diagnostic{file_, pos, Severity::kError, std::move(message)});
  ++errors_;
}

void Diagnostics::Warning(SourcePos pos, std::string message) {
  all_.push_back(Diagnostic{file_, pos, Severity::kWarning, std::move(message)});
}

void Diagnostics::SortByPosition() {
  std::stable_sort(all_.begin(), all_.end(), [](const Diagnostic& a, const Diagnostic& b) {
    return std::tie(a.pos.line, a.pos.column) < std::tie(b.pos.line, b.pos.column);
  });
}

std::string Diagnostics::Format() const {
  std::string out;
  for (const Diagnostic& d : all_) {
    out += d.Format();
    out += '\n';
  }
  return out;
}

namespace {

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

std::string Suggest(const std::string& word, const std::vector<std::string>& candidates) {
  // Like ninja's SpellcheckString: allow about a third of the word to differ.
  size_t best = word.size() / 3 + 1;
  std::string found;
  for (const std::string& c : candidates) {
    if (c.size() > word.size() + best || word.size() > c.size() + best) continue;
    size_t d = EditDistance(word, c);
    if (d < best || (d == best && found.empty() && d <= 2)) {
      if (d <= std::max<size_t>(2, word.size() / 3)) {
        best = d;
        found = c;
      }
    }
  }
  return found;
}

std::string DidYouMean(const std::string& word, const std::vector<std::string>& candidates) {
  std::string s = Suggest(word, candidates);
  return s.empty() ? "" : " (did you mean \"" + s + "\"?)";
}

}  // namespace crucible

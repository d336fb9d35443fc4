// Diagnostics: user mistakes in a workflow file, reported all at once.
#ifndef CRUCIBLE_COMMON_DIAGNOSTIC_H_
#define CRUCIBLE_COMMON_DIAGNOSTIC_H_

#include <string>
#include <vector>

namespace crucible {

/// A position in a source file, 1-based; 0 means unknown.
struct SourcePos {
  int line = 0;
  int column = 0;
};

enum class Severity { kError, kWarning };

/// One finding, printed like a compiler: `file:line:col: error: message`.
struct Diagnostic {
  std::string file;
  SourcePos pos;
  Severity severity = Severity::kError;
  std::string message;

  std::string Format() const;
};

/// Collects diagnostics of one file. Not thread-safe.
class Diagnostics {
 public:
  explicit Diagnostics(std::string file) : file_(std::move(file)) {}

  void Error(SourcePos pos, std::string message);
  void Warning(SourcePos pos, std::string message);

  bool has_errors() const { return errors_ > 0; }
  /// Orders the diagnostics by line and column, keeping the order of equal positions.
  void SortByPosition();
  const std::vector<Diagnostic>& all() const { return all_; }
  const std::string& file() const { return file_; }
  /// All diagnostics, one per line, in the order reported (stable for golden tests).
  std::string Format() const;

 private:
  std::string file_;
  std::vector<Diagnostic> all_;
  int errors_ = 0;
};

/// The nearest candidate by edit distance, or "" when none is near enough.
/// Used for "did you mean" hints.
std::string Suggest(const std::string& word, const std::vector<std::string>& candidates);

/// `(did you mean "x"?)` with a leading space, or "".
std::string DidYouMean(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace crucible

#endif  // CRUCIBLE_COMMON_DIAGNOSTIC_H_

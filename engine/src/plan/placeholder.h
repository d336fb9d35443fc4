// Splitting of `{{ ... }}` placeholders out of a workflow string (planner-internal).
#ifndef CRUCIBLE_PLAN_PLACEHOLDER_H_
#define CRUCIBLE_PLAN_PLACEHOLDER_H_

#include <optional>
#include <string>
#include <vector>

namespace crucible::plan {

/// A piece of a string: literal text, or the trimmed expression of a placeholder.
struct Piece {
  bool placeholder = false;
  std::string text;
};

/// Splits `text` into pieces. `{{'{{'}}` is the literal text "{{". Returns an
/// error message ("unterminated placeholder ...") when a `{{` is never closed.
std::optional<std::string> SplitPlaceholders(const std::string& text, std::vector<Piece>* out);

}  // namespace crucible::plan

#endif  // CRUCIBLE_PLAN_PLACEHOLDER_H_

// Expansion of a step's `inputs` patterns into files (planner-internal).
#ifndef CRUCIBLE_PLAN_INPUTS_H_
#define CRUCIBLE_PLAN_INPUTS_H_

#include <string>
#include <vector>

#include "common/result.h"
#include "plan/plan.h"

namespace crucible::plan {

/// Expands `pattern` (a path, a directory copied recursively, or a glob with
/// `*`, `?`, `[...]` and `**`) relative to `root`, a canonical absolute
/// directory. Files come sorted by destination. Errors (kInvalidArgument) say
/// what is wrong with the pattern without naming it: "matches no file",
/// "resolves outside the workflow's directory (through a symlink)".
Result<std::vector<Input>> ExpandInput(const std::string& root, const std::string& pattern);

}  // namespace crucible::plan

#endif  // CRUCIBLE_PLAN_INPUTS_H_

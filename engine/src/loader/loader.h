// The workflow loader: TOML text -> WorkflowSpec, with every schema error at once.
//
// It checks what one file can tell on its own: syntax (first error only: the
// parser stops there), unknown keys with "did you mean", types and ranges of
// durations, quantities and counts, duplicate step ids, `inputs` leaving the
// workflow's directory, a size cap and a nesting-depth check run before toml++
// sees the text. Graph questions (unknown needs, cycles, placeholders) belong
// to the planner.
//
// Thread-safety: free functions, no shared state.
#ifndef CRUCIBLE_LOADER_LOADER_H_
#define CRUCIBLE_LOADER_LOADER_H_

#include <cstddef>
#include <optional>
#include <string>

#include "common/diagnostic.h"
#include "loader/workflow_spec.h"

namespace crucible::loader {

/// Files larger than this are refused before parsing (a generated 100,000-step file fits).
inline constexpr size_t kMaxWorkflowBytes = 256u * 1024 * 1024;
/// Deeper nesting of tables/arrays/dotted keys is refused before parsing.
inline constexpr int kMaxNestingDepth = 64;

/// Reads and loads `path`. Returns nullopt when `diags` has errors.
std::optional<WorkflowSpec> LoadWorkflowFile(const std::string& path, Diagnostics& diags);

/// Loads `text` as if read from `path` (whose directory anchors `inputs`).
std::optional<WorkflowSpec> LoadWorkflowText(const std::string& text, const std::string& path, Diagnostics& diags);

/// Whether a spec with schema errors is still handed back.
enum class OnErrors {
  kNothing,  ///< nullopt when `diags` has errors
  kPartial,  ///< the spec as far as it could be read (values in error left out), so that
             ///< the planner can report its own errors in the same run; nullopt only when
             ///< the file could not be read or parsed at all
};

/// LoadWorkflowFile with a choice of what to return on schema errors.
std::optional<WorkflowSpec> LoadWorkflowFile(const std::string& path, Diagnostics& diags, OnErrors on_errors);

}  // namespace crucible::loader

#endif  // CRUCIBLE_LOADER_LOADER_H_

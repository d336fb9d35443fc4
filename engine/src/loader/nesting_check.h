// A scan of TOML text for nesting too deep to hand to toml++ (which recurses
// and crashes on tens of thousands of levels).
//
// Thread-safety: a free function, no shared state.
#ifndef CRUCIBLE_LOADER_NESTING_CHECK_H_
#define CRUCIBLE_LOADER_NESTING_CHECK_H_

#include <optional>
#include <string_view>

#include "common/diagnostic.h"

namespace crucible::loader {

/// Where `text` first nests deeper than `max_depth` levels, or nullopt.
///
/// A level is an array, an inline table, or a segment of a dotted key or of a
/// table header; levels add up (`a.b = [{c.d = 1}]` is 5 deep). The scan knows
/// strings and comments; it does not validate TOML (toml++ does that next), and
/// never reads past the end of malformed text.
std::optional<SourcePos> FindExcessiveNesting(std::string_view text, int max_depth);

}  // namespace crucible::loader

#endif  // CRUCIBLE_LOADER_NESTING_CHECK_H_

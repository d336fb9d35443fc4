// Step I/O helpers of the scheduler: parsing CRUCIBLE_OUTPUT text, naming an
// instance's files, masking secrets in a captured log.
//
// Thread-safety: free functions, no shared state.
#ifndef CRUCIBLE_SCHEDULER_STEP_IO_H_
#define CRUCIBLE_SCHEDULER_STEP_IO_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"

namespace crucible::scheduler {

/// Outputs of one attempt, in the order written.
using Outputs = std::vector<std::pair<std::string, std::string>>;

/// Parses `key=value` lines (blank lines ignored, a trailing '\r' dropped).
/// Fails with a message on a line without '=', a key outside
/// [A-Za-z_][A-Za-z0-9_.-]*, or text over `cap_bytes` ("outputs exceed 4 KiB").
/// A key written twice keeps its last value.
Result<Outputs> ParseOutputs(const std::string& text, uint64_t cap_bytes);

/// A file-name-safe, injective and readable form of an instance id: characters
/// outside [A-Za-z0-9._=,-] become %XX ("evaluate[alice]" -> "evaluate%5Balice%5D");
/// very long ids are shortened and suffixed with a digest.
std::string SafeName(const std::string& instance_id);

/// Replaces in `text` every occurrence of each secret (of at least
/// kMinMaskedLength bytes) by "***". Returns whether anything matched.
bool MaskSecrets(std::string& text, const std::vector<std::string>& secrets);

/// Replaces every occurrence of each secret (of at least kMinMaskedLength
/// bytes) in the file at `path` by "***"; rewrites the file only when
/// something matched. A missing file is not an error.
Status MaskSecretsInFile(const std::string& path, const std::vector<std::string>& secrets);

/// Shorter secrets are not masked (masking "a" would destroy a log).
inline constexpr size_t kMinMaskedLength = 4;

}  // namespace crucible::scheduler

#endif  // CRUCIBLE_SCHEDULER_STEP_IO_H_

// Terminal helpers of the command line: the one place that decides what is a
// terminal, and the escaping of bytes that must not reach one raw.
//
// Thread-safety: free functions, no shared state.
#ifndef CRUCIBLE_CLI_TERMINAL_H_
#define CRUCIBLE_CLI_TERMINAL_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace crucible::cli {

/// Whether `fd` is a terminal (stdout: 1, stderr: 2).
bool IsTerminal(int fd);

/// Columns of the terminal on `fd`, or `fallback` when unknown.
int TerminalWidth(int fd, int fallback = 80);

/// Step output made safe for a terminal: ESC and the other C0 control bytes
/// (and DEL, and the C1 controls U+0080..U+009F) become visible escapes such
/// as `\x1b`; `\n` and `\t` are kept.
std::string EscapeControlBytes(std::string_view bytes);

/// Epoch milliseconds -> "15:30:12" in local time.
std::string FormatClock(int64_t epoch_ms);

/// Epoch milliseconds -> "2026-11-25 15:30:12" in local time.
std::string FormatLocalDateTime(int64_t epoch_ms);

/// Epoch milliseconds -> "2026-11-25T15:30:12.345Z".
std::string FormatIsoUtc(int64_t epoch_ms);

/// Milliseconds -> "0.3s", "12.0s", "1m05s", "2h03m" (for progress and tables).
std::string FormatElapsed(int64_t ms);

}  // namespace crucible::cli

#endif  // CRUCIBLE_CLI_TERMINAL_H_

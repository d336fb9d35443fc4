// Who a process is, across time: its pid, its host, and its start time (so a
// pid the kernel gave to another process since is told apart). Linux /proc.
#ifndef CRUCIBLE_COMMON_PROCESS_IDENTITY_H_
#define CRUCIBLE_COMMON_PROCESS_IDENTITY_H_

#include <sys/types.h>

#include <string>

namespace crucible {

/// Field 22 of /proc/PID/stat (start time in clock ticks after boot), as text; "" when there is no such process.
std::string ProcessStartTime(pid_t pid);
/// This machine's host name ("" when it cannot be read).
std::string HostName();
/// Whether `pid` no longer runs: no such process, or a zombie.
bool ProcessGone(pid_t pid);
/// Whether a recorded start time and a process's current one name the same
/// process (localproc may read it from the boot clock: one tick either way is allowed).
bool SameStart(const std::string& recorded, const std::string& now);
/// Whether the process recorded as (pid, start) on this host still runs.
bool ProcessAlive(pid_t pid, const std::string& start);

}  // namespace crucible

#endif  // CRUCIBLE_COMMON_PROCESS_IDENTITY_H_

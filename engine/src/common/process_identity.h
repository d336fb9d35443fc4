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

}  // namespace crucible

#endif  // CRUCIBLE_COMMON_PROCESS_IDENTITY_H_

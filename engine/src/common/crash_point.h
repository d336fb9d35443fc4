// Named crash points: where a test build can kill the engine as `kill -9` would.
//
// CRUCIBLE_CRASH_POINT("after-start-before-record") does nothing unless the
// build has CRUCIBLE_CRASH_POINTS (a test build; CMake option of that name) and
// the environment names the point: CRUCIBLE_CRASH_AT=NAME kills the process
// with SIGKILL the first time it is reached, NAME:N the N-th time. Nothing is
// flushed or unwound: what the store and the backends hold then is what a
// crash leaves. kCrashPoints lists every name, for the crash sweep.
#ifndef CRUCIBLE_COMMON_CRASH_POINT_H_
#define CRUCIBLE_COMMON_CRASH_POINT_H_

namespace crucible {

/// Every crash point the engine has, in the order a run meets them.
inline constexpr const char* kCrashPoints[] = {
    "after-create-run",          // the run and its steps are recorded; nothing started
    "after-write-ahead",         // attempt rows committed; start() not called yet
    "after-start-before-record", // start() returned; its handle not committed
    "after-poll-before-commit",  // results taken from the backend; not committed
    "after-commit",              // a turn's completions committed
    "before-finish-run",         // every step ended; the run's end not recorded
    "after-takeover",            // resume: the run taken over; nothing adopted yet
    "after-adopt",               // resume: running attempts handed to their backends
};

#ifdef CRUCIBLE_CRASH_POINTS
/// Kills the process with SIGKILL when CRUCIBLE_CRASH_AT names this point (and hit count).
void CrashPoint(const char* name);
#define CRUCIBLE_CRASH_POINT(name) ::crucible::CrashPoint(name)
#else
#define CRUCIBLE_CRASH_POINT(name) ((void)0)
#endif

}  // namespace crucible

#endif  // CRUCIBLE_COMMON_CRASH_POINT_H_

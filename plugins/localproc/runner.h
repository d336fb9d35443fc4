// Runner: the step processes of one localproc supervisor.
//
// Spawns each attempt straight into a pooled cgroup slot, drains its output
// into the attempt's log (head and tail within the cap), enforces its timeout
// and ends it: all on the caller's thread, through the caller's epoll set.
// The supervisor (supervisor_main.cc) is its only user.
//
// Thread-safety: not thread-safe; one thread calls everything.
#ifndef CRUCIBLE_PLUGINS_LOCALPROC_RUNNER_H_
#define CRUCIBLE_PLUGINS_LOCALPROC_RUNNER_H_

#include <sys/epoll.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "crucible/backend_sdk.hpp"

namespace crucible::plugins::localproc {

/// The backend options the runner honours.
struct RunnerSettings {
  int64_t kill_grace_ms = 5000;
  int slots = 4;
  bool use_cgroups = true;
};

class Runner {
 public:
  /// Called on the caller's thread for each finished attempt, as soon as it ends.
  using ResultFn = std::function<void(sdk::Result&&)>;

  /// Registers its descriptors in epfd (not owned) with tags for which Owns() is true.
  Runner(const RunnerSettings& settings, int epfd, ResultFn on_result);
  ~Runner();  ///< kills and ends every attempt still running
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  /// Replaces the environment steps start from ("NAME=VALUE" entries).
  void SetBaseEnvironment(std::vector<std::string> entries);
  /// Starts one attempt under `key`. Throws sdk::Unavailable (infrastructure)
  /// or std::runtime_error; nothing of the attempt is left behind then.
  void Start(uint64_t key, const sdk::Launch& launch);
  /// SIGTERM to the attempt's tree, SIGKILL after grace_ms (negative: kill_grace).
  void Cancel(uint64_t key, int64_t grace_ms);
  /// Stops every running attempt as Cancel does (the supervisor's SIGTERM).
  void CancelAll(int64_t grace_ms);
  /// Whether an epoll tag is the runner's (the caller's own tags have bit 1 set).
  static bool Owns(const void* tag) { return (reinterpret_cast<uintptr_t>(tag) & 2u) == 0; }
  /// Handles the runner's events of one epoll_wait batch.
  void OnEvents(const std::vector<epoll_event>& events);
  /// Acts on deadlines due now; returns the epoll timeout until the next one (-1: none).
  int Tick();
  /// How many attempts run now.
  size_t running() const;
  /// The parent cgroups of its slots (CgroupPool::Parents()).
  std::vector<std::string> CgroupParents() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace crucible::plugins::localproc

#endif  // CRUCIBLE_PLUGINS_LOCALPROC_RUNNER_H_

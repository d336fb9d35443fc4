// Starting one step process: a vfork-style clone whose child joins the
// attempt's cgroups, its own process group and working directory, then execs.
//
// Why not posix_spawn: a process must enter its cgroups before it execs (so a
// daemonising grandchild cannot escape a kill), and glibc 2.36 has no spawn
// attribute for that. clone(CLONE_VM | CLONE_VFORK) on a private stack costs
// the same as posix_spawn. Where the tracking cgroup is v2 (and on x86-64),
// clone3(CLONE_INTO_CGROUP) creates the child in it: moving a process by
// writing "0" into cgroup.procs takes the cgroup write lock, ~60 us here while
// the engine waits in vfork. Memory and cpu cgroups of a v1 hierarchy are
// still joined that way. The child runs only async-signal-safe system calls.
#ifndef CRUCIBLE_PLUGINS_LOCALPROC_SPAWN_H_
#define CRUCIBLE_PLUGINS_LOCALPROC_SPAWN_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace crucible::plugins::localproc {

/// Everything the child needs, prepared by the parent (the child allocates nothing).
struct SpawnRequest {
  std::vector<std::string> candidates;  ///< executable paths to try in order (PATH search done)
  char* const* argv = nullptr;          ///< NULL-terminated
  char* const* envp = nullptr;          ///< NULL-terminated
  const char* cwd = nullptr;
  int stdin_fd = -1;                    ///< usually /dev/null
  int output_fd = -1;                   ///< becomes stdout and stderr
  std::vector<int> cgroup_procs_fds;    ///< the child writes "0" to each before exec
  /// A cgroup v2 directory to create the child in (clone3 CLONE_INTO_CGROUP), -1: none.
  /// Then track_procs_fd, the same cgroup's cgroup.procs, is left out of cgroup_procs_fds;
  /// when the kernel refuses, the child writes to it instead.
  int cgroup_dir_fd = -1;
  int track_procs_fd = -1;
  int64_t rlimit_as = 0;                ///< RLIMIT_AS when > 0
};

/// What became of a spawn.
struct SpawnResult {
  pid_t pid = -1;       ///< -1: clone itself failed (see error)
  int exec_errno = 0;   ///< non-zero: the executable could not be run (the child exited 127)
  int setup_errno = 0;  ///< non-zero: the child failed before exec (stage says where; it exited 127)
  const char* stage = "";
  std::string error;    ///< clone failure message
};

/// Spawns the child. Reuses one private stack per Spawner, so calls must not overlap.
class Spawner {
 public:
  Spawner();
  ~Spawner();
  Spawner(const Spawner&) = delete;
  Spawner& operator=(const Spawner&) = delete;
  SpawnResult Spawn(const SpawnRequest& request);

 private:
  void* stack_ = nullptr;
  size_t stack_size_ = 0;
  bool no_clone3_ = false;  ///< clone3(CLONE_INTO_CGROUP) failed once: use clone and cgroup.procs
};

/// The executables to try for argv0: itself when it has a slash, else each PATH entry.
std::vector<std::string> ExecutableCandidates(const std::string& argv0, const std::string& path_env);

}  // namespace crucible::plugins::localproc

#endif  // CRUCIBLE_PLUGINS_LOCALPROC_SPAWN_H_

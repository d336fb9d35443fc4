// Cgroup slots for localproc: detection of the cgroup layout of this machine
// and a reusable pool of per-attempt cgroups.
//
// Creating a cgroup costs about 165 us here, more than half a no-op step, so
// the pool keeps a fixed set of slots (<own cgroup>/crucible-<pid>-<start>-<n>/slot-<i>
// in every usable hierarchy) and hands them out again after each attempt.
// Slots beyond the configured count are created when every slot is busy and
// removed when they are released.
//
// Layouts: pure v2 (one hierarchy carries kill, memory and cpu), hybrid (a v2
// hierarchy at /sys/fs/cgroup/unified for tracking and cgroup.kill, memory and
// cpu in v1 hierarchies), v1 only (tracking in the freezer or pids hierarchy,
// killing by iterating cgroup.procs), or none writable.
//
// Thread-safety: Acquire/Release lock the pool; the per-slot calls touch only
// that slot's files and may run on any thread while the caller owns the slot.
#ifndef CRUCIBLE_PLUGINS_LOCALPROC_CGROUPS_H_
#define CRUCIBLE_PLUGINS_LOCALPROC_CGROUPS_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace crucible::plugins::localproc {

/// The cgroup arrangement found on this machine.
enum class CgroupLayout { kNone, kV2, kHybrid, kV1 };

/// One hierarchy the pool uses, as found in /proc/self/mounts and /proc/self/cgroup.
struct Hierarchy {
  bool v2 = false;
  std::string parent;  ///< absolute path of this process's parent cgroup (crucible-<pid>-<start>-<n>)
};

/// One reusable cgroup (a directory in each usable hierarchy).
struct Slot {
  int index = 0;
  bool persistent = true;  ///< kept after release (one of the configured slots)
  std::string track_dir;   ///< where every step process goes (kill, listing)
  std::string memory_dir;  ///< empty: no memory controller
  std::string cpu_dir;     ///< empty: no cpu controller
  int track_procs_fd = -1;
  int memory_procs_fd = -1;
  int cpu_procs_fd = -1;
  int kill_fd = -1;            ///< v2 cgroup.kill, kept open (-1: none)
  int track_dir_fd = -1;       ///< v2 track directory, for clone3(CLONE_INTO_CGROUP) (-1: v1)
  int events_fd = -1;          ///< v2 cgroup.events, kept open (-1: none)
  /// cgroup.kill was written to it: no more CLONE_INTO_CGROUP into it (Linux 6.18
  /// compares the kill sequence of the parent's cgroup with the target's and
  /// kills the new child when they differ).
  mutable bool killed = false;
  bool memory_shared = false;  ///< memory_dir == track_dir (pure v2)
  bool cpu_shared = false;     ///< cpu_dir == track_dir (pure v2)
  int64_t memory_set = 0;      ///< limit now written (0: unlimited)
  int64_t cpu_set = 0;         ///< millicores now written (0: unlimited)
  bool has_kill_file = false;  ///< v2 cgroup.kill exists (and kill_fd is open)
};

/// What the pool can enforce here.
struct CgroupCaps {
  CgroupLayout layout = CgroupLayout::kNone;
  bool kill = false;
  bool memory = false;
  bool cpu = false;
  std::string root;    ///< the cgroup under which this engine's slots are made, for describe
  std::string reason;  ///< why a capability is missing, for describe
};

/// Pool of reusable cgroup slots under this engine process's own cgroups.
class CgroupPool {
 public:
  /// Detects the layout and creates the parent cgroups. With enabled=false the pool is empty.
  CgroupPool(bool enabled, int keep_slots);
  ~CgroupPool();
  CgroupPool(const CgroupPool&) = delete;
  CgroupPool& operator=(const CgroupPool&) = delete;

  const CgroupCaps& caps() const { return caps_; }
  /// A free slot (created if needed), or nullptr with a message when none can be made.
  Slot* Acquire(std::string* err);
  /// Returns a slot whose processes have been killed.
  void Release(Slot* slot);
  /// Writes the limits of one attempt into the slot (0: unlimited); false with a message on failure.
  bool ApplyLimits(Slot* slot, int64_t memory_bytes, int64_t cpu_millicores, std::string* err);
  /// The OOM-kill counter of the slot's memory cgroup (0 when unknown).
  static uint64_t OomKills(const Slot& slot);
  /// Sends sig to every process in the slot.
  static void SignalAll(const Slot& slot, int sig);
  /// Kills every process in the slot (cgroup.kill where it exists).
  static void KillAll(const Slot& slot);
  /// Whether any live process is in the slot (true when unknown).
  static bool Populated(const Slot& slot);
  /// The parent cgroups this pool made, the one steps are tracked in first
  /// (empty without cgroups): what Reap() needs should this process be killed.
  std::vector<std::string> Parents() const;
  /// Kills every process in the slots under parents (a killed supervisor's
  /// pool, as Parents() named it) and removes the slots and the parents;
  /// false when one of them is still there.
  static bool Reap(const std::vector<std::string>& parents);

 private:
  std::unique_ptr<Slot> MakeSlot(int index, std::string* err);
  static void DestroySlot(Slot* slot);

  CgroupCaps caps_;
  Hierarchy track_;
  Hierarchy memory_;  ///< parent empty: none
  Hierarchy cpu_;     ///< parent empty: none
  int keep_slots_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Slot*> free_;
  int next_index_ = 0;
};

/// Probes the layout without keeping anything (for describe/check_step).
CgroupCaps ProbeCgroups();

}  // namespace crucible::plugins::localproc

#endif  // CRUCIBLE_PLUGINS_LOCALPROC_CGROUPS_H_

#include "cgroups.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <sstream>
#include <thread>

#include "protocol.h"

namespace crucible::plugins::localproc {
namespace {

/// Names the parent cgroups of successive pools in one process apart.
std::atomic<int> g_pool_counter{0};

/// Reads a small file (cgroup and proc files); empty on failure.
std::string ReadSmall(const std::string& path) {
  std::string out;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

/// Writes text to a cgroup file; returns 0 or the errno.
int WriteFile(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  int rc = 0;
  if (::write(fd, text.data(), text.size()) < 0) rc = errno;
  ::close(fd);
  return rc;
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

/// Removes a cgroup directory, retrying briefly while killed processes leave it.
void RemoveCgroupDir(const std::string& dir) {
  if (dir.empty()) return;
  for (int i = 0; i < 200; ++i) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return;
    if (errno != EBUSY) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

/// The value of "key N" in a flat keyed cgroup file.
uint64_t KeyedValue(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return 0;
}

/// Mount points of the cgroup hierarchies and this process's place in each.
struct Mounts {
  std::string v2_mount;
  std::map<std::string, std::string> v1_mount;  ///< controller -> mount point
  std::string v2_path;                          ///< own path in the v2 hierarchy
  std::map<std::string, std::string> v1_path;   ///< controller -> own path
};

Mounts ReadMounts() {
  Mounts m;
  std::istringstream mounts(ReadSmall("/proc/self/mounts"));
  std::string line;
  while (std::getline(mounts, line)) {
    std::istringstream f(line);
    std::string dev, dir, type, opts;
    f >> dev >> dir >> type >> opts;
    if (type == "cgroup2") {
      if (m.v2_mount.empty()) m.v2_mount = dir;
    } else if (type == "cgroup") {
      std::istringstream o(opts);
      std::string opt;
      while (std::getline(o, opt, ',')) {
        if (opt == "memory" || opt == "cpu" || opt == "freezer" || opt == "pids") m.v1_mount[opt] = dir;
      }
    }
  }
  std::istringstream groups(ReadSmall("/proc/self/cgroup"));
  while (std::getline(groups, line)) {
    size_t a = line.find(':');
    size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    std::string ctrls = line.substr(a + 1, b - a - 1);
    std::string path = line.substr(b + 1);
    if (path == "/") path.clear();
    if (ctrls.empty()) {
      m.v2_path = path;
      continue;
    }
    std::istringstream c(ctrls);
    std::string ctrl;
    while (std::getline(c, ctrl, ',')) m.v1_path[ctrl] = path;
  }
  return m;
}

/// Creates <mount><own>/<name>; returns its path or empty with the reason.
std::string MakeParent(const std::string& mount, const std::string& own, const std::string& name,
                       std::string* reason) {
  std::string dir = mount + own + "/" + name;
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    *reason = "cannot create " + dir + ": " + std::strerror(errno);
    return "";
  }
  return dir;
}

std::vector<pid_t> ListProcs(const std::string& dir) {
  std::vector<pid_t> pids;
  std::istringstream in(ReadSmall(dir + "/cgroup.procs"));
  long p;
  while (in >> p) pids.push_back(static_cast<pid_t>(p));
  return pids;
}

/// SIGKILL to every process in the cgroup dir, repeated until none is left,
/// so that a fork racing the kill is caught too (where there is no cgroup.kill).
void KillEachIn(const std::string& dir) {
  for (int round = 0; round < 20; ++round) {
    std::vector<pid_t> pids = ListProcs(dir);
    if (pids.empty()) return;
    for (pid_t p : pids) ::kill(p, SIGKILL);
  }
}

}  // namespace

CgroupPool::CgroupPool(bool enabled, int keep_slots) : keep_slots_(keep_slots < 1 ? 1 : keep_slots) {
  if (!enabled) {
    caps_.reason = "disabled by use_cgroups = false";
    return;
  }
  Mounts m = ReadMounts();
  bool has_v1 = !m.v1_mount.empty();
  if (!m.v2_mount.empty() && !has_v1) {
    caps_.layout = CgroupLayout::kV2;
  } else if (!m.v2_mount.empty()) {
    caps_.layout = CgroupLayout::kHybrid;
  } else if (has_v1) {
    caps_.layout = CgroupLayout::kV1;
  } else {
    caps_.reason = "no cgroup hierarchy mounted";
    return;
  }
  // The start time makes the name this process's alone: a killed supervisor's
  // cgroups, reaped later, can never be a live process's that got its pid.
  std::string name = "crucible-" + std::to_string(::getpid()) + "-" + proto::StartTimeOf(::getpid()) + "-" +
                     std::to_string(g_pool_counter++);
  std::string reason;
  if (!m.v2_mount.empty()) {
    std::string own = m.v2_mount + m.v2_path;
    track_.parent = MakeParent(m.v2_mount, m.v2_path, name, &reason);
    track_.v2 = true;
    if (!track_.parent.empty() && caps_.layout == CgroupLayout::kV2) {
      // Delegate memory and cpu to our subtree where the parent allows it.
      WriteFile(own + "/cgroup.subtree_control", "+memory");
      WriteFile(own + "/cgroup.subtree_control", "+cpu");
      WriteFile(track_.parent + "/cgroup.subtree_control", "+memory");
      WriteFile(track_.parent + "/cgroup.subtree_control", "+cpu");
      memory_ = track_;
      cpu_ = track_;
    }
  }
  if (track_.parent.empty()) {
    track_.v2 = false;
    for (const char* c : {"freezer", "pids"}) {
      if (m.v1_mount.count(c)) {
        track_.parent = MakeParent(m.v1_mount[c], m.v1_path[c], name, &reason);
        if (!track_.parent.empty()) break;
      }
    }
  }
  if (track_.parent.empty()) {
    caps_.reason = reason.empty() ? "no writable cgroup" : reason;
    caps_.layout = CgroupLayout::kNone;
    return;
  }
  if (caps_.layout != CgroupLayout::kV2) {
    if (m.v1_mount.count("memory")) memory_.parent = MakeParent(m.v1_mount["memory"], m.v1_path["memory"], name, &reason);
    if (m.v1_mount.count("cpu")) cpu_.parent = MakeParent(m.v1_mount["cpu"], m.v1_path["cpu"], name, &reason);
  }
  std::string err;
  std::unique_ptr<Slot> first = MakeSlot(next_index_++, &err);
  if (!first) {
    caps_.reason = err;
    caps_.layout = CgroupLayout::kNone;
    RemoveCgroupDir(track_.parent);
    if (!memory_.v2) RemoveCgroupDir(memory_.parent);
    if (!cpu_.v2) RemoveCgroupDir(cpu_.parent);
    track_ = memory_ = cpu_ = Hierarchy{};
    return;
  }
  caps_.root = track_.parent.substr(0, track_.parent.rfind('/'));
  caps_.kill = true;
  caps_.memory = !first->memory_dir.empty();
  caps_.cpu = !first->cpu_dir.empty();
  if (!caps_.memory) caps_.reason += "no writable memory controller; ";
  if (!caps_.cpu) caps_.reason += "no writable cpu controller; ";
  if (!first->has_kill_file) caps_.reason += "no cgroup.kill (processes are killed one by one); ";
  free_.push_back(first.get());
  slots_.push_back(std::move(first));
}

CgroupPool::~CgroupPool() {
  for (auto& s : slots_) {
    KillAll(*s);
    DestroySlot(s.get());
  }
  RemoveCgroupDir(track_.parent);
  if (memory_.parent != track_.parent) RemoveCgroupDir(memory_.parent);
  if (cpu_.parent != track_.parent) RemoveCgroupDir(cpu_.parent);
}

std::vector<std::string> CgroupPool::Parents() const {
  std::vector<std::string> out;
  for (const Hierarchy* h : {&track_, &memory_, &cpu_}) {
    if (!h->parent.empty() && std::find(out.begin(), out.end(), h->parent) == out.end()) out.push_back(h->parent);
  }
  return out;
}

bool CgroupPool::Reap(const std::vector<std::string>& parents) {
  if (parents.empty()) return true;
  auto children = [](const std::string& parent) {
    std::vector<std::string> dirs;
    if (DIR* d = ::opendir(parent.c_str())) {
      while (const dirent* e = ::readdir(d)) {
        if (std::strncmp(e->d_name, "slot-", 5) == 0) dirs.push_back(parent + "/" + e->d_name);
      }
      ::closedir(d);
    }
    return dirs;
  };
  // Every step process is in a slot of the first parent: cgroup.kill there
  // (v2), or SIGKILL to each process listed until none is left.
  for (const std::string& slot : children(parents.front())) {
    if (WriteFile(slot + "/cgroup.kill", "1") != 0) KillEachIn(slot);
  }
  bool gone = true;
  for (const std::string& parent : parents) {
    for (const std::string& slot : children(parent)) RemoveCgroupDir(slot);
    RemoveCgroupDir(parent);
    gone = gone && !Exists(parent);
  }
  return gone;
}

std::unique_ptr<Slot> CgroupPool::MakeSlot(int index, std::string* err) {
  auto slot = std::make_unique<Slot>();
  slot->index = index;
  std::string leaf = "/slot-" + std::to_string(index);
  slot->track_dir = track_.parent + leaf;
  if (::mkdir(slot->track_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    *err = "cannot create " + slot->track_dir + ": " + std::strerror(errno);
    return nullptr;
  }
  slot->track_procs_fd = ::open((slot->track_dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
  if (slot->track_procs_fd < 0) {
    *err = "cannot open " + slot->track_dir + "/cgroup.procs: " + std::strerror(errno);
    ::rmdir(slot->track_dir.c_str());
    return nullptr;
  }
  if (track_.v2) {
    slot->kill_fd = ::open((slot->track_dir + "/cgroup.kill").c_str(), O_WRONLY | O_CLOEXEC);
    slot->track_dir_fd = ::open(slot->track_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    slot->events_fd = ::open((slot->track_dir + "/cgroup.events").c_str(), O_RDONLY | O_CLOEXEC);
  }
  slot->has_kill_file = slot->kill_fd >= 0;
  if (!memory_.parent.empty()) {
    if (memory_.parent == track_.parent) {
      if (Exists(slot->track_dir + "/memory.max")) {
        slot->memory_dir = slot->track_dir;
        slot->memory_shared = true;
        WriteFile(slot->memory_dir + "/memory.oom.group", "1");
      }
    } else {
      std::string dir = memory_.parent + leaf;
      if (::mkdir(dir.c_str(), 0755) == 0 || errno == EEXIST) {
        slot->memory_procs_fd = ::open((dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
        if (slot->memory_procs_fd >= 0) slot->memory_dir = dir;
      }
    }
  }
  if (!cpu_.parent.empty()) {
    if (cpu_.parent == track_.parent) {
      if (Exists(slot->track_dir + "/cpu.max")) {
        slot->cpu_dir = slot->track_dir;
        slot->cpu_shared = true;
      }
    } else {
      std::string dir = cpu_.parent + leaf;
      if (::mkdir(dir.c_str(), 0755) == 0 || errno == EEXIST) {
        slot->cpu_procs_fd = ::open((dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
        if (slot->cpu_procs_fd >= 0) {
          slot->cpu_dir = dir;
          WriteFile(dir + "/cpu.cfs_period_us", "100000");
        }
      }
    }
  }
  return slot;
}

void CgroupPool::DestroySlot(Slot* slot) {
  for (int* fd : {&slot->track_procs_fd, &slot->memory_procs_fd, &slot->cpu_procs_fd, &slot->kill_fd,
                  &slot->track_dir_fd, &slot->events_fd}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
  RemoveCgroupDir(slot->track_dir);
  if (!slot->memory_shared) RemoveCgroupDir(slot->memory_dir);
  if (!slot->cpu_shared) RemoveCgroupDir(slot->cpu_dir);
}

Slot* CgroupPool::Acquire(std::string* err) {
  if (track_.parent.empty()) {
    *err = caps_.reason;
    return nullptr;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!free_.empty()) {
    Slot* s = free_.back();
    free_.pop_back();
    return s;
  }
  std::unique_ptr<Slot> s = MakeSlot(next_index_++, err);
  if (!s) return nullptr;
  s->persistent = static_cast<int>(slots_.size()) < keep_slots_;
  Slot* raw = s.get();
  slots_.push_back(std::move(s));
  return raw;
}

void CgroupPool::Release(Slot* slot) {
  std::lock_guard<std::mutex> lock(mu_);
  if (slot->persistent) {
    free_.push_back(slot);
    return;
  }
  DestroySlot(slot);
  for (auto it = slots_.begin(); it != slots_.end(); ++it) {
    if (it->get() == slot) {
      slots_.erase(it);
      break;
    }
  }
}

bool CgroupPool::ApplyLimits(Slot* slot, int64_t memory_bytes, int64_t cpu_millicores, std::string* err) {
  if (!slot->memory_dir.empty() && (slot->memory_shared || memory_bytes > 0) && slot->memory_set != memory_bytes) {
    int rc;
    if (slot->memory_shared) {
      std::string v = memory_bytes > 0 ? std::to_string(memory_bytes) : "max";
      rc = WriteFile(slot->memory_dir + "/memory.max", v);
      WriteFile(slot->memory_dir + "/memory.swap.max", memory_bytes > 0 ? "0" : "max");
    } else {
      std::string memsw = slot->memory_dir + "/memory.memsw.limit_in_bytes";
      bool has_memsw = Exists(memsw);
      if (has_memsw) WriteFile(memsw, "-1");
      rc = WriteFile(slot->memory_dir + "/memory.limit_in_bytes",
                     memory_bytes > 0 ? std::to_string(memory_bytes) : "-1");
      if (has_memsw && memory_bytes > 0) WriteFile(memsw, std::to_string(memory_bytes));
    }
    if (rc != 0) {
      *err = "cannot set the memory limit in " + slot->memory_dir + ": " + std::strerror(rc);
      return false;
    }
    slot->memory_set = memory_bytes;
  }
  if (!slot->cpu_dir.empty() && (slot->cpu_shared || cpu_millicores > 0) && slot->cpu_set != cpu_millicores) {
    int64_t quota = cpu_millicores * 100;
    if (cpu_millicores > 0 && quota < 1000) quota = 1000;
    int rc;
    if (slot->cpu_shared) {
      rc = WriteFile(slot->cpu_dir + "/cpu.max", (cpu_millicores > 0 ? std::to_string(quota) : "max") + " 100000");
    } else {
      rc = WriteFile(slot->cpu_dir + "/cpu.cfs_quota_us", cpu_millicores > 0 ? std::to_string(quota) : "-1");
    }
    if (rc != 0) {
      *err = "cannot set the cpu limit in " + slot->cpu_dir + ": " + std::strerror(rc);
      return false;
    }
    slot->cpu_set = cpu_millicores;
  }
  return true;
}

uint64_t CgroupPool::OomKills(const Slot& slot) {
  if (slot.memory_dir.empty()) return 0;
  if (slot.memory_shared) return KeyedValue(ReadSmall(slot.memory_dir + "/memory.events"), "oom_kill");
  return KeyedValue(ReadSmall(slot.memory_dir + "/memory.oom_control"), "oom_kill");
}

void CgroupPool::SignalAll(const Slot& slot, int sig) {
  for (pid_t p : ListProcs(slot.track_dir)) ::kill(p, sig);
}

void CgroupPool::KillAll(const Slot& slot) {
  if (slot.kill_fd >= 0) {
    slot.killed = true;
    if (::write(slot.kill_fd, "1", 1) == 1) return;
  }
  KillEachIn(slot.track_dir);
}

bool CgroupPool::Populated(const Slot& slot) {
  if (slot.events_fd < 0) return true;
  char buf[256];
  ssize_t n = ::pread(slot.events_fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return true;
  buf[n] = '\0';
  const char* p = std::strstr(buf, "populated ");
  return p == nullptr || p[10] != '0';
}

CgroupCaps ProbeCgroups() {
  CgroupPool pool(true, 1);
  return pool.caps();
}

}  // namespace crucible::plugins::localproc

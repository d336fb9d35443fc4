// The localproc supervisor's runner: each attempt is a process (group) on this
// machine, a child of the run's supervisor process (supervisor_main.cc).
//
// Design:
//   - Start() runs on the supervisor's one thread: it prepares the working
//     directory, spawns the child (spawn.h) straight into a pooled cgroup slot
//     (cgroups.h). The executable is looked up in PATH here, once per argv[0]
//     and PATH value, so the child (while the supervisor waits in vfork) execs
//     the right file first.
//   - Files cost more than processes: on ext4 without a journal, creating an
//     inode scans past every inode deleted in the last seconds, so a no-op step
//     that creates and deletes a directory and two files gets slower as the run
//     goes on. So a step creates nothing it does not need: the log file is
//     created on the first byte of output (a silent step has none; its path is
//     still recorded and reads as empty), CRUCIBLE_OUTPUT is created by the step
//     if it writes outputs, and an emptied working directory (keeping its
//     upstream file) is renamed into a spare pool and renamed into place for a
//     later attempt instead of being removed and made again (WorkDirRecycler).
//   - The supervisor's one epoll loop serves every attempt: a pidfd per
//     child and the read end of each child's output pipe, beside the
//     supervisor's sockets. Deadlines (timeouts, SIGKILL after a grace) are
//     the epoll timeout. When pidfd_open
//     is unavailable (kernel < 5.3) the loop ticks every 5 ms and checks its
//     children with waitid(WNOHANG | WNOWAIT) instead.
//   - Output: one pipe per attempt carries stdout and stderr; the supervisor
//     drains it into the log file, which keeps the head and the tail of the
//     output within log_cap_bytes. This bounds disk use during a flood, which
//     handing the child the log file could not, and costs a pipe and two epoll
//     registrations per attempt, a few microseconds against a ~300 us spawn.
//     Head and tail cost no memory (LogRing): the first cap/2 bytes go to the
//     file as they come; the rest of the cap is a circular buffer in the file
//     right after them, written with pwrite at (position - head) mod tail, so
//     an output within the cap is the file exactly as written and a read costs
//     one or two pwrites whatever the flood. Once the output outgrows the cap,
//     the attempt's end puts the ring in order (common/log_ring.h): it is
//     copied in order past its end (copy_file_range, else pread/pwrite
//     through a 64 KiB buffer), the marker line
//     "\n[crucible-engine: N bytes dropped]\n" is written after the head and
//     the ordered tail copied in behind it, in non-overlapping chunks, and the
//     file cut to head + marker + tail: about 2 x cap/2 bytes copied in the
//     page cache once per flooding attempt, the file briefly 1.5 x cap.
//     log_bytes_kept counts the step's bytes in the file (the marker is not
//     output), log_bytes_dropped the rest.
//   - When the step's main process exits, whatever is left of its tree is
//     killed (the step is over; nothing it started outlives it), the pipe is
//     drained of what is already written (not waiting for EOF, which a killed
//     grandchild might delay), the outputs file is read and the result handed
//     to the supervisor (which sends it to the engine); then the cleaner
//     thread recycles or removes the working directory (destruction waits
//     for it).
//   - Timeout and cancel: SIGTERM to the whole tree (process group plus every
//     process in the cgroup slot, setsid ones included), then SIGKILL to the
//     tree after a grace: kill_grace (default 5 s) for timeouts, the grace the
//     engine passes for cancel (negative: kill_grace).
//   - Without a writable cgroup: process groups only (kill(-pgid)), memory
//     limits approximated with RLIMIT_AS, cpu limits not enforced, and a child
//     that calls setsid() escapes timeouts; describe() says so.
//
// Thread-safety: everything runs on the supervisor's one thread, but for the
// cleaner thread, which only empties finished working directories (through
// WorkDirRecycler, whose pool is locked).
#include <fcntl.h>
#include <signal.h>
#include <dirent.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "runner.h"

#include "common/log_ring.h"

#include "cgroups.h"
#include "crucible/backend_sdk.hpp"
#include "spawn.h"

extern char** environ;

namespace crucible::plugins::localproc {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kDefaultKillGraceMs = 5000;
constexpr uint64_t kDefaultLogCap = 64ull << 20;
constexpr const char* kOutputFile = ".crucible-output";
constexpr const char* kUpstreamFile = "crucible-upstream.json";
constexpr int kFallbackTickMs = 5;

int64_t NowEpochMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t NowMonoMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// pidfd_open(2) through syscall (glibc 2.36's <sys/pidfd.h> lacks C linkage in C++).
int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

std::string Errno(const std::string& what, int err) { return what + ": " + std::strerror(err); }

/// Writes all of data to fd; false on error.
bool WriteAll(int fd, const char* data, size_t len) {
  while (len > 0) {
    ssize_t n = ::write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

/// Reads up to cap bytes of a file; nullopt when it does not exist.
std::optional<std::string> ReadCapped(const std::string& path, uint64_t cap) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[8192];
  while (out.size() < cap) {
    size_t want = std::min<uint64_t>(sizeof buf, cap - out.size());
    ssize_t n = ::read(fd, buf, want);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}


/// Why an attempt is being stopped by us.
enum class StopReason { kNone, kTimeout, kCancel };

/// What the runner keeps per running attempt.
struct Attempt {
  uint64_t key = 0;
  pid_t pid = -1;
  int pidfd = -1;
  int out_fd = -1;  ///< read end of the output pipe, -1 once closed
  int log_fd = -1;  ///< -1 until the first byte of output (or when it cannot be opened)
  std::string log_path;
  bool log_failed = false;  ///< opening the log failed: output is counted as dropped
  uint64_t log_cap = 0;
  uint64_t written = 0;  ///< bytes of output placed in the log so far (the ring's stream position)
  uint64_t kept = 0;     ///< set at the end: bytes of output left in the log
  uint64_t dropped = 0;  ///< bytes of output not in the log (the ring's overwritten ones added at the end)
  Slot* slot = nullptr;
  bool had_slot = false;  ///< ran in a cgroup slot (its whole tree is killed at the end)
  bool oom_tracked = false;
  uint64_t oom_before = 0;
  int64_t started_ms = 0;
  int64_t timeout_at = 0;  ///< monotonic ms; 0: none
  int64_t kill_at = 0;     ///< monotonic ms of the SIGKILL after a grace; 0: none
  StopReason stop = StopReason::kNone;
  std::string work_dir;
  std::string output_path;
  bool keep_work = false;
  uint64_t output_cap = 0;
  std::string message;  ///< set at start (exec failure)
};

/// Keeps emptied working directories for reuse.
///
/// A finished attempt's directory, once the files in it are removed (the
/// upstream file the backend wrote is kept, for the next attempt that has
/// one), is renamed to <parent>/+crucible-spare-<pid>-<n>-d<N> and later
/// renamed into place as a new attempt's fresh working directory: no inode is
/// made or freed per step. '+' never appears in a name the engine makes
/// (SafeName), so spares cannot collide with a step's directory. A changed
/// mode or owner, a subdirectory or a hard-linked upstream file, and the
/// directory is removed as before instead. The pool holds at most kMaxSpares
/// directories of each kind (empty; holding an upstream file) per parent.
///
/// Thread-safety: every call locks the pool; Take runs on the supervisor's
/// thread, Recycle on the cleaner.
class WorkDirRecycler {
 public:
  static constexpr size_t kMaxSpares = 64;

  /// What Take put in place.
  enum class Taken { kNone, kEmpty, kWithUpstream };

  ~WorkDirRecycler() {
    for (auto& [parent, pool] : pools_) {
      for (const auto* ids : {&pool.empty, &pool.with_file}) {
        for (uint64_t id : *ids) {
          std::error_code ec;
          fs::remove_all(pool.root + std::to_string(id), ec);
        }
      }
    }
  }

  /// Renames a spare directory to work_dir: one holding an upstream file when
  /// with_upstream (else an empty one, never one holding a file).
  Taken Take(const std::string& work_dir, bool with_upstream) {
    std::string spare;
    Taken kind = Taken::kNone;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Pool* pool = Find(Parent(work_dir));
      if (pool == nullptr) return Taken::kNone;
      std::vector<uint64_t>* from = nullptr;
      if (with_upstream && !pool->with_file.empty()) {
        from = &pool->with_file;
        kind = Taken::kWithUpstream;
      } else if (!pool->empty.empty()) {
        from = &pool->empty;
        kind = Taken::kEmpty;
      } else {
        return Taken::kNone;
      }
      spare = pool->root + std::to_string(from->back());
      from->pop_back();
    }
    if (::renameat2(AT_FDCWD, spare.c_str(), AT_FDCWD, work_dir.c_str(), RENAME_NOREPLACE) == 0) return kind;
    std::error_code ec;
    fs::remove_all(spare, ec);
    return Taken::kNone;
  }

  /// Records the mode a freshly made working directory gets (the first one made).
  void NoteFreshDir(const std::string& work_dir) {
    struct stat st;
    if (fresh_dir_mode_.load() >= 0 || ::stat(work_dir.c_str(), &st) != 0) return;
    fresh_dir_mode_.store(static_cast<int>(st.st_mode & 07777));
  }

  /// Empties work_dir into the pool when it can; otherwise removes it.
  void Recycle(const std::string& work_dir, const char* upstream_name) {
    if (!TryRecycle(work_dir, upstream_name)) {
      std::error_code ec;
      if (::rmdir(work_dir.c_str()) != 0 && errno != ENOENT) fs::remove_all(work_dir, ec);
    }
  }

 private:
  struct Pool {
    std::string root;
    std::vector<uint64_t> empty;
    std::vector<uint64_t> with_file;
    uint64_t next = 0;
  };

  static std::string Parent(const std::string& path) {
    size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
  }

  Pool* Find(const std::string& parent) {
    auto it = pools_.find(parent);
    return it == pools_.end() ? nullptr : &it->second;
  }

  /// The pool of parent (its spares sit in parent itself: a rename within one
  /// directory is cheaper than across two).
  Pool* FindOrMake(const std::string& parent) {
    if (Pool* p = Find(parent)) return p;
    static std::atomic<int> counter{0};
    Pool& p = pools_[parent];
    p.root = parent + "/+crucible-spare-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-d";
    return &p;
  }

  bool TryRecycle(const std::string& work_dir, const char* upstream_name) {
    int mode = fresh_dir_mode_.load();
    if (mode < 0) return false;
    int dfd = ::open(work_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) return false;
    struct stat st;
    // Only what we made, as we made it: same owner and mode, no subdirectory.
    bool ok = ::fstat(dfd, &st) == 0 && st.st_uid == ::geteuid() && static_cast<int>(st.st_mode & 07777) == mode &&
              st.st_nlink == 2;
    bool has_upstream = false;
    DIR* dir = ok ? ::fdopendir(dfd) : nullptr;
    if (dir == nullptr) {
      ::close(dfd);
      return false;
    }
    while (ok) {
      errno = 0;
      const dirent* e = ::readdir(dir);
      if (e == nullptr) {
        ok = errno == 0;
        break;
      }
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      if (std::strcmp(e->d_name, upstream_name) == 0) {
        struct stat fst;
        has_upstream = ::fstatat(::dirfd(dir), upstream_name, &fst, AT_SYMLINK_NOFOLLOW) == 0 &&
                       S_ISREG(fst.st_mode) && fst.st_nlink == 1 && fst.st_uid == ::geteuid() &&
                       (fst.st_mode & 07777) == 0644;
        if (has_upstream) continue;
      }
      // What the step left (its outputs file, say): a file goes, a directory (nlink) was ruled out.
      ok = ::unlinkat(::dirfd(dir), e->d_name, 0) == 0;
    }
    ::closedir(dir);
    if (!ok) return false;
    std::string dest;
    uint64_t id = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Pool* pool = FindOrMake(Parent(work_dir));
      if (pool == nullptr || (has_upstream ? pool->with_file : pool->empty).size() >= kMaxSpares) return false;
      id = pool->next++;
      dest = pool->root + std::to_string(id);
    }
    if (::renameat2(AT_FDCWD, work_dir.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) != 0) return false;
    std::lock_guard<std::mutex> lock(mu_);
    Pool* pool = Find(Parent(work_dir));
    (has_upstream ? pool->with_file : pool->empty).push_back(id);
    return true;
  }

  std::mutex mu_;
  std::unordered_map<std::string, Pool> pools_;  ///< by parent directory; guarded by mu_
  std::atomic<int> fresh_dir_mode_{-1};
};

/// The first path to try for argv0 (PATH searched in the parent), cached per argv0 and PATH.
/// Relative PATH entries depend on the working directory and are left to the child.
class ExecutableCache {
 public:
  /// The candidates for the child: the resolved file first, then the full search as a fallback.
  std::vector<std::string> Candidates(const std::string& argv0, const std::string& path_env) {
    std::vector<std::string> all = ExecutableCandidates(argv0, path_env);
    if (argv0.find('/') != std::string::npos) return all;
    for (const std::string& c : all) {
      if (c.empty() || c[0] != '/') return all;
    }
    std::string key = argv0 + '\0' + path_env;
    auto it = cache_.find(key);
    if (it == cache_.end()) {
      for (const std::string& c : all) {
        struct stat st;
        if (::stat(c.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(c.c_str(), X_OK) == 0) {
          it = cache_.emplace(key, c).first;
          break;
        }
      }
      if (it == cache_.end()) return all;
    }
    all.insert(all.begin(), it->second);
    return all;
  }

 private:
  std::unordered_map<std::string, std::string> cache_;  ///< supervisor thread only
};

/// The environment steps start from: the engine's, as its plugin last sent it.
struct EnvCache {
  std::vector<std::string> entries;                ///< the NAME=VALUE entries
  std::vector<char*> ptrs;                         ///< into entries, in order
  std::unordered_map<std::string, size_t> index;   ///< name -> slot of its last occurrence
  std::string path;                                ///< PATH's value ("" when unset)
};

class BaseEnvironment {
 public:
  void Set(std::vector<std::string> entries) {
    cache_ = EnvCache{};
    for (std::string& e : entries) {
      if (e.find('=') == std::string::npos) continue;
      cache_.entries.push_back(std::move(e));
    }
    for (size_t i = 0; i < cache_.entries.size(); ++i) {
      std::string& entry = cache_.entries[i];
      cache_.ptrs.push_back(entry.data());
      std::string name = entry.substr(0, entry.find('='));
      if (name == "PATH") cache_.path = entry.substr(5);
      cache_.index[name] = i;
    }
  }
  const EnvCache& Get() const { return cache_; }

 private:
  EnvCache cache_;
};

}  // namespace

/// Empties finished attempts' working directories (into the recycler's pool,
/// or removes them) on a thread of its own; joins it at destruction, once
/// everything queued is done.
class WorkDirCleaner {
 public:
  explicit WorkDirCleaner(WorkDirRecycler& recycler) : recycler_(recycler), thread_([this] { Loop(); }) {}
  ~WorkDirCleaner() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  void Push(std::string dir, bool recycle) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.emplace_back(std::move(dir), recycle);
    }
    cv_.notify_one();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_, and nothing left
      auto [dir, recycle] = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      if (recycle) {
        recycler_.Recycle(dir, kUpstreamFile);
      } else {
        std::error_code ec;
        if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) fs::remove_all(dir, ec);
      }
      lock.lock();
    }
  }

  WorkDirRecycler& recycler_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::string, bool>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

struct Runner::Impl {
  Impl(const RunnerSettings& settings, int epfd, ResultFn on_result)
      : settings_(settings), pool_(settings_.use_cgroups, settings_.slots), epfd_(epfd),
        on_result_(std::move(on_result)) {
    devnull_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull_ < 0) throw std::runtime_error(Errno("localproc: cannot open /dev/null", errno));
    int probe = PidfdOpen(::getpid());
    if (probe >= 0) {
      ::close(probe);
    } else {
      have_pidfd_ = false;
    }
    std::vector<std::string> entries;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) entries.emplace_back(*e);
    env_.Set(std::move(entries));
  }

  ~Impl() {
    ShutDown();
    if (devnull_ >= 0) ::close(devnull_);
  }

  void Start(uint64_t key, const sdk::Launch& launch) {
    if (launch.argv.empty() || launch.argv[0].empty()) throw std::runtime_error("localproc: empty argv");
    if (launch.work_dir.empty() || launch.log_path.empty())
      throw std::runtime_error("localproc: work_dir and log_path are required");
    auto a = std::make_unique<Attempt>();
    a->key = key;
    a->work_dir = launch.work_dir;
    a->keep_work = launch.keep_work;
    a->output_cap = launch.output_cap_bytes;
    a->log_cap = launch.log_cap_bytes == 0 ? kDefaultLogCap : launch.log_cap_bytes;
    PrepareWorkDir(launch, a.get());

    // Environment: the engine's own (cached), then the launch's, then ours.
    std::vector<std::pair<std::string, std::string>> overrides = launch.env;
    overrides.emplace_back("CRUCIBLE_OUTPUT", a->output_path);
    if (launch.upstream_json) overrides.emplace_back("CRUCIBLE_UPSTREAM", a->work_dir + "/" + kUpstreamFile);
    const EnvCache& base = env_.Get();
    std::vector<char*> envp = base.ptrs;
    std::vector<std::string> extra;
    extra.reserve(overrides.size());  // no reallocation: envp points into these
    std::vector<std::pair<const std::string*, size_t>> added;  ///< names not in the base, their envp slot
    std::string path_env = base.path;
    for (const auto& [k, v] : overrides) {
      extra.push_back(k + "=" + v);
      char* entry = extra.back().data();
      if (k == "PATH") path_env = v;
      if (auto it = base.index.find(k); it != base.index.end()) {
        envp[it->second] = entry;
        continue;
      }
      auto same = std::find_if(added.begin(), added.end(), [&](const auto& n) { return *n.first == k; });
      if (same != added.end()) {
        envp[same->second] = entry;
      } else {
        added.emplace_back(&k, envp.size());
        envp.push_back(entry);
      }
    }
    envp.push_back(nullptr);
    std::vector<std::string> args = launch.argv;
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (std::string& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);

    // The log is created on the first byte of output; its directory must be writable now.
    a->log_path = launch.log_path;
    {
      size_t slash = a->log_path.find_last_of('/');
      std::string log_dir = slash == std::string::npos ? "." : slash == 0 ? "/" : a->log_path.substr(0, slash);
      if (::access(log_dir.c_str(), W_OK | X_OK) != 0) {
        int err = errno;
        RemoveWorkDir(*a);
        throw std::runtime_error(Errno("localproc: cannot open log " + launch.log_path, err));
      }
    }
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) {
      int err = errno;
      Abandon(a.get());
      throw sdk::Unavailable(Errno("localproc: pipe", err));
    }
    a->out_fd = pipefd[0];
    ::fcntl(a->out_fd, F_SETFL, O_NONBLOCK);

    SpawnRequest req;
    req.candidates = executables_.Candidates(launch.argv[0], path_env);
    req.argv = argv.data();
    req.envp = envp.data();
    req.cwd = a->work_dir.c_str();
    req.stdin_fd = devnull_;
    req.output_fd = pipefd[1];
    if (pool_.caps().kill) {
      std::string err;
      a->slot = pool_.Acquire(&err);
      if (a->slot == nullptr) {
        ::close(pipefd[1]);
        Abandon(a.get());
        throw sdk::Unavailable("localproc: no cgroup slot: " + err);
      }
      if (!pool_.ApplyLimits(a->slot, launch.memory_bytes, launch.cpu_millicores, &err)) {
        ::close(pipefd[1]);
        Abandon(a.get());
        throw sdk::Unavailable("localproc: " + err);
      }
      a->had_slot = true;
      req.track_procs_fd = a->slot->track_procs_fd;
      if (!a->slot->killed) req.cgroup_dir_fd = a->slot->track_dir_fd;
      if (launch.memory_bytes > 0 && a->slot->memory_procs_fd >= 0)
        req.cgroup_procs_fds.push_back(a->slot->memory_procs_fd);
      if (launch.cpu_millicores > 0 && a->slot->cpu_procs_fd >= 0) req.cgroup_procs_fds.push_back(a->slot->cpu_procs_fd);
      if (launch.memory_bytes > 0 && !a->slot->memory_dir.empty()) {
        a->oom_tracked = true;
        a->oom_before = CgroupPool::OomKills(*a->slot);
      }
    }
    if (launch.memory_bytes > 0 && (a->slot == nullptr || a->slot->memory_dir.empty()))
      req.rlimit_as = launch.memory_bytes;

    a->started_ms = NowEpochMs();
    SpawnResult sr = spawner_.Spawn(req);
    ::close(pipefd[1]);
    if (sr.pid < 0) {
      Abandon(a.get());
      throw sdk::Unavailable("localproc: " + sr.error);
    }
    a->pid = sr.pid;
    if (sr.setup_errno != 0) {
      int status;
      ::waitpid(sr.pid, &status, 0);
      std::string msg = std::string("localproc: child failed ") + sr.stage + ": " + std::strerror(sr.setup_errno);
      Abandon(a.get());
      throw std::runtime_error(msg);
    }
    if (sr.exec_errno != 0) {
      a->message = "cannot run " + launch.argv[0] + ": " + std::strerror(sr.exec_errno);
      std::string line = "crucible-engine: " + a->message + "\n";
      uint64_t take = std::min<uint64_t>(line.size(), a->log_cap);
      if (OpenLog(a.get()) && WriteAll(a->log_fd, line.data(), take)) a->written = take;
    }
    if (have_pidfd_) a->pidfd = PidfdOpen(a->pid);
    if (launch.timeout_ms > 0) a->timeout_at = NowMonoMs() + launch.timeout_ms;
    Attempt* raw = a.get();
    attempts_[key] = std::move(a);
    Watch(raw);  // without a pidfd, Tick() checks the child with waitid
  }

  void Cancel(uint64_t key, int64_t grace_ms) {
    auto it = attempts_.find(key);
    if (it != attempts_.end()) BeginStop(it->second.get(), StopReason::kCancel, grace_ms < 0 ? settings_.kill_grace_ms : grace_ms);
  }

  void CancelAll(int64_t grace_ms) {
    for (auto& [key, a] : attempts_) BeginStop(a.get(), StopReason::kCancel, grace_ms < 0 ? settings_.kill_grace_ms : grace_ms);
  }

  size_t running() const { return attempts_.size(); }

  /// Creates the working directory with its inputs, upstream file and empty outputs file.
  void PrepareWorkDir(const sdk::Launch& launch, Attempt* a) {
    std::error_code ec;
    WorkDirRecycler::Taken taken = a->keep_work ? WorkDirRecycler::Taken::kNone
                                                : recycler_.Take(a->work_dir, launch.upstream_json.has_value());
    if (taken == WorkDirRecycler::Taken::kNone) {
      if (::mkdir(a->work_dir.c_str(), 0777) == 0) {
        recycler_.NoteFreshDir(a->work_dir);
      } else if (errno != EEXIST) {
        fs::create_directories(a->work_dir, ec);
      }
      if (ec) throw std::runtime_error("localproc: cannot create " + a->work_dir + ": " + ec.message());
    }
    for (const sdk::InputFile& in : launch.inputs) {
      fs::path dest(in.dest);
      bool escapes = dest.is_absolute() || dest.empty();
      for (const auto& part : dest) escapes = escapes || part == "..";
      if (escapes) {
        RemoveWorkDir(*a);
        throw std::runtime_error("localproc: input destination must be relative inside the working directory: " +
                                 in.dest);
      }
      fs::path target = fs::path(a->work_dir) / dest;
      fs::create_directories(target.parent_path(), ec);
      if (!ec) fs::copy_file(in.source, target, fs::copy_options::overwrite_existing, ec);
      if (ec) {
        RemoveWorkDir(*a);
        throw std::runtime_error("localproc: cannot copy input " + in.source + " to " + in.dest + ": " +
                                 ec.message());
      }
    }
    if (launch.upstream_json) {
      std::string path = a->work_dir + "/" + kUpstreamFile;
      bool reused = taken == WorkDirRecycler::Taken::kWithUpstream;
      // A reused file is overwritten, then cut to length: truncating to zero and
      // closing would make ext4 (auto_da_alloc) write the file out at close.
      int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | (reused ? 0 : O_TRUNC) | O_CLOEXEC, 0644);
      const std::string& doc = *launch.upstream_json;
      bool ok = fd >= 0 && WriteAll(fd, doc.data(), doc.size());
      if (ok && reused) {
        off_t end = ::lseek(fd, 0, SEEK_END);
        ok = end >= 0 && (static_cast<size_t>(end) == doc.size() || ::ftruncate(fd, static_cast<off_t>(doc.size())) == 0);
      }
      int err = errno;
      if (fd >= 0) ::close(fd);
      if (!ok) {
        RemoveWorkDir(*a);
        throw std::runtime_error(Errno("localproc: cannot write " + path, err));
      }
    }
    // The step creates it when it writes outputs (`>>` or `>`); nothing to make here.
    a->output_path = a->work_dir + "/" + kOutputFile;
  }

  void RemoveWorkDir(const Attempt& a) {
    if (a.keep_work) return;
    std::error_code ec;
    if (::rmdir(a.work_dir.c_str()) != 0 && errno != ENOENT) fs::remove_all(a.work_dir, ec);
  }

  /// Opens (creates) the attempt's log on first use; false when it cannot be opened.
  bool OpenLog(Attempt* a) {
    if (a->log_fd >= 0) return true;
    if (a->log_failed) return false;
    a->log_fd = ::open(a->log_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (a->log_fd < 0) {
      a->log_failed = true;
      if (a->message.empty()) a->message = Errno("cannot open log " + a->log_path, errno) + "; output dropped";
      return false;
    }
    return true;
  }

  /// Undoes a Start that failed before the attempt was registered.
  void Abandon(Attempt* a) {
    if (a->out_fd >= 0) ::close(a->out_fd);
    if (a->log_fd >= 0) ::close(a->log_fd);
    a->out_fd = a->log_fd = -1;
    if (a->slot != nullptr) pool_.Release(a->slot);
    a->slot = nullptr;
    RemoveWorkDir(*a);
  }

  // ---- watching ------------------------------------------------------------

  /// Tags an epoll registration: which attempt, and whether it is the pidfd or the pipe.
  static void* Tag(Attempt* a, bool pipe) {
    return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(a) | (pipe ? 1u : 0u));
  }

  /// Adds the attempt's pipe, then its pidfd, to the epoll set.
  void Watch(Attempt* raw) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = Tag(raw, true);
    ::epoll_ctl(epfd_, EPOLL_CTL_ADD, raw->out_fd, &ev);
    if (raw->pidfd >= 0) {
      ev.events = EPOLLIN;
      ev.data.ptr = Tag(raw, false);
      ::epoll_ctl(epfd_, EPOLL_CTL_ADD, raw->pidfd, &ev);
    }
  }

  /// Sends sig to the attempt's whole tree (process group and cgroup slot).
  void SignalTree(Attempt* a, int sig) {
    if (a->slot != nullptr) {
      if (sig == SIGKILL) {
        CgroupPool::KillAll(*a->slot);
      } else {
        CgroupPool::SignalAll(*a->slot, sig);
      }
    }
    ::kill(-a->pid, sig);
  }

  void BeginStop(Attempt* a, StopReason why, int64_t grace_ms) {
    if (a->stop != StopReason::kNone) return;
    a->stop = why;
    if (grace_ms <= 0) {
      SignalTree(a, SIGKILL);
      return;
    }
    SignalTree(a, SIGTERM);
    a->kill_at = NowMonoMs() + grace_ms;
  }

  /// Copies what the pipe holds now into the log (up to the cap); closes it at EOF.
  void DrainPipe(Attempt* a) {
    static thread_local char buf[65536];
    while (a->out_fd >= 0) {
      ssize_t n = ::read(a->out_fd, buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return;
        n = 0;
      }
      if (n == 0) {
        ::epoll_ctl(epfd_, EPOLL_CTL_DEL, a->out_fd, nullptr);
        ::close(a->out_fd);
        a->out_fd = -1;
        return;
      }
      if (OpenLog(a) && LogRing::Write(a->log_fd, a->log_cap, a->written, buf, static_cast<size_t>(n))) {
        a->written += static_cast<uint64_t>(n);
      } else {
        a->dropped += static_cast<uint64_t>(n);
      }
    }
  }

  /// The main process has exited (not yet reaped): end the attempt.
  void Finish(Attempt* a) {
    // Kill what is left of the tree while the zombie still holds the pgid. A
    // cgroup with no live process left (the usual case) needs no cgroup.kill.
    if (a->slot != nullptr && !CgroupPool::Populated(*a->slot)) {
      ::kill(-a->pid, SIGKILL);
    } else {
      SignalTree(a, SIGKILL);
    }
    int status = 0;
    while (::waitpid(a->pid, &status, 0) < 0 && errno == EINTR) {
    }
    sdk::Result r;
    r.attempt_key = a->key;
    r.started_at_ms = a->started_ms;
    r.ended_at_ms = NowEpochMs();
    DrainPipe(a);
    if (a->out_fd >= 0) {
      ::epoll_ctl(epfd_, EPOLL_CTL_DEL, a->out_fd, nullptr);
      ::close(a->out_fd);
      a->out_fd = -1;
    }
    if (a->pidfd >= 0) {
      ::epoll_ctl(epfd_, EPOLL_CTL_DEL, a->pidfd, nullptr);
      ::close(a->pidfd);
      a->pidfd = -1;
    }
    a->kept = std::min(a->written, a->log_cap);
    a->dropped += a->written - a->kept;
    if (a->log_fd >= 0) {
      if (a->written > a->log_cap) {
        std::string err = LogRing::Finish(a->log_fd, a->log_cap, a->written);
        if (!err.empty() && a->message.empty()) a->message = "cannot put the log's tail in order: " + err;
      }
      ::close(a->log_fd);
    }
    a->log_fd = -1;
    bool oom = false;
    if (a->slot != nullptr) {
      if (a->oom_tracked) oom = CgroupPool::OomKills(*a->slot) > a->oom_before;
      pool_.Release(a->slot);
      a->slot = nullptr;
    }
    r.log_bytes_kept = a->kept;
    r.log_bytes_dropped = a->dropped;
    if (WIFEXITED(status)) {
      r.exit_code = WEXITSTATUS(status);
      r.signal = 0;
    } else {
      r.exit_code = -1;
      r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    }
    r.message = a->message;
    if (a->stop == StopReason::kCancel) {
      r.outcome = CRUCIBLE_OUTCOME_CANCELLED;
      r.reason = CRUCIBLE_REASON_CANCELLED;
    } else if (a->stop == StopReason::kTimeout) {
      r.outcome = CRUCIBLE_OUTCOME_FAILED;
      r.reason = CRUCIBLE_REASON_TIMEOUT;
      if (r.message.empty()) r.message = "timed out";
    } else if (oom) {
      r.outcome = CRUCIBLE_OUTCOME_FAILED;
      r.reason = CRUCIBLE_REASON_OOM_KILLED;
      if (r.message.empty()) r.message = "killed for exceeding its memory limit";
    } else if (WIFEXITED(status) && r.exit_code == 0) {
      r.outcome = CRUCIBLE_OUTCOME_SUCCEEDED;
      r.reason = CRUCIBLE_REASON_NONE;
    } else if (WIFEXITED(status)) {
      r.outcome = CRUCIBLE_OUTCOME_FAILED;
      r.reason = CRUCIBLE_REASON_EXITED;
    } else {
      r.outcome = CRUCIBLE_OUTCOME_FAILED;
      r.reason = CRUCIBLE_REASON_SIGNALED;
      if (r.message.empty()) r.message = std::string("killed by signal ") + strsignal(r.signal);
    }
    r.outputs_text = ReadCapped(a->output_path, a->output_cap + 1);
    std::string work_dir = a->keep_work ? std::string() : std::move(a->work_dir);
    bool recycle = a->had_slot;
    uint64_t key = a->key;
    attempts_.erase(key);  // frees a
    on_result_(std::move(r));
    // After the result is sent, and on the cleaner thread, so the next start
    // does not wait behind it. Only a tree killed through its cgroup is known
    // to be gone; without one a daemonised grandchild could still write here,
    // so no reuse.
    if (!work_dir.empty()) cleaner_.Push(std::move(work_dir), recycle);
  }

  /// True when the attempt's main process has exited (without reaping it).
  static bool HasExited(const Attempt& a) {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(a.pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return errno == ECHILD;
    return info.si_pid == a.pid;
  }

  int Tick() {
    int64_t now = NowMonoMs();
    int64_t next = -1;
    bool need_tick = false;
    for (auto& [key, a] : attempts_) {
      if (a->timeout_at > 0 && a->stop == StopReason::kNone && now >= a->timeout_at)
        BeginStop(a.get(), StopReason::kTimeout, settings_.kill_grace_ms);
      if (a->kill_at > 0 && now >= a->kill_at) {
        SignalTree(a.get(), SIGKILL);
        a->kill_at = 0;
      }
      for (int64_t t : {a->stop == StopReason::kNone ? a->timeout_at : 0, a->kill_at}) {
        if (t > 0 && (next < 0 || t < next)) next = t;
      }
      if (a->pidfd < 0) need_tick = true;
    }
    // Children without a pidfd: check them directly.
    if (need_tick) {
      std::vector<Attempt*> done;
      for (auto& [key, a] : attempts_) {
        if (a->pidfd < 0 && HasExited(*a)) done.push_back(a.get());
      }
      for (Attempt* a : done) Finish(a);
    }
    int wait_ms = next < 0 ? -1 : static_cast<int>(std::max<int64_t>(0, next - now));
    if (need_tick && (wait_ms < 0 || wait_ms > kFallbackTickMs)) wait_ms = kFallbackTickMs;
    return wait_ms;
  }

  void OnEvents(const std::vector<epoll_event>& events) {
    // Pipes first, so an exit seen in the same batch finds its output already
    // read, and no event names an attempt already ended and freed.
    std::vector<Attempt*> exited;
    for (const epoll_event& ev : events) {
      void* p = ev.data.ptr;
      if (!Runner::Owns(p)) continue;
      auto tag = reinterpret_cast<uintptr_t>(p);
      Attempt* a = reinterpret_cast<Attempt*>(tag & ~uintptr_t{3});
      if (tag & 1u) {
        DrainPipe(a);
      } else {
        exited.push_back(a);
      }
    }
    for (Attempt* a : exited) Finish(a);
  }

  /// At destroy: kill every tree still running, reap, clean up.
  void ShutDown() {
    for (auto& [key, a] : attempts_) {
      if (a->stop == StopReason::kNone) a->stop = StopReason::kCancel;
      SignalTree(a.get(), SIGKILL);
    }
    while (!attempts_.empty()) Finish(attempts_.begin()->second.get());
  }

  RunnerSettings settings_;
  CgroupPool pool_;
  Spawner spawner_;
  ExecutableCache executables_;
  BaseEnvironment env_;
  WorkDirRecycler recycler_;
  WorkDirCleaner cleaner_{recycler_};  ///< after recycler_: joined before it goes
  int epfd_ = -1;
  int devnull_ = -1;
  bool have_pidfd_ = true;
  ResultFn on_result_;
  std::unordered_map<uint64_t, std::unique_ptr<Attempt>> attempts_;
};

Runner::Runner(const RunnerSettings& settings, int epfd, ResultFn on_result)
    : impl_(std::make_unique<Impl>(settings, epfd, std::move(on_result))) {}
Runner::~Runner() = default;

std::vector<std::string> Runner::CgroupParents() const { return impl_->pool_.Parents(); }
void Runner::SetBaseEnvironment(std::vector<std::string> entries) { impl_->env_.Set(std::move(entries)); }
void Runner::Start(uint64_t key, const sdk::Launch& launch) { impl_->Start(key, launch); }
void Runner::Cancel(uint64_t key, int64_t grace_ms) { impl_->Cancel(key, grace_ms); }
void Runner::CancelAll(int64_t grace_ms) { impl_->CancelAll(grace_ms); }
void Runner::OnEvents(const std::vector<epoll_event>& events) { impl_->OnEvents(events); }
int Runner::Tick() { return impl_->Tick(); }
size_t Runner::running() const { return impl_->running(); }

}  // namespace crucible::plugins::localproc

// The localproc backend: each attempt is a process (group) on this machine.
//
// Design:
//   - The step processes are not the engine's children but those of one
//     supervisor process per run (crucible-localproc-supervisor, beside this
//     library; supervisor_main.cc), started at the first attempt. A child
//     whose parent died could report its exit status to no one, and a pipe
//     whose reader died kills its writer: the supervisor outlives a killed
//     engine, keeps writing the logs and records every result, and a resumed
//     engine finds it again (adopt). One per run, not per step: a no-op step
//     still costs one spawn, done by the supervisor on its own thread while
//     the engine goes on with its next step.
//   - Start() sends the launch over a unix socket (protocol.h) and returns at
//     once with the handle "supervisor=PID start=T"; the attempt is named
//     "<step id>#<attempt>", which the engine knows even when it never
//     recorded the handle (it was killed in between), so adopt() can find
//     every attempt the supervisor started.
//   - The supervisor writes each result to the socket and then to the
//     engine's wake eventfd (crucible_host.wake_fd, passed to it with
//     SCM_RIGHTS): one wake-up per completion, no thread in the engine.
//     An engine that gives no wake_fd gets a thread that relays the
//     supervisor's wakes to crucible_host.wake.
//   - adopt(): each supervisor of the run (named by the handles, or by the
//     journals beside the run's logs) that still runs is asked for the
//     attempts; a supervisor that is gone left its journal; an attempt that
//     none knows is reported lost.
//   - The engine's environment is sent to the supervisor when it changes
//     (setenv replaces environ's entry pointers, which are compared per start).
//
// Thread-safety: Start/Poll/Cancel/Adopt/Capacity come from one engine
// thread; the optional relay thread touches only its eventfd and host.wake.
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cgroups.h"
#include "crucible/backend_sdk.hpp"
#include "protocol.h"

extern char** environ;

namespace crucible::plugins::localproc {
namespace {

using proto::Json;

constexpr int64_t kDefaultKillGraceMs = 5000;
/// How long to wait for a supervisor's answer (hello, adopt, shutdown) before giving up on it.
constexpr int kAnswerTimeoutMs = 30000;

std::string Errno(const std::string& what, int err) { return what + ": " + std::strerror(err); }

/// Options as this plugin reads them.
struct Settings {
  int64_t kill_grace_ms = kDefaultKillGraceMs;
  int slots = 0;
  bool use_cgroups = true;
};

Settings ReadSettings(const sdk::Options& o) {
  Settings s;
  s.kill_grace_ms = o.Int("kill_grace", kDefaultKillGraceMs);
  if (s.kill_grace_ms < 0) s.kill_grace_ms = 0;
  unsigned cpus = std::thread::hardware_concurrency();
  s.slots = static_cast<int>(o.Int("cgroup_slots", 2 * static_cast<int64_t>(cpus == 0 ? 2 : cpus)));
  if (s.slots < 1) s.slots = 1;
  s.use_cgroups = o.Bool("use_cgroups", true);
  return s;
}

std::string LayoutName(CgroupLayout l) {
  switch (l) {
    case CgroupLayout::kV2:
      return "v2";
    case CgroupLayout::kHybrid:
      return "hybrid (v2 unified + v1)";
    case CgroupLayout::kV1:
      return "v1";
    case CgroupLayout::kNone:
      break;
  }
  return "none";
}

std::string DescribeCaps(const CgroupCaps& c) {
  if (c.layout == CgroupLayout::kNone) {
    return "cgroups: none writable (" + c.reason +
           "); processes are killed by process group; cpu limits not enforced; memory limit approximated "
           "with RLIMIT_AS; daemonised children (setsid) escape timeouts and cancel";
  }
  std::string enforced = "kill";
  if (c.memory) enforced += ", memory";
  if (c.cpu) enforced += ", cpu";
  std::string text = "cgroup " + LayoutName(c.layout) + " at " + c.root + ": " + enforced + " enforced";
  if (!c.memory) text += "; memory limit approximated with RLIMIT_AS";
  if (!c.cpu) text += "; cpu limits not enforced";
  return text;
}


/// The supervisor executable: beside this library.
std::string SupervisorPath() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&SupervisorPath), &info) == 0 || info.dli_fname == nullptr) {
    throw sdk::Unavailable("localproc: cannot tell where the plugin library is");
  }
  std::string lib = info.dli_fname;
  size_t slash = lib.find_last_of('/');
  return (slash == std::string::npos ? std::string(".") : lib.substr(0, slash)) + "/crucible-localproc-supervisor";
}

/// One connection to a supervisor.
struct Conn {
  int fd = -1;
  pid_t pid = 0;
  std::string start;
  std::string handle;
  proto::FrameReader reader;
  bool done = false;  ///< bye or end of stream
};

/// Copies of environ's entries, and whether environ changed since.
class EnvironmentWatch {
 public:
  /// True (and the new entries in *out) when environ differs from the last call.
  bool Changed(std::vector<std::string>* out) {
    bool same = built_;
    size_t n = 0;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e, ++n) {
      if (n >= seen_.size() || seen_[n] != *e) {
        same = false;
        break;
      }
    }
    if (same && n == seen_.size()) return false;
    seen_.clear();
    out->clear();
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      seen_.push_back(*e);
      out->emplace_back(*e);
    }
    built_ = true;
    return true;
  }

 private:
  std::vector<char*> seen_;
  bool built_ = false;
};

/// The backend instance: one per run.
class LocalProcBackend : public sdk::Backend {
 public:
  LocalProcBackend(const sdk::Host& host, const sdk::Options& options)
      : host_(host), settings_(ReadSettings(options)) {
    logs_dir_ = host_.state_dir() + "/logs/" + host_.run_id();
    wake_fd_ = host_.wake_fd();
    if (wake_fd_ < 0) {
      // No wake descriptor from the engine: relay the supervisor's wakes.
      relay_fd_ = ::eventfd(0, EFD_CLOEXEC);
      if (relay_fd_ < 0) throw std::runtime_error(Errno("localproc: eventfd", errno));
      wake_fd_ = relay_fd_;
      relay_ = std::thread([this] {
        for (;;) {
          uint64_t v = 0;
          if (::read(relay_fd_, &v, sizeof v) != static_cast<ssize_t>(sizeof v)) {
            if (errno == EINTR) continue;
            return;
          }
          if (stop_relay_.load()) return;
          host_.Wake();
        }
      });
    }
  }

  ~LocalProcBackend() override {
    // Stop what runs and wait for each supervisor to say it is done.
    for (auto& c : conns_) {
      if (c->done) continue;
      if (!proto::WriteAll(c->fd, proto::Frame(R"({"op":"shutdown"})"))) {
        c->done = true;
        continue;
      }
    }
    for (auto& c : conns_) {
      auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kAnswerTimeoutMs);
      while (!c->done && std::chrono::steady_clock::now() < deadline) {
        if (!WaitReadable(c->fd, 1000)) continue;
        ReadConn(c.get(), nullptr);
      }
      ::close(c->fd);
    }
    for (pid_t pid : children_) {
      int status;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
    // A supervisor killed during the run left its steps' daemonised descendants.
    proto::ReapDeadSupervisors(logs_dir_);
    if (relay_.joinable()) {
      stop_relay_.store(true);
      uint64_t one = 1;
      ssize_t n = ::write(relay_fd_, &one, sizeof one);
      (void)n;
      relay_.join();
    }
    if (relay_fd_ >= 0) ::close(relay_fd_);
  }

  std::string Start(const sdk::Launch& launch) override {
    if (launch.argv.empty() || launch.argv[0].empty()) throw std::runtime_error("localproc: empty argv");
    if (launch.work_dir.empty() || launch.log_path.empty())
      throw std::runtime_error("localproc: work_dir and log_path are required");
    // What can be refused here is refused here, with the reason, before anything is sent.
    for (const sdk::InputFile& in : launch.inputs) {
      std::filesystem::path dest(in.dest);
      bool escapes = dest.is_absolute() || dest.empty();
      for (const auto& part : dest) escapes = escapes || part == "..";
      if (escapes) {
        throw std::runtime_error("localproc: input destination must be relative inside the working directory: " +
                                 in.dest);
      }
    }
    {
      size_t slash = launch.log_path.find_last_of('/');
      std::string log_dir = slash == std::string::npos ? "." : slash == 0 ? "/" : launch.log_path.substr(0, slash);
      if (::access(log_dir.c_str(), W_OK | X_OK) != 0) {
        throw std::runtime_error(Errno("localproc: cannot open log " + launch.log_path, errno));
      }
    }
    Conn* c = Own();
    std::vector<std::string> env;
    if (env_.Changed(&env)) Send(c, Json{{"op", "env"}, {"entries", env}});
    std::string id = proto::AttemptId(launch.step_id, launch.attempt);
    SendPayload(c, proto::EncodeStart(id, launch));
    by_id_[id] = Track{launch.attempt_key, c};
    keys_[launch.attempt_key] = id;
    return c->handle;
  }

  int Poll(int timeout_ms, sdk::ResultSink& sink) override {
    int emitted = Drain(sink);
    if (emitted > 0 || timeout_ms <= 0) return emitted;
    std::vector<pollfd> fds;
    for (auto& c : conns_) {
      if (!c->done) fds.push_back(pollfd{c->fd, POLLIN, 0});
    }
    if (fds.empty()) return 0;
    int n = ::poll(fds.data(), fds.size(), timeout_ms);
    (void)n;
    return Drain(sink);
  }

  void Cancel(uint64_t attempt_key, int64_t grace_ms) override {
    auto k = keys_.find(attempt_key);
    if (k == keys_.end()) return;
    auto t = by_id_.find(k->second);
    if (t == by_id_.end() || t->second.conn == nullptr) return;
    Send(t->second.conn, Json{{"op", "cancel"}, {"id", k->second}, {"grace_ms", grace_ms < 0 ? -1 : grace_ms}});
  }

  bool Adopt(const std::vector<sdk::AdoptItem>& items) override {
    // Every supervisor of the run: those the handles name, and those whose journal is beside the logs.
    std::set<std::pair<pid_t, std::string>> sups;
    for (const sdk::AdoptItem& it : items) {
      pid_t pid;
      std::string start;
      if (proto::ParseHandle(it.handle, &pid, &start)) sups.emplace(pid, start);
    }
    if (DIR* d = ::opendir(logs_dir_.c_str())) {
      while (const dirent* e = ::readdir(d)) {
        int pid = 0, used = 0;
        unsigned long long start = 0;
        if (std::sscanf(e->d_name, ".localproc-supervisor-%d-%llu.journal%n", &pid, &start, &used) == 2 &&
            static_cast<size_t>(used) == std::strlen(e->d_name)) {
          sups.emplace(pid, std::to_string(start));
        }
      }
      ::closedir(d);
    }
    std::map<std::string, uint64_t> wanted;  // id -> the engine's new key
    Json ids = Json::array();
    for (const sdk::AdoptItem& it : items) {
      std::string id = proto::AttemptId(it.step_id, it.attempt);
      wanted[id] = it.attempt_key;
      keys_[it.attempt_key] = id;
      by_id_[id] = Track{it.attempt_key, nullptr};
      ids.push_back(id);
    }
    std::set<std::string> known;  // running somewhere or finished
    for (const auto& [pid, start] : sups) {
      Conn* c = Connect(pid, start);
      if (c == nullptr) {
        ReadJournal(proto::JournalPath(logs_dir_, pid, start), wanted, known);
        continue;
      }
      Send(c, Json{{"op", "adopt"}, {"ids", ids}});
      Json unknown;
      if (!AwaitOp(c, "adopted", &unknown)) {
        c->done = true;
        ReadJournal(proto::JournalPath(logs_dir_, pid, start), wanted, known);
        continue;
      }
      std::set<std::string> missing;
      for (const Json& u : unknown.at("unknown")) missing.insert(u.get<std::string>());
      for (const auto& [id, key] : wanted) {
        if (missing.count(id) != 0 || known.count(id) != 0) continue;
        known.insert(id);  // its result came with the answer, or it runs there
        auto t = by_id_.find(id);
        if (t != by_id_.end()) t->second.conn = c;
      }
    }
    // What supervisors that were killed left running is nobody's now.
    proto::ReapDeadSupervisors(logs_dir_);
    for (const auto& [id, key] : wanted) {
      if (known.count(id) != 0) continue;
      sdk::Result r;
      r.attempt_key = key;
      r.outcome = CRUCIBLE_OUTCOME_FAILED;
      r.reason = CRUCIBLE_REASON_LOST;
      r.message = sups.empty() ? "no supervisor of this run is left and none recorded the attempt"
                               : "no supervisor of this run knows the attempt: it never started, or its supervisor "
                                 "was killed before it ended";
      queued_.push_back(std::move(r));
      by_id_.erase(id);
    }
    if (!queued_.empty()) host_.Wake();
    return true;
  }

 private:
  struct Track {
    uint64_t key = 0;
    Conn* conn = nullptr;
  };

  static bool WaitReadable(int fd, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) > 0;
  }

  void Send(Conn* c, const Json& m) { SendPayload(c, m.dump(-1, ' ', false, Json::error_handler_t::replace)); }

  void SendPayload(Conn* c, const std::string& payload) {
    if (c->done || !proto::WriteAll(c->fd, proto::Frame(payload))) {
      c->done = true;
      throw sdk::Unavailable("localproc: the supervisor (pid " + std::to_string(c->pid) + ") is gone");
    }
  }

  /// Reads what a connection has; results go to queued_ (or, with `want`,
  /// the first frame whose op is *want into *found).
  void ReadConn(Conn* c, std::pair<const char*, Json*>* want) {
    proto::FrameReader::Read r = c->reader.ReadSome(c->fd);
    ReadBuffered(c, want);
    if (c->reader.broken() || r == proto::FrameReader::Read::kEof || r == proto::FrameReader::Read::kError) {
      c->done = true;
    }
  }

  /// Waits for a frame of one op from c (results meanwhile are queued).
  bool AwaitOp(Conn* c, const char* op, Json* out) {
    std::pair<const char*, Json*> want{op, out};
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kAnswerTimeoutMs);
    while (want.first != nullptr && !c->done && std::chrono::steady_clock::now() < deadline) {
      // Frames already buffered first.
      ReadBuffered(c, &want);
      if (want.first == nullptr) break;
      if (!WaitReadable(c->fd, 1000)) continue;
      ReadConn(c, &want);
    }
    return want.first == nullptr;
  }

  /// Handles the frames already read: results are queued, a bye ends the
  /// connection, and the first frame whose op is want->first (if any) is kept.
  void ReadBuffered(Conn* c, std::pair<const char*, Json*>* want) {
    while (auto payload = c->reader.Next()) {
      if (!payload->empty() && (*payload)[0] == 'R') {
        TakeResult(*payload);
        continue;
      }
      Json m = Json::parse(*payload, nullptr, false);
      if (m.is_discarded()) continue;
      std::string op = m.value("op", "");
      if (op == "bye") {
        c->done = true;
      } else if (want != nullptr && want->first != nullptr && op == want->first) {
        *want->second = std::move(m);
        want->first = nullptr;
        return;
      }
    }
  }

  /// Queues a result payload for the engine, if the attempt is one it follows.
  void TakeResult(const std::string& payload) {
    std::string id;
    sdk::Result r;
    bool orphan = false;
    if (!proto::DecodeResult(payload, &id, &r, &orphan) || orphan) return;
    auto t = by_id_.find(id);
    if (t == by_id_.end()) return;  // not ours (or already reported)
    r.attempt_key = t->second.key;
    keys_.erase(t->second.key);
    by_id_.erase(t);
    queued_.push_back(std::move(r));
  }

  /// Hands over what is queued and what the connections have now.
  int Drain(sdk::ResultSink& sink) {
    for (auto& c : conns_) {
      if (!c->done) ReadConn(c.get(), nullptr);
    }
    // Attempts whose supervisor went away without a result are lost.
    for (auto it = by_id_.begin(); it != by_id_.end();) {
      Conn* c = it->second.conn;
      if (c != nullptr && c->done) {
        sdk::Result r;
        r.attempt_key = it->second.key;
        r.outcome = CRUCIBLE_OUTCOME_FAILED;
        r.reason = CRUCIBLE_REASON_LOST;
        r.message = "the localproc supervisor (pid " + std::to_string(c->pid) + ") went away before the attempt ended";
        keys_.erase(it->second.key);
        it = by_id_.erase(it);
        queued_.push_back(std::move(r));
      } else {
        ++it;
      }
    }
    int n = 0;
    for (const sdk::Result& r : queued_) {
      sink.Emit(r);
      ++n;
    }
    queued_.clear();
    return n;
  }

  /// Finished attempts a gone supervisor recorded (its journal: frames of results).
  void ReadJournal(const std::string& path, const std::map<std::string, uint64_t>& wanted,
                   std::set<std::string>& known) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    proto::FrameReader reader;
    while (reader.ReadSome(fd) == proto::FrameReader::Read::kData) {
    }
    ::close(fd);
    while (auto payload = reader.Next()) {
      std::string id;
      sdk::Result r;
      bool orphan = false;
      if (!proto::DecodeResult(*payload, &id, &r, &orphan) || orphan) continue;
      if (wanted.count(id) == 0 || known.count(id) != 0) continue;
      known.insert(id);
      TakeResult(*payload);
    }
  }

  /// Says hello on a fresh connection (passing the wake descriptor) and reads the supervisor's identity.
  bool Hello(Conn* c) {
    if (!proto::SendWithFd(c->fd, proto::Frame(R"({"op":"hello"})"), wake_fd_)) return false;
    Json hello;
    if (!AwaitOp(c, "hello", &hello)) return false;
    c->pid = hello.value("pid", 0);
    c->start = hello.value("start", "");
    c->handle = proto::Handle(c->pid, c->start);
    ::fcntl(c->fd, F_SETFL, ::fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    return true;
  }

  /// This engine's own supervisor, started on first use.
  Conn* Own() {
    if (own_ != nullptr && !own_->done) return own_;
    own_ = nullptr;  // gone (its attempts are reported lost): a new one takes the next attempts
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw sdk::Unavailable(Errno("localproc: socketpair", errno));
    std::string exe = SupervisorPath();
    std::vector<std::string> args = {exe, logs_dir_, std::to_string(settings_.kill_grace_ms),
                                     std::to_string(settings_.slots), settings_.use_cgroups ? "1" : "0"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    // Not the engine's stdout or stderr: the supervisor outlives the engine and
    // must not hold its pipes open (whoever reads them would wait for it).
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
    posix_spawn_file_actions_addclosefrom_np(&fa, 4);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = -1;
    int err = ::posix_spawn(&pid, exe.c_str(), &fa, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    ::close(sv[1]);
    if (err != 0) {
      ::close(sv[0]);
      throw sdk::Unavailable(Errno("localproc: cannot start " + exe, err));
    }
    children_.push_back(pid);
    auto c = std::make_unique<Conn>();
    c->fd = sv[0];
    c->pid = pid;
    if (!Hello(c.get())) {
      ::close(c->fd);
      throw sdk::Unavailable("localproc: the supervisor " + exe + " did not answer");
    }
    own_ = c.get();
    conns_.push_back(std::move(c));
    return own_;
  }

  /// A connection to a supervisor that runs now; nullptr when it is gone.
  Conn* Connect(pid_t pid, const std::string& start) {
    for (auto& c : conns_) {
      if (c->pid == pid && c->start == start) return c->done ? nullptr : c.get();
    }
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return nullptr;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string name = proto::SocketName(pid, start);
    std::memcpy(addr.sun_path, name.data(), name.size());
    auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
      ::close(fd);
      return nullptr;
    }
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    c->pid = pid;
    if (!Hello(c.get())) {
      ::close(fd);
      return nullptr;
    }
    conns_.push_back(std::move(c));
    return conns_.back().get();
  }

  sdk::Host host_;
  Settings settings_;
  std::string logs_dir_;
  int wake_fd_ = -1;
  int relay_fd_ = -1;
  std::atomic<bool> stop_relay_{false};
  std::thread relay_;
  EnvironmentWatch env_;
  std::vector<std::unique_ptr<Conn>> conns_;
  Conn* own_ = nullptr;
  std::vector<pid_t> children_;
  std::unordered_map<std::string, Track> by_id_;
  std::unordered_map<uint64_t, std::string> keys_;
  std::vector<sdk::Result> queued_;
};

void Describe(std::string& out) { out = DescribeCaps(ProbeCgroups()); }

void CheckStep(const sdk::StepCheck& step, sdk::DiagSink& sink) {
  if (step.cpu_millicores <= 0) return;
  bool cgroups = step.backend_options.Bool("use_cgroups", true);
  if (!cgroups || !ProbeCgroups().cpu) {
    sink.Warning("resources.cpu", "localproc cannot enforce cpu limits on this machine (" +
                                      std::string(cgroups ? "no writable cpu cgroup" : "use_cgroups = false") +
                                      "); the step runs unlimited");
  }
}

const crucible_option_decl kOptions[] = {
    sdk::Option("kill_grace", CRUCIBLE_OPTION_DURATION, CRUCIBLE_SCOPE_BACKEND,
                "time between SIGTERM and SIGKILL when a step times out or is cancelled (default 5s)"),
    sdk::Option("cgroup_slots", CRUCIBLE_OPTION_INT, CRUCIBLE_SCOPE_BACKEND,
                "cgroups kept for reuse (default 2 x CPUs); more are made while all are busy"),
    sdk::Option("use_cgroups", CRUCIBLE_OPTION_BOOL, CRUCIBLE_SCOPE_BACKEND,
                "put steps in cgroups where writable (default true); false: process groups and rlimits only"),
};

}  // namespace
}  // namespace crucible::plugins::localproc

CRUCIBLE_DEFINE_BACKEND(crucible::plugins::localproc::LocalProcBackend, "localproc", "0.1.0",
                        "steps as processes on this machine", crucible::plugins::localproc::kOptions,
                        CRUCIBLE_DESCRIBE(crucible::plugins::localproc::Describe),
                        CRUCIBLE_CHECK_STEP(crucible::plugins::localproc::CheckStep))


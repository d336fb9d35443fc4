// crucible-localproc-supervisor: owns the step processes of one run.
//
// A local process whose parent died can report its exit status to no one, and
// a pipe whose reader died kills its writer; so the steps of a run are not
// children of the engine but of this process, started by the localproc plugin
// once per run (not per step). It outlives the engine: when the engine's
// connection ends without a "shutdown" (the engine was killed), the steps go
// on, their output still goes to the log files, and each result is kept in
// memory and in the journal beside the run's logs. A resumed engine finds it
// again through the handle (supervisor pid and start time name its abstract
// socket) and adopts the attempts; once no engine is connected and no step
// runs, it exits, leaving the journal for a later resume to read.
//
// One thread: an epoll loop over the runner's pidfds and pipes, the listening
// socket, each engine connection and a signalfd (SIGTERM: cancel every step,
// journal them, exit).
//
// Usage: crucible-localproc-supervisor LOGS_DIR KILL_GRACE_MS CGROUP_SLOTS USE_CGROUPS
// with the first engine connection on descriptor 3.
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "protocol.h"
#include "runner.h"

namespace crucible::plugins::localproc {
namespace {

using proto::Json;

/// The supervisor's own epoll tags have bit 1 set (Runner::Owns).
void* OwnTag(void* p) { return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(p) | 2u); }
void* Untag(void* p) { return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(p) & ~uintptr_t{3}); }

struct Conn {
  int fd = -1;
  int wake_fd = -1;
  proto::FrameReader reader;
  std::string out;       ///< frames not yet written
  bool want_out = false; ///< EPOLLOUT registered
  bool shutting_down = false;
  bool closed = false;
};

struct Entry {
  uint64_t key = 0;
  bool finished = false;
  Conn* owner = nullptr;  ///< who gets the result; nullptr: nobody now (kept for adopt)
  bool orphan = false;    ///< killed because no engine follows it; its result goes nowhere
  std::string result;  ///< the result's payload (proto::EncodeResult), once finished
};

class Supervisor {
 public:
  Supervisor(std::string logs_dir, const RunnerSettings& settings) : logs_dir_(std::move(logs_dir)) {
    pid_ = ::getpid();
    start_ = proto::StartTimeOf(pid_);
    if (start_.empty()) start_ = "0";
    epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
    runner_ = std::make_unique<Runner>(settings, epfd_, [this](sdk::Result&& r) { OnResult(std::move(r)); });
    journal_ = ::open(proto::JournalPath(logs_dir_, pid_, start_).c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                      0644);
    // Should this process be killed, the next supervisor of the run (or the
    // engine) kills what its steps left in these cgroups; a supervisor that
    // ends removes them itself (~Supervisor).
    std::vector<std::string> parents = runner_->CgroupParents();
    if (!parents.empty()) {
      std::ofstream out(proto::CgroupsPath(logs_dir_, pid_, start_), std::ios::trunc);
      for (const auto& p : parents) out << p << "\n";
    }
    proto::ReapDeadSupervisors(logs_dir_);
    listen_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string name = proto::SocketName(pid_, start_);
    std::memcpy(addr.sun_path, name.data(), name.size());
    auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    if (::bind(listen_, reinterpret_cast<sockaddr*>(&addr), len) == 0 && ::listen(listen_, 16) == 0) {
      Add(listen_, &listen_tag_, EPOLLIN);
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigfd_ = ::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    Add(sigfd_, &signal_tag_, EPOLLIN);
  }

  ~Supervisor() {
    runner_.reset();  // kills what still runs and removes the cgroups
    ::unlink(proto::CgroupsPath(logs_dir_, pid_, start_).c_str());
  }
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  void AddConnection(int fd) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    Add(fd, c.get(), EPOLLIN);
    conns_.push_back(std::move(c));
  }

  int Run() {
    std::vector<epoll_event> events(256);
    std::vector<epoll_event> batch;
    for (;;) {
      int timeout = runner_->Tick();
      FlushWakes();
      if (conns_.empty() && runner_->running() == 0) return 0;
      if (terminating_ && runner_->running() == 0) return 0;
      int n = ::epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), timeout);
      if (n < 0) continue;  // EINTR
      batch.clear();
      for (int i = 0; i < n; ++i) {
        if (Runner::Owns(events[i].data.ptr)) batch.push_back(events[i]);
      }
      if (!batch.empty()) runner_->OnEvents(batch);
      for (int i = 0; i < n; ++i) {
        void* p = events[i].data.ptr;
        if (Runner::Owns(p)) continue;
        void* what = Untag(p);
        if (what == &listen_tag_) {
          Accept();
        } else if (what == &signal_tag_) {
          signalfd_siginfo si;
          while (::read(sigfd_, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
          }
          terminating_ = true;
          runner_->CancelAll(-1);
        } else {
          Conn* c = static_cast<Conn*>(what);
          if (events[i].events & EPOLLOUT) WriteOut(c);
          if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ReadFrom(c);
        }
      }
      Reap();
    }
  }

 private:
  void Add(int fd, void* tag, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = OwnTag(tag);
    ::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
  }

  void Accept() {
    for (;;) {
      int fd = ::accept4(listen_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      AddConnection(fd);
    }
  }

  void Send(Conn* c, const Json& j) { SendPayload(c, j.dump(-1, ' ', false, Json::error_handler_t::replace)); }

  void SendPayload(Conn* c, const std::string& payload) {
    if (c == nullptr || c->closed) return;
    c->out += proto::Frame(payload);
    WriteOut(c);
    if (c->wake_fd >= 0) pending_wakes_.insert(c);
  }

  void WriteOut(Conn* c) {
    while (!c->out.empty()) {
      ssize_t n = ::send(c->fd, c->out.data(), c->out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        Close(c);
        return;
      }
      c->out.erase(0, static_cast<size_t>(n));
    }
    bool want = !c->out.empty();
    if (want != c->want_out) {
      epoll_event ev{};
      ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
      ev.data.ptr = OwnTag(c);
      ::epoll_ctl(epfd_, EPOLL_CTL_MOD, c->fd, &ev);
      c->want_out = want;
    }
  }

  /// One wake per connection per loop turn, after the turn's results are written.
  void FlushWakes() {
    for (Conn* c : pending_wakes_) {
      if (c->closed || c->wake_fd < 0) continue;
      uint64_t one = 1;
      ssize_t n = ::write(c->wake_fd, &one, sizeof one);
      (void)n;
    }
    pending_wakes_.clear();
  }

  void ReadFrom(Conn* c) {
    if (c->closed) return;
    int fd = -1;
    proto::FrameReader::Read r = c->reader.ReadSome(c->fd, c->wake_fd < 0 ? &fd : nullptr);
    if (fd >= 0) c->wake_fd = fd;
    while (auto payload = c->reader.Next()) {
      Handle(c, *payload);
      if (c->closed) return;
    }
    if (c->reader.broken() || r == proto::FrameReader::Read::kEof || r == proto::FrameReader::Read::kError) {
      Close(c);
    }
  }

  void Handle(Conn* c, const std::string& payload) {
    if (!payload.empty() && payload[0] == 'S') {
      std::string id;
      sdk::Launch launch;
      if (proto::DecodeStart(payload, &id, &launch)) {
        StartAttempt(c, id, launch);
      } else {
        std::fprintf(stderr, "crucible-localproc-supervisor: bad start message\n");
      }
      return;
    }
    Json m;
    try {
      m = Json::parse(payload);
      const std::string op = m.at("op").get<std::string>();
      if (op == "hello") {
        Send(c, Json{{"op", "hello"}, {"pid", pid_}, {"start", start_}});
      } else if (op == "env") {
        runner_->SetBaseEnvironment(m.at("entries").get<std::vector<std::string>>());
      } else if (op == "cancel") {
        auto it = entries_.find(m.at("id").get<std::string>());
        if (it != entries_.end() && !it->second.finished) runner_->Cancel(it->second.key, m.at("grace_ms").get<int64_t>());
      } else if (op == "adopt") {
        Adopt(c, m.at("ids").get<std::vector<std::string>>());
      } else if (op == "shutdown") {
        c->shutting_down = true;
        for (auto& [id, e] : entries_) {
          if (!e.finished && e.owner == c) runner_->Cancel(e.key, 0);
        }
      }
    } catch (const Json::exception& e) {
      std::fprintf(stderr, "crucible-localproc-supervisor: bad message: %s\n", e.what());
    }
  }

  void StartAttempt(Conn* c, const std::string& id, const sdk::Launch& launch) {
    if (entries_.count(id) != 0) return;  // already known (a repeated start)
    Entry& e = entries_[id];
    e.key = ++next_key_;
    e.owner = c;
    by_key_[e.key] = id;
    std::string error;
    bool unavailable = false;
    if (terminating_) {
      error = "the supervisor is stopping";
      unavailable = true;
    } else {
      try {
        runner_->Start(e.key, launch);
        return;
      } catch (const sdk::Unavailable& ex) {
        error = ex.what();
        unavailable = true;
      } catch (const std::exception& ex) {
        error = ex.what();
      }
    }
    sdk::Result r;
    r.attempt_key = e.key;
    r.outcome = CRUCIBLE_OUTCOME_FAILED;
    r.reason = CRUCIBLE_REASON_BACKEND_ERROR;
    r.message = std::string("start failed: ") + (unavailable ? "unavailable: " : "") + error;
    OnResult(std::move(r));
  }

  void OnResult(sdk::Result&& r) {
    auto k = by_key_.find(r.attempt_key);
    if (k == by_key_.end()) return;
    const std::string id = k->second;
    by_key_.erase(k);
    Entry& e = entries_[id];
    e.finished = true;
    e.result = proto::EncodeResult(id, r);
    if (journal_ >= 0) {
      // The journal is a file of frames, the same as the socket carries.
      std::string frame = proto::Frame(e.orphan ? proto::EncodeResult(id, r, true) : e.result);
      ssize_t n = ::write(journal_, frame.data(), frame.size());
      (void)n;
    }
    if (e.owner != nullptr && !e.orphan) SendPayload(e.owner, e.result);
  }

  /// A resumed engine takes over the attempts it lists: finished ones get their
  /// result now, running ones later; ids unknown here are said so. Running
  /// attempts nobody follows and the engine does not list are killed.
  void Adopt(Conn* c, const std::vector<std::string>& ids) {
    // What a dead engine wrote before it died is handled first.
    for (auto& other : conns_) {
      if (other.get() != c && !other->closed) ReadFrom(other.get());
    }
    Json unknown = Json::array();
    std::set<std::string> listed(ids.begin(), ids.end());
    for (const std::string& id : ids) {
      auto it = entries_.find(id);
      if (it == entries_.end() || it->second.orphan) {
        unknown.push_back(id);
        continue;
      }
      Entry& e = it->second;
      e.owner = c;
      if (e.finished) SendPayload(c, e.result);
    }
    for (auto& [id, e] : entries_) {
      if (e.finished || listed.count(id) != 0) continue;
      if (e.owner == nullptr || e.owner->closed) {
        e.orphan = true;
        runner_->Cancel(e.key, 0);
      }
    }
    Send(c, Json{{"op", "adopted"}, {"unknown", unknown}});
  }

  void Close(Conn* c) {
    if (c->closed) return;
    c->closed = true;
    ::epoll_ctl(epfd_, EPOLL_CTL_DEL, c->fd, nullptr);
    for (auto& [id, e] : entries_) {
      if (e.owner == c) e.owner = nullptr;
    }
  }

  /// Ends connections whose engine is done: closed ones, and shut-down ones
  /// whose attempts have all ended.
  void Reap() {
    for (auto& c : conns_) {
      if (c->shutting_down && !c->closed) {
        bool busy = false;
        for (auto& [id, e] : entries_) busy = busy || (!e.finished && e.owner == c.get());
        if (!busy) {
          // The last engine is done with every result: the journal is not needed again.
          bool last = runner_->running() == 0;
          for (auto& other : conns_) last = last && (other.get() == c.get() || other->closed);
          if (last && journal_ >= 0) {
            ::unlink(proto::JournalPath(logs_dir_, pid_, start_).c_str());
            ::close(journal_);
            journal_ = -1;
          }
          Send(c.get(), Json{{"op", "bye"}});
          Close(c.get());
        }
      }
    }
    for (auto it = conns_.begin(); it != conns_.end();) {
      Conn* c = it->get();
      if (!c->closed) {
        ++it;
        continue;
      }
      pending_wakes_.erase(c);
      ::close(c->fd);
      if (c->wake_fd >= 0) ::close(c->wake_fd);
      it = conns_.erase(it);
    }
  }

  std::string logs_dir_;
  pid_t pid_ = 0;
  std::string start_;
  int epfd_ = -1;
  int listen_ = -1;
  int sigfd_ = -1;
  int journal_ = -1;
  uint64_t listen_tag_ = 0;  // tags are addresses with two low bits free: 8-byte aligned
  uint64_t signal_tag_ = 0;
  bool terminating_ = false;
  uint64_t next_key_ = 0;
  std::unique_ptr<Runner> runner_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::set<Conn*> pending_wakes_;
  std::unordered_map<std::string, Entry> entries_;
  std::unordered_map<uint64_t, std::string> by_key_;
};

}  // namespace
}  // namespace crucible::plugins::localproc

int main(int argc, char** argv) {
  using namespace crucible::plugins::localproc;
  if (argc != 5) {
    std::fprintf(stderr, "usage: crucible-localproc-supervisor LOGS_DIR KILL_GRACE_MS CGROUP_SLOTS USE_CGROUPS\n");
    return 2;
  }
  // Out of the engine's session: a ^C at the terminal is the engine's to handle.
  ::setsid();
  // SIGTERM comes through the signalfd; SIGPIPE, SIGINT and SIGHUP are blocked
  // (not ignored, which the steps would inherit; spawn unblocks all).
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGTERM, SIGPIPE, SIGINT, SIGHUP}) sigaddset(&mask, s);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  RunnerSettings settings;
  settings.kill_grace_ms = std::strtoll(argv[2], nullptr, 10);
  settings.slots = static_cast<int>(std::strtol(argv[3], nullptr, 10));
  settings.use_cgroups = std::strcmp(argv[4], "1") == 0;
  try {
    Supervisor sup(argv[1], settings);
    sup.AddConnection(3);
    return sup.Run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crucible-localproc-supervisor: %s\n", e.what());
    return 1;
  }
}

#include "protocol.h"

#include <dirent.h>
#include <linux/magic.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "cgroups.h"

namespace crucible::plugins::localproc::proto {

std::string SocketName(pid_t pid, const std::string& start) {
  std::string name(1, '\0');
  name += "crucible-localproc-" + std::to_string(pid) + "-" + start;
  return name;
}

std::string JournalPath(const std::string& logs_dir, pid_t pid, const std::string& start) {
  return logs_dir + "/.localproc-supervisor-" + std::to_string(pid) + "-" + start + ".journal";
}

std::string CgroupsPath(const std::string& logs_dir, pid_t pid, const std::string& start) {
  return logs_dir + "/.localproc-supervisor-" + std::to_string(pid) + "-" + start + ".cgroups";
}

std::string StartTimeOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  size_t p = stat.rfind(')');
  if (p == std::string::npos || p + 2 >= stat.size() || stat[p + 2] == 'Z' || stat[p + 2] == 'X') return "";
  std::istringstream fields(stat.substr(p + 2));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i) {
  }
  return field;
}

bool ProcessRuns(pid_t pid, const std::string& start) { return StartTimeOf(pid) == start; }

void ReapDeadSupervisors(const std::string& logs_dir) {
  std::vector<std::pair<std::string, std::string>> dead;  // the file, its supervisor's "PID-START"
  if (DIR* d = ::opendir(logs_dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      int pid = 0, used = 0;
      unsigned long long start = 0;
      if (std::sscanf(e->d_name, ".localproc-supervisor-%d-%llu.cgroups%n", &pid, &start, &used) == 2 &&
          static_cast<size_t>(used) == std::strlen(e->d_name) && start != 0 &&
          !ProcessRuns(pid, std::to_string(start))) {
        dead.emplace_back(logs_dir + "/" + e->d_name, std::to_string(pid) + "-" + std::to_string(start));
      }
    }
    ::closedir(d);
  }
  for (const auto& [path, who] : dead) {
    // Only cgroups that supervisor made (<hierarchy>/.../crucible-PID-START-N,
    // a name no other process can have had) on a cgroup file system.
    std::string own = "/crucible-" + who + "-";
    std::ifstream in(path);
    std::vector<std::string> parents;
    for (std::string line; std::getline(in, line);) {
      size_t at = line.rfind('/');
      struct statfs fs {};
      if (!line.empty() && line[0] == '/' && at != std::string::npos && line.compare(at, own.size(), own) == 0 &&
          line.find("/../") == std::string::npos && ::statfs(line.c_str(), &fs) == 0 &&
          (fs.f_type == CGROUP_SUPER_MAGIC || fs.f_type == CGROUP2_SUPER_MAGIC)) {
        parents.push_back(line);
      }
    }
    // Kept while a cgroup could not be removed yet, so that a later call finishes the work.
    if (CgroupPool::Reap(parents)) ::unlink(path.c_str());
  }
}

std::string Handle(pid_t pid, const std::string& start) {
  return "supervisor=" + std::to_string(pid) + " start=" + start;
}

bool ParseHandle(const std::string& handle, pid_t* pid, std::string* start) {
  int p = 0, used = 0;
  unsigned long long s = 0;
  if (std::sscanf(handle.c_str(), "supervisor=%d start=%llu%n", &p, &s, &used) != 2) return false;
  if (static_cast<size_t>(used) != handle.size() || p <= 0) return false;
  *pid = p;
  *start = std::to_string(s);
  return true;
}

std::string Frame(const std::string& payload) {
  std::string out(4, '\0');
  auto n = static_cast<uint32_t>(payload.size());
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += payload;
  return out;
}

bool WriteAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        // A non-blocking socket whose buffer is full: the peer reads on, so wait for room.
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, -1) < 0 && errno != EINTR) return false;
        continue;
      }
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

bool SendWithFd(int sock, const std::string& frame, int fd) {
  if (fd < 0) return WriteAll(sock, frame);
  // The descriptor rides with the first byte; the rest follows as plain data.
  iovec iov{const_cast<char*>(frame.data()), 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  std::memset(control, 0, sizeof control);
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ssize_t n;
  do {
    n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n != 1) return false;
  return WriteAll(sock, frame.substr(1));
}

FrameReader::Read FrameReader::ReadSome(int sock, int* fd) {
  char buf[65536];
  bool got = false;
  for (;;) {
    ssize_t n;
    if (fd != nullptr) {
      iovec iov{buf, sizeof buf};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
      if (n >= 0) {
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
          if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int passed;
            std::memcpy(&passed, CMSG_DATA(c), sizeof passed);
            if (*fd < 0) {
              *fd = passed;
            } else {
              ::close(passed);
            }
          }
        }
      }
    } else {
      n = ::read(sock, buf, sizeof buf);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return got ? Read::kData : Read::kAgain;
      return Read::kError;
    }
    if (n == 0) return Read::kEof;
    if (pos_ > 0 && pos_ == buf_.size()) {
      buf_.clear();
      pos_ = 0;
    }
    buf_.append(buf, static_cast<size_t>(n));
    got = true;
    if (static_cast<size_t>(n) < sizeof buf) return Read::kData;
  }
}

std::optional<std::string> FrameReader::Next() {
  if (broken_ || buf_.size() - pos_ < 4) return std::nullopt;
  uint32_t n = 0;
  for (int i = 0; i < 4; ++i) n |= static_cast<uint32_t>(static_cast<unsigned char>(buf_[pos_ + i])) << (8 * i);
  if (n > kMaxFrame) {
    broken_ = true;
    return std::nullopt;
  }
  if (buf_.size() - pos_ - 4 < n) return std::nullopt;
  std::string payload = buf_.substr(pos_ + 4, n);
  pos_ += 4 + n;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > (1u << 20)) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  return payload;
}

namespace {

class Writer {
 public:
  explicit Writer(char tag) { out_.push_back(tag); }
  void U64(uint64_t v) {
    char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    out_.append(b, 8);
  }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void Str(const std::string& v) {
    auto n = static_cast<uint32_t>(v.size());
    char b[4];
    for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    out_.append(b, 4);
    out_ += v;
  }
  std::string Take() { return std::move(out_); }
  void Reserve(size_t n) { out_.reserve(n); }

 private:
  std::string out_;
};

class Reader {
 public:
  Reader(const std::string& payload, char tag) : p_(payload.data()), end_(payload.data() + payload.size()) {
    ok_ = p_ < end_ && *p_ == tag;
    ++p_;
  }
  uint64_t U64() {
    if (!Need(8)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(p_[i])) << (8 * i);
    p_ += 8;
    return v;
  }
  int64_t I64() { return static_cast<int64_t>(U64()); }
  std::string Str() {
    if (!Need(4)) return {};
    uint32_t n = 0;
    for (int i = 0; i < 4; ++i) n |= static_cast<uint32_t>(static_cast<unsigned char>(p_[i])) << (8 * i);
    p_ += 4;
    if (!Need(n)) return {};
    std::string v(p_, n);
    p_ += n;
    return v;
  }
  bool ok() const { return ok_; }
  bool done() const { return ok_ && p_ == end_; }

 private:
  bool Need(size_t n) {
    if (ok_ && static_cast<size_t>(end_ - p_) >= n) return true;
    ok_ = false;
    return false;
  }
  const char* p_;
  const char* end_;
  bool ok_ = true;
};

}  // namespace

std::string AttemptId(const std::string& step_id, uint32_t attempt) { return step_id + "#" + std::to_string(attempt); }

std::string EncodeStart(const std::string& id, const sdk::Launch& l) {
  Writer w('S');
  w.Reserve(512 + (l.upstream_json ? l.upstream_json->size() : 0));
  w.Str(id);
  w.Str(l.step_id);
  w.U64(l.attempt);
  w.U64(l.argv.size());
  for (const std::string& a : l.argv) w.Str(a);
  w.U64(l.env.size());
  for (const auto& [k, v] : l.env) {
    w.Str(k);
    w.Str(v);
  }
  w.U64(l.inputs.size());
  for (const sdk::InputFile& in : l.inputs) {
    w.Str(in.source);
    w.Str(in.dest);
  }
  w.Str(l.work_dir);
  w.Str(l.log_path);
  w.U64(l.log_cap_bytes);
  w.U64(l.output_cap_bytes);
  w.I64(l.timeout_ms);
  w.I64(l.cpu_millicores);
  w.I64(l.memory_bytes);
  w.U64(l.keep_work ? 1 : 0);
  w.U64(l.upstream_json ? 1 : 0);
  if (l.upstream_json) w.Str(*l.upstream_json);
  return w.Take();
}

bool DecodeStart(const std::string& payload, std::string* id, sdk::Launch* l) {
  Reader r(payload, 'S');
  *id = r.Str();
  l->step_id = r.Str();
  l->attempt = static_cast<uint32_t>(r.U64());
  for (uint64_t n = r.U64(); r.ok() && n > 0; --n) l->argv.push_back(r.Str());
  for (uint64_t n = r.U64(); r.ok() && n > 0; --n) {
    std::string k = r.Str();
    l->env.emplace_back(std::move(k), r.Str());
  }
  for (uint64_t n = r.U64(); r.ok() && n > 0; --n) {
    std::string src = r.Str();
    l->inputs.push_back({std::move(src), r.Str()});
  }
  l->work_dir = r.Str();
  l->log_path = r.Str();
  l->log_cap_bytes = r.U64();
  l->output_cap_bytes = r.U64();
  l->timeout_ms = r.I64();
  l->cpu_millicores = r.I64();
  l->memory_bytes = r.I64();
  l->keep_work = r.U64() != 0;
  if (r.U64() != 0) l->upstream_json = r.Str();
  return r.done();
}

std::string EncodeResult(const std::string& id, const sdk::Result& x, bool orphan) {
  Writer w('R');
  w.Str(id);
  w.I64(x.outcome);
  w.I64(x.reason);
  w.I64(x.exit_code);
  w.I64(x.signal);
  w.I64(x.started_at_ms);
  w.I64(x.ended_at_ms);
  w.U64(x.log_bytes_kept);
  w.U64(x.log_bytes_dropped);
  w.Str(x.message);
  w.U64(orphan ? 1 : 0);
  w.U64(x.outputs_text ? 1 : 0);
  if (x.outputs_text) w.Str(*x.outputs_text);
  return w.Take();
}

bool DecodeResult(const std::string& payload, std::string* id, sdk::Result* x, bool* orphan) {
  Reader r(payload, 'R');
  *id = r.Str();
  x->outcome = static_cast<crucible_outcome>(r.I64());
  x->reason = static_cast<crucible_reason>(r.I64());
  x->exit_code = static_cast<int>(r.I64());
  x->signal = static_cast<int>(r.I64());
  x->started_at_ms = r.I64();
  x->ended_at_ms = r.I64();
  x->log_bytes_kept = r.U64();
  x->log_bytes_dropped = r.U64();
  x->message = r.Str();
  *orphan = r.U64() != 0;
  if (r.U64() != 0) x->outputs_text = r.Str();
  return r.done();
}

}  // namespace crucible::plugins::localproc::proto

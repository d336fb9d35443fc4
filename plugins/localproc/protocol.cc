#include "protocol.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace crucible::plugins::localproc::proto {

std::string SocketName(pid_t pid, const std::string& start) {
  std::string name(1, '\0');
  name += "crucible-localproc-" + std::to_string(pid) + "-" + start;
  return name;
}

std::string JournalPath(const std::string& logs_dir, pid_t pid, const std::string& start) {
  return logs_dir + "/.localproc-supervisor-" + std::to_string(pid) + "-" + start + ".journal";
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
      n = ::recv(sock, buf, sizeof buf, 0);
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

/// Text that may not be UTF-8 (argv, env, outputs) as JSON: bytes as a string
/// when valid UTF-8, else as an array of byte values.
Json Bytes(const std::string& s) {
  bool ascii = true;
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return s;
  try {
    (void)Json(s).dump();
    return s;
  } catch (const Json::exception&) {
    Json a = Json::array();
    for (char c : s) a.push_back(static_cast<unsigned char>(c));
    return Json{{"b", a}};
  }
}

std::string Unbytes(const Json& j) {
  if (j.is_string()) return j.get<std::string>();
  std::string s;
  for (const Json& b : j.at("b")) s.push_back(static_cast<char>(b.get<int>()));
  return s;
}

}  // namespace

std::string AttemptId(const std::string& step_id, uint32_t attempt) { return step_id + "#" + std::to_string(attempt); }

Json LaunchToJson(const sdk::Launch& l) {
  Json argv = Json::array();
  for (const std::string& a : l.argv) argv.push_back(Bytes(a));
  Json env = Json::array();
  for (const auto& [k, v] : l.env) env.push_back(Json::array({Bytes(k), Bytes(v)}));
  Json inputs = Json::array();
  for (const sdk::InputFile& in : l.inputs) inputs.push_back(Json::array({Bytes(in.source), Bytes(in.dest)}));
  Json j = {{"step", Bytes(l.step_id)},
            {"attempt", l.attempt},
            {"argv", std::move(argv)},
            {"env", std::move(env)},
            {"inputs", std::move(inputs)},
            {"work_dir", Bytes(l.work_dir)},
            {"log_path", Bytes(l.log_path)},
            {"log_cap", l.log_cap_bytes},
            {"output_cap", l.output_cap_bytes},
            {"timeout_ms", l.timeout_ms},
            {"cpu", l.cpu_millicores},
            {"memory", l.memory_bytes},
            {"keep_work", l.keep_work}};
  if (l.upstream_json) j["upstream"] = Bytes(*l.upstream_json);
  return j;
}

sdk::Launch LaunchFromJson(const Json& j) {
  sdk::Launch l;
  l.step_id = Unbytes(j.at("step"));
  l.attempt = j.at("attempt").get<uint32_t>();
  for (const Json& a : j.at("argv")) l.argv.push_back(Unbytes(a));
  for (const Json& e : j.at("env")) l.env.emplace_back(Unbytes(e.at(0)), Unbytes(e.at(1)));
  for (const Json& in : j.at("inputs")) l.inputs.push_back({Unbytes(in.at(0)), Unbytes(in.at(1))});
  l.work_dir = Unbytes(j.at("work_dir"));
  l.log_path = Unbytes(j.at("log_path"));
  l.log_cap_bytes = j.at("log_cap").get<uint64_t>();
  l.output_cap_bytes = j.at("output_cap").get<uint64_t>();
  l.timeout_ms = j.at("timeout_ms").get<int64_t>();
  l.cpu_millicores = j.at("cpu").get<int64_t>();
  l.memory_bytes = j.at("memory").get<int64_t>();
  l.keep_work = j.at("keep_work").get<bool>();
  if (auto it = j.find("upstream"); it != j.end()) l.upstream_json = Unbytes(*it);
  return l;
}

Json ResultToJson(const sdk::Result& r) {
  Json j = {{"outcome", static_cast<int>(r.outcome)},
            {"reason", static_cast<int>(r.reason)},
            {"exit_code", r.exit_code},
            {"signal", r.signal},
            {"started", r.started_at_ms},
            {"ended", r.ended_at_ms},
            {"kept", r.log_bytes_kept},
            {"dropped", r.log_bytes_dropped},
            {"message", Bytes(r.message)}};
  if (r.outputs_text) j["outputs"] = Bytes(*r.outputs_text);
  return j;
}

sdk::Result ResultFromJson(const Json& j) {
  sdk::Result r;
  r.outcome = static_cast<crucible_outcome>(j.at("outcome").get<int>());
  r.reason = static_cast<crucible_reason>(j.at("reason").get<int>());
  r.exit_code = j.at("exit_code").get<int>();
  r.signal = j.at("signal").get<int>();
  r.started_at_ms = j.at("started").get<int64_t>();
  r.ended_at_ms = j.at("ended").get<int64_t>();
  r.log_bytes_kept = j.at("kept").get<uint64_t>();
  r.log_bytes_dropped = j.at("dropped").get<uint64_t>();
  r.message = Unbytes(j.at("message"));
  if (auto it = j.find("outputs"); it != j.end()) r.outputs_text = Unbytes(*it);
  return r;
}

}  // namespace crucible::plugins::localproc::proto

// See attempt_io.h.
#include "attempt_io.h"

#include "common/log_ring.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>

namespace crucible::plugins::compose {
namespace {

bool ValidShellName(const std::string& name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

std::string Seconds(int64_t ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lld.%03lld", static_cast<long long>(ms / 1000), static_cast<long long>(ms % 1000));
  return buf;
}

la_ssize_t AppendArchive(struct archive*, void* user, const void* data, size_t len) {
  static_cast<std::string*>(user)->append(static_cast<const char*>(data), len);
  return static_cast<la_ssize_t>(len);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("input " + path + ": cannot be read");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  out += "'";
  return out;
}

bool IsValidUtf8(const std::string& s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    bool overlong = (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

std::string BuildLaunchScript(int64_t timeout_ms, int64_t grace_ms, uint64_t output_cap,
                              const std::vector<std::string>& argv,
                              const std::vector<std::pair<std::string, std::string>>& env) {
  std::string s = "_t=" + (timeout_ms > 0 ? Seconds(timeout_ms) : std::string("0")) + "\n";
  s += "_g=" + Seconds(grace_ms > 0 ? grace_ms : 0) + "\n";
  s += "_c=" + std::to_string(output_cap) + "\n";
  s += "set --";
  for (const auto& a : argv) s += " " + ShellQuote(a);
  s += "\n_launch() {\n";
  for (const auto& [k, v] : env) {
    if (!ValidShellName(k)) throw std::invalid_argument("environment name \"" + k + "\" cannot be set in a container shell");
    s += "export " + k + "=" + ShellQuote(v) + "\n";
  }
  s += ":\n}\n";
  return s;
}

std::string BuildTar(const std::vector<TarEntry>& entries) {
  std::string out;
  std::unique_ptr<struct archive, int (*)(struct archive*)> a(archive_write_new(), &archive_write_free);
  archive_write_set_format_pax_restricted(a.get());
  archive_write_set_bytes_in_last_block(a.get(), 1);
  if (archive_write_open(a.get(), &out, nullptr, &AppendArchive, nullptr) != ARCHIVE_OK) {
    throw std::runtime_error(std::string("tar: ") + archive_error_string(a.get()));
  }
  std::set<std::string> dirs;
  auto add = [&](const std::string& path, mode_t type, int mode, const std::string& bytes) {
    std::unique_ptr<struct archive_entry, void (*)(struct archive_entry*)> e(archive_entry_new(), &archive_entry_free);
    archive_entry_set_pathname(e.get(), path.c_str());
    archive_entry_set_filetype(e.get(), type);
    archive_entry_set_perm(e.get(), static_cast<mode_t>(mode));
    archive_entry_set_size(e.get(), type == AE_IFREG ? static_cast<la_int64_t>(bytes.size()) : 0);
    if (archive_write_header(a.get(), e.get()) != ARCHIVE_OK) {
      throw std::runtime_error("tar " + path + ": " + archive_error_string(a.get()));
    }
    if (type == AE_IFREG && !bytes.empty() &&
        archive_write_data(a.get(), bytes.data(), bytes.size()) != static_cast<la_ssize_t>(bytes.size())) {
      throw std::runtime_error("tar " + path + ": " + archive_error_string(a.get()));
    }
  };
  for (const auto& entry : entries) {
    for (size_t slash = entry.dest.find('/'); slash != std::string::npos; slash = entry.dest.find('/', slash + 1)) {
      std::string dir = entry.dest.substr(0, slash);
      if (!dir.empty() && dirs.insert(dir).second) add(dir, AE_IFDIR, 0755, "");
    }
    int mode = entry.mode;
    std::string bytes;
    if (entry.source) {
      struct stat st {};
      if (::stat(entry.source->c_str(), &st) == 0) mode = static_cast<int>(st.st_mode & 07777);
      bytes = ReadFile(*entry.source);
    } else {
      bytes = entry.bytes;
    }
    add(entry.dest, AE_IFREG, mode, bytes);
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK) throw std::runtime_error(std::string("tar: ") + archive_error_string(a.get()));
  return out;
}

void FrameDemux::Feed(const char* data, size_t len) {
  while (len > 0) {
    if (remaining_ == 0) {
      size_t take = std::min(len, sizeof header_ - header_len_);
      std::memcpy(header_ + header_len_, data, take);
      header_len_ += take;
      data += take;
      len -= take;
      if (header_len_ < sizeof header_) return;
      header_len_ = 0;
      stream_ = header_[0];
      remaining_ = (uint64_t{header_[4]} << 24) | (uint64_t{header_[5]} << 16) | (uint64_t{header_[6]} << 8) |
                   uint64_t{header_[7]};
      continue;
    }
    size_t take = static_cast<size_t>(std::min<uint64_t>(len, remaining_));
    sink_(stream_, data, take);
    data += take;
    len -= take;
    remaining_ -= take;
  }
}

void ControlParser::Feed(const char* data, size_t len) {
  while (len > 0) {
    if (in_output_) {
      size_t take = static_cast<size_t>(std::min<uint64_t>(len, output_left_));
      report_.output->append(data, take);
      output_left_ -= take;
      return;
    }
    const char* nl = static_cast<const char*>(std::memchr(data, '\n', len));
    if (nl == nullptr) {
      line_.append(data, len);
      return;
    }
    line_.append(data, static_cast<size_t>(nl - data));
    len -= static_cast<size_t>(nl - data) + 1;
    data = nl + 1;
    std::string line;
    line.swap(line_);
    Line(line);
  }
}

void ControlParser::Line(const std::string& line) {
  std::istringstream in(line);
  std::string word;
  in >> word;
  if (word == "crucible-of") {
    report_.label = line.size() > word.size() + 1 ? line.substr(word.size() + 1) : "";
  } else if (word == "crucible-pid") {
    in >> report_.supervisor_pid >> report_.step_pid;
  } else if (word == "crucible-alive") {
    report_.alive = true;
  } else if (word == "crucible-exit") {
    report_.exited = true;
    in >> report_.rc >> report_.signal >> report_.why >> report_.oom_before >> report_.oom_after;
  } else if (word == "crucible-output") {
    report_.output = std::string();
    in_output_ = true;
  } else if (word == "crucible-scrub") {
    std::string state;
    in >> state;
    report_.scrub_ok = state == "ok";
  } else if (word == "crucible-setup-failed") {
    report_.setup_failed = true;
  }
}

CappedLog::~CappedLog() {
  if (fd_ >= 0) ::close(fd_);
}

void CappedLog::Write(const char* data, size_t len) {
  if (len == 0) return;
  if (fd_ < 0 && !failed_) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    failed_ = fd_ < 0;
  }
  if (failed_ || cap_ == 0 || !LogRing::Write(fd_, cap_, written_, data, len)) {
    lost_ += len;
    return;
  }
  written_ += len;
}

void CappedLog::Finish() {
  kept_ = std::min(written_, cap_);
  dropped_ = written_ - kept_ + lost_;
  if (fd_ >= 0) {
    if (written_ > cap_) (void)LogRing::Finish(fd_, cap_, written_);
    ::close(fd_);
  }
  fd_ = -1;
}

}  // namespace crucible::plugins::compose

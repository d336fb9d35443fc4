// LogRing: an attempt's log as the head of its output plus a circular tail,
// inside the log file itself, so a flood costs no memory. Shared by the
// backends that capture output into a log of their own (localproc's
// supervisor, compose).
//
// Thread-safety: functions of one file descriptor; callers serialise per file.
#ifndef CRUCIBLE_PLUGINS_COMMON_LOG_RING_H_
#define CRUCIBLE_PLUGINS_COMMON_LOG_RING_H_

#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

namespace crucible::plugins {

/// The log file as head plus circular tail (see the design comment): the
/// byte at stream position p lives at p below cap/2, else at
/// cap/2 + (p - cap/2) mod (cap - cap/2).
struct LogRing {
  static uint64_t Head(uint64_t cap) { return cap / 2; }

  /// pwrites all of data at off; false on error.
  static bool PwriteAll(int fd, const char* data, size_t len, uint64_t off) {
    while (len > 0) {
      ssize_t n = ::pwrite(fd, data, len, static_cast<off_t>(off));
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      data += n;
      len -= static_cast<size_t>(n);
      off += static_cast<uint64_t>(n);
    }
    return true;
  }

  /// Places len bytes of output at stream position pos; false on error.
  static bool Write(int fd, uint64_t cap, uint64_t pos, const char* data, size_t len) {
    const uint64_t head = Head(cap), ring = cap - head;
    if (pos < head) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(len, head - pos));
      if (!PwriteAll(fd, data, n, pos)) return false;
      data += n;
      pos += n;
      len -= n;
    }
    // Only the last `ring` bytes of what is left can survive in the ring.
    if (len > ring) {
      size_t skip = static_cast<size_t>(len - ring);
      data += skip;
      pos += skip;
      len -= skip;
    }
    while (len > 0) {
      uint64_t r = (pos - head) % ring;
      size_t n = static_cast<size_t>(std::min<uint64_t>(ring - r, len));
      if (!PwriteAll(fd, data, n, head + r)) return false;
      data += n;
      pos += n;
      len -= n;
    }
    return true;
  }

  /// Copies len bytes within fd from src to dst, in pieces of at most chunk
  /// (each piece's ranges must not overlap); "" or the error.
  static std::string Copy(int fd, uint64_t src, uint64_t dst, uint64_t len, uint64_t chunk) {
    static thread_local char buf[65536];
    static std::atomic<bool> no_cfr{false};
    while (len > 0) {
      uint64_t c = std::min(len, chunk);
      if (!no_cfr.load(std::memory_order_relaxed)) {
        loff_t in = static_cast<loff_t>(src), out = static_cast<loff_t>(dst);
        ssize_t n = ::copy_file_range(fd, &in, fd, &out, static_cast<size_t>(c), 0);
        if (n > 0) {
          src += static_cast<uint64_t>(n);
          dst += static_cast<uint64_t>(n);
          len -= static_cast<uint64_t>(n);
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) return "unexpected end of file";
        if (errno != ENOSYS && errno != EXDEV && errno != EINVAL && errno != EOPNOTSUPP)
          return std::strerror(errno);
        no_cfr.store(true, std::memory_order_relaxed);
      }
      size_t piece = static_cast<size_t>(std::min<uint64_t>(c, sizeof buf));
      ssize_t n = ::pread(fd, buf, piece, static_cast<off_t>(src));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return std::strerror(errno);
      if (n == 0) return "unexpected end of file";
      if (!PwriteAll(fd, buf, static_cast<size_t>(n), dst)) return std::strerror(errno);
      src += static_cast<uint64_t>(n);
      dst += static_cast<uint64_t>(n);
      len -= static_cast<uint64_t>(n);
    }
    return "";
  }

  /// The marker that stands for what was dropped between head and tail.
  static std::string Marker(uint64_t dropped) {
    return "\n[crucible-engine: " + std::to_string(dropped) + " bytes dropped]\n";
  }

  /// Turns a wrapped log (written > cap) into head + marker + tail in order; "" or the error.
  static std::string Finish(int fd, uint64_t cap, uint64_t written) {
    const uint64_t head = Head(cap), ring = cap - head;
    const uint64_t oldest = (written - head) % ring;  // ring index of the oldest byte kept
    const std::string marker = Marker(written - cap);
    const uint64_t m = marker.size();
    // The tail in order, past everything: at cap + m, so the final copy back to
    // head + m moves forward by `ring` bytes and pieces of `ring` never overlap.
    const uint64_t scratch = cap + m;
    std::string err = Copy(fd, head + oldest, scratch, ring - oldest, ring);
    if (err.empty()) err = Copy(fd, head, scratch + (ring - oldest), oldest, ring);
    if (err.empty() && !PwriteAll(fd, marker.data(), marker.size(), head)) err = std::strerror(errno);
    if (err.empty()) err = Copy(fd, scratch, head + m, ring, ring);
    if (err.empty() && ::ftruncate(fd, static_cast<off_t>(head + m + ring)) != 0) err = std::strerror(errno);
    return err;
  }
};

}  // namespace crucible::plugins

#endif  // CRUCIBLE_PLUGINS_COMMON_LOG_RING_H_

// SystemClock, Waker (an eventfd) and run ids.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <random>

#include "scheduler/scheduler.h"

namespace crucible::scheduler {

int64_t SystemClock::NowMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

int64_t SystemClock::MonotonicMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

bool Clock::Wait(const Waker& waker, int timeout_ms) { return waker.Wait(timeout_ms); }

Waker::Waker() : fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  CRUCIBLE_CHECK(fd_ >= 0, "eventfd() failed (out of file descriptors?)");
}

Waker::~Waker() {
  if (fd_ >= 0) close(fd_);
}

void Waker::Wake() const {
  // write(2) on an eventfd is async-signal-safe; EAGAIN means the counter is already set.
  uint64_t one = 1;
  int saved = errno;
  ssize_t n = write(fd_, &one, sizeof one);
  (void)n;
  errno = saved;
}

bool Waker::Wait(int timeout_ms) const {
  pollfd p{fd_, POLLIN, 0};
  int rc;
  do {
    rc = poll(&p, 1, timeout_ms < 0 ? -1 : timeout_ms);
  } while (rc < 0 && errno == EINTR && timeout_ms < 0);
  if (rc <= 0) return false;
  uint64_t value = 0;
  ssize_t n = read(fd_, &value, sizeof value);
  return n == static_cast<ssize_t>(sizeof value);
}

std::string NewRunId() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  std::random_device rd;
  unsigned suffix = rd() & 0xffffu;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s-%04x", stamp, suffix);
  return buf;
}

}  // namespace crucible::scheduler

#include "spawn.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#if defined(__x86_64__)
#include <linux/sched.h>
#include <sys/syscall.h>
#endif

namespace crucible::plugins::localproc {
namespace {

#if defined(__x86_64__)
/// clone3 with a child that runs fn(arg) on the stack given in args, then _exit()s with its result.
/// Returns the child's pid in the parent, or -errno. The child starts with no stack frame, so this
/// is assembly (as glibc's own clone).
extern "C" long CrucibleClone3(clone_args* args, size_t size, int (*fn)(void*), void* arg);
asm(R"(
  .text
  .globl CrucibleClone3
  .type CrucibleClone3, @function
CrucibleClone3:
  mov %rdx, %r8
  mov %rcx, %r9
  mov $435, %eax
  syscall
  test %rax, %rax
  jnz 1f
  xor %ebp, %ebp
  mov %r9, %rdi
  call *%r8
  mov %eax, %edi
  mov $60, %eax
  syscall
  hlt
1:
  ret
  .size CrucibleClone3, .-CrucibleClone3
)");
static_assert(SYS_clone3 == 435 && SYS_exit == 60, "x86-64 syscall numbers");
#endif

/// Shared between parent and child (CLONE_VM): what the child saw go wrong.
struct ChildArgs {
  const SpawnRequest* request;
  const char* const* candidates;  ///< NULL-terminated
  int join_track;                 ///< also write to request->track_procs_fd (no CLONE_INTO_CGROUP)
  int exec_errno;
  int setup_errno;
  const char* stage;
};

/// Runs in the child on the private stack; async-signal-safe calls only.
int ChildMain(void* raw) {
  ChildArgs* args = static_cast<ChildArgs*>(raw);
  const SpawnRequest& r = *args->request;
  // Handlers installed by the engine must not run in the child; SIGPIPE gets its default back.
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction old;
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    if (::sigaction(sig, nullptr, &old) != 0) continue;
    if (sig == SIGPIPE || (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN)) ::sigaction(sig, &dfl, nullptr);
  }
  if (args->join_track && r.track_procs_fd >= 0 && ::write(r.track_procs_fd, "0", 1) != 1) {
    args->setup_errno = errno;
    args->stage = "joining its cgroup";
    ::_exit(127);
  }
  for (int fd : r.cgroup_procs_fds) {
    if (::write(fd, "0", 1) != 1) {
      args->setup_errno = errno;
      args->stage = "joining its cgroup";
      ::_exit(127);
    }
  }
  if (::setpgid(0, 0) != 0) {
    args->setup_errno = errno;
    args->stage = "setpgid";
    ::_exit(127);
  }
  // The step dies with its supervisor: a killed supervisor leaves no step that nobody reaps.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::dup2(r.stdin_fd, 0) < 0 || ::dup2(r.output_fd, 1) < 0 || ::dup2(r.output_fd, 2) < 0) {
    args->setup_errno = errno;
    args->stage = "redirecting stdio";
    ::_exit(127);
  }
  // Descriptors the engine opened without O_CLOEXEC must not leak into steps.
  ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
  if (::chdir(r.cwd) != 0) {
    args->setup_errno = errno;
    args->stage = "entering the working directory";
    ::_exit(127);
  }
  if (r.rlimit_as > 0) {
    struct rlimit lim;
    lim.rlim_cur = lim.rlim_max = static_cast<rlim_t>(r.rlimit_as);
    if (::setrlimit(RLIMIT_AS, &lim) != 0) {
      args->setup_errno = errno;
      args->stage = "setrlimit";
      ::_exit(127);
    }
  }
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  int err = ENOENT;
  for (const char* const* c = args->candidates; *c != nullptr; ++c) {
    ::execve(*c, r.argv, r.envp);
    // As execvp: remember a permission problem, keep looking after "not found".
    if (errno == EACCES) err = EACCES;
    else if (errno != ENOENT && errno != ENOTDIR) {
      err = errno;
      break;
    }
  }
  args->exec_errno = err;
  ::_exit(127);
}

}  // namespace

Spawner::Spawner() {
  stack_size_ = 256 * 1024;
  stack_ = ::mmap(nullptr, stack_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack_ == MAP_FAILED) throw std::runtime_error(std::string("mmap spawn stack: ") + std::strerror(errno));
}

Spawner::~Spawner() {
  if (stack_ != MAP_FAILED && stack_ != nullptr) ::munmap(stack_, stack_size_);
}

SpawnResult Spawner::Spawn(const SpawnRequest& request) {
  std::vector<const char*> candidates;
  candidates.reserve(request.candidates.size() + 1);
  for (const std::string& c : request.candidates) candidates.push_back(c.c_str());
  candidates.push_back(nullptr);
  ChildArgs args{&request, candidates.data(), 1, 0, 0, ""};

  // No signal handler may run in the child while it shares our memory.
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  char* top = static_cast<char*>(stack_) + stack_size_;
  pid_t pid = -1;
  int clone_errno = 0;
#if defined(__x86_64__)
  if (request.cgroup_dir_fd >= 0 && !no_clone3_) {
    clone_args ca{};
    ca.flags = CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP;
    ca.exit_signal = SIGCHLD;
    ca.stack = reinterpret_cast<uint64_t>(stack_);
    ca.stack_size = stack_size_;
    ca.cgroup = static_cast<uint64_t>(request.cgroup_dir_fd);
    args.join_track = 0;
    long rc = CrucibleClone3(&ca, sizeof ca, &ChildMain, &args);
    if (rc > 0) {
      pid = static_cast<pid_t>(rc);
    } else {
      // Not supported here: join through cgroup.procs from now on. Other
      // failures (EAGAIN, ENOMEM) fall back for this call only.
      if (rc == -ENOSYS || rc == -E2BIG || rc == -EINVAL || rc == -EOPNOTSUPP || rc == -EPERM) no_clone3_ = true;
      args.join_track = 1;
    }
  }
#endif
  if (pid < 0) {
    pid = ::clone(&ChildMain, top, CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
    clone_errno = errno;
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);

  SpawnResult result;
  if (pid < 0) {
    result.error = std::string("clone: ") + std::strerror(clone_errno);
    return result;
  }
  result.pid = pid;
  result.exec_errno = args.exec_errno;
  result.setup_errno = args.setup_errno;
  result.stage = args.stage;
  return result;
}

std::vector<std::string> ExecutableCandidates(const std::string& argv0, const std::string& path_env) {
  std::vector<std::string> out;
  if (argv0.empty()) return out;
  if (argv0.find('/') != std::string::npos) {
    out.push_back(argv0);
    return out;
  }
  std::string path = path_env.empty() ? "/usr/local/bin:/usr/bin:/bin" : path_env;
  size_t start = 0;
  for (;;) {
    size_t end = path.find(':', start);
    std::string dir = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
    out.push_back((dir.empty() ? std::string(".") : dir) + "/" + argv0);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

}  // namespace crucible::plugins::localproc

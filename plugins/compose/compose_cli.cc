// The Compose command line. See compose_cli.h.
#include "compose_cli.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

extern char** environ;

namespace crucible::plugins::compose {

std::optional<ComposeCli> DetectCompose() {
  std::string out;
  if (RunCommand({"docker", "compose", "version"}, &out) == 0) return ComposeCli{ComposeFlavor::kV2, {"docker", "compose"}};
  if (RunCommand({"docker-compose", "version"}, &out) == 0) return ComposeCli{ComposeFlavor::kV1, {"docker-compose"}};
  return std::nullopt;
}

namespace {

/// The prefix, the project and the files: what every command of the pool starts with.
std::vector<std::string> ProjectCommand(const ComposeCli& cli, const std::string& project,
                                        const std::vector<std::string>& files) {
  std::vector<std::string> argv = cli.prefix;
  argv.insert(argv.end(), {"--project-name", project});
  for (const auto& f : files) argv.insert(argv.end(), {"--file", f});
  return argv;
}

}  // namespace

std::vector<std::string> UpCommand(const ComposeCli& cli, const std::string& project,
                                   const std::vector<std::string>& files, const std::map<std::string, int>& replicas) {
  std::vector<std::string> argv = ProjectCommand(cli, project, files);
  argv.insert(argv.end(), {"up", "--detach", "--no-color"});
  if (cli.flavor == ComposeFlavor::kV2) argv.emplace_back("--quiet-pull");
  for (const auto& [service, n] : replicas) {
    argv.emplace_back("--scale");
    argv.push_back(service + "=" + std::to_string(n));
  }
  for (const auto& entry : replicas) argv.push_back(entry.first);
  return argv;
}

std::vector<std::string> DownCommand(const ComposeCli& cli, const std::string& project,
                                     const std::vector<std::string>& files) {
  std::vector<std::string> argv = ProjectCommand(cli, project, files);
  argv.insert(argv.end(), {"down", "--volumes", "--remove-orphans", "--timeout", "0"});
  return argv;
}

int RunCommand(const std::vector<std::string>& argv, std::string* output) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    if (output) *output = std::string("cannot run ") + argv[0];
    return -1;
  }
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (output) output->append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string RenderTemplate(const std::string& text, const std::map<std::string, std::string>& vars) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    size_t at = text.find("${", i);
    if (at == std::string::npos) break;
    size_t close = text.find('}', at);
    if (close == std::string::npos) break;
    std::string inner = text.substr(at + 2, close - at - 2);
    std::string name = inner;
    std::optional<std::string> fallback;
    if (size_t d = inner.find(":-"); d != std::string::npos) {
      name = inner.substr(0, d);
      fallback = inner.substr(d + 2);
    }
    out.append(text, i, at - i);
    auto it = vars.find(name);
    if (it != vars.end() && !it->second.empty()) {
      out += it->second;
    } else if (it != vars.end() && fallback) {
      out += *fallback;
    } else {
      out.append(text, at, close + 1 - at);
    }
    i = close + 1;
  }
  out.append(text, i, std::string::npos);
  return out;
}

}  // namespace crucible::plugins::compose

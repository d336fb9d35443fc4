// EngineProcess: the built crucible-engine binary run as a child process,
// its stdout and stderr captured through pipes, for the integration tests.
#ifndef CRUCIBLE_TESTS_INTEGRATION_ENGINE_PROCESS_H_
#define CRUCIBLE_TESTS_INTEGRATION_ENGINE_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace crucible::testing {

/// How a finished engine ended and what it printed.
struct EngineResult {
  int exit_code = -1;  ///< 128 + signal when killed by a signal
  std::string out;
  std::string err;
};

/// One running crucible-engine. The destructor kills and reaps it if still running.
class EngineProcess {
 public:
  /// Starts the engine with `args` (argv[1..]); `env` entries NAME=VALUE are added
  /// to (or replace) this process's environment; `cwd` "" keeps ours.
  static std::unique_ptr<EngineProcess> Start(const std::vector<std::string>& args,
                                              const std::vector<std::string>& env = {},
                                              const std::string& cwd = "");
  ~EngineProcess();
  EngineProcess(const EngineProcess&) = delete;
  EngineProcess& operator=(const EngineProcess&) = delete;

  pid_t pid() const { return pid_; }
  /// Reads output until `done(err_so_far)` holds or `timeout` passes; true when it held.
  bool WaitForStderr(const std::function<bool(const std::string&)>& done, std::chrono::milliseconds timeout);
  /// The same, on stdout.
  bool WaitForStdout(const std::function<bool(const std::string&)>& done, std::chrono::milliseconds timeout);
  /// Reads both pipes to their end and reaps the process; kills it after `timeout`.
  EngineResult Wait(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

 private:
  EngineProcess() = default;
  /// Reads what is available within `timeout_ms`; false when both pipes are closed.
  bool Pump(int timeout_ms);
  bool WaitFor(const std::string& text, const std::function<bool(const std::string&)>& done,
               std::chrono::milliseconds timeout);

  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  std::string out_;
  std::string err_;
};

/// Runs the engine to its end.
EngineResult RunEngine(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                       const std::string& cwd = "");

/// Polls `cond` every few milliseconds until it holds or `timeout` passes.
bool WaitUntil(const std::function<bool()>& cond, std::chrono::milliseconds timeout);

}  // namespace crucible::testing

#endif  // CRUCIBLE_TESTS_INTEGRATION_ENGINE_PROCESS_H_

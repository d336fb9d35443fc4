// Tests of the localproc backend plugin, driven the way the engine drives it:
// dlopen of the built .so, its C table, real processes and files.
#include <dlfcn.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "crucible/backend_abi.h"

namespace {

namespace fs = std::filesystem;

/// The plugin's table, loaded once for the whole test binary.
const crucible_backend_api* Api() {
  static const crucible_backend_api* api = [] () -> const crucible_backend_api* {
    void* lib = ::dlopen(CRUCIBLE_BUILD_PLUGIN_DIR "/libcrucible-backend-localproc.so", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return nullptr;
    auto entry = reinterpret_cast<crucible_backend_entry_fn>(::dlsym(lib, CRUCIBLE_BACKEND_ENTRY_SYMBOL));
    return entry == nullptr ? nullptr : entry();
  }();
  return api;
}

/// A finished attempt, copied out of the sink call.
struct Outcome {
  crucible_outcome outcome = CRUCIBLE_OUTCOME_UNSET;
  crucible_reason reason = CRUCIBLE_REASON_UNSET;
  int exit_code = 0;
  int signal = 0;
  int64_t started = 0;
  int64_t ended = 0;
  uint64_t kept = 0;
  uint64_t dropped = 0;
  std::optional<std::string> outputs;
  std::string message;
};

/// One attempt to start.
struct Step {
  std::vector<std::string> argv;
  std::vector<std::pair<std::string, std::string>> env;
  std::vector<std::pair<std::string, std::string>> inputs;  ///< source, dest
  std::optional<std::string> upstream;
  int64_t timeout_ms = 0;
  int64_t memory_bytes = 0;
  int64_t cpu_millicores = 0;
  bool keep_work = false;
  uint64_t log_cap = 64ull << 20;
  uint64_t output_cap = 4096;
};

/// Named option values for create() and check_step().
class OptionList {
 public:
  OptionList& Int(const char* name, crucible_option_type type, int64_t v) {
    crucible_option_value o{};
    o.struct_size = sizeof o;
    o.name = name;
    o.type = type;
    o.int_value = v;
    values_.push_back(o);
    return *this;
  }
  const crucible_option_value* data() const { return values_.empty() ? nullptr : values_.data(); }
  size_t size() const { return values_.size(); }

 private:
  std::vector<crucible_option_value> values_;
};

/// One backend instance plus a temp directory, with a host whose wake counts calls.
class Instance {
 public:
  explicit Instance(const OptionList& options = OptionList(), const std::string& root = "/tmp") {
    std::string tmpl = root + "/localproc-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl.data());
    host_.struct_size = sizeof host_;
    host_.ctx = this;
    host_.wake = [](void* ctx) { static_cast<Instance*>(ctx)->wakes_++; };
    host_.log = nullptr;
    host_.state_dir = dir_.c_str();
    host_.run_id = "r1";
    char err[CRUCIBLE_MESSAGE_CAP] = "";
    backend_ = Api()->create(&host_, options.data(), options.size(), err, sizeof err);
    create_error_ = err;
  }
  ~Instance() {
    Destroy();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  /// Destroys the backend now (it finishes its cleanup first); the directory stays until the end.
  void Destroy() {
    if (backend_ != nullptr) Api()->destroy(backend_);
    backend_ = nullptr;
  }
  void* backend() const { return backend_; }
  const std::string& create_error() const { return create_error_; }
  const std::string& dir() const { return dir_; }
  int wakes() const { return wakes_.load(); }
  std::string WorkDir(uint64_t key) const { return dir_ + "/work-" + std::to_string(key); }
  std::string LogPath(uint64_t key) const { return dir_ + "/log-" + std::to_string(key); }

  /// Starts a step under key; returns the status and fills handle/err.
  crucible_status Start(uint64_t key, const Step& s, std::string* handle = nullptr, std::string* error = nullptr) {
    return StartWithLog(key, s, LogPath(key), error, handle);
  }

  /// Start with a chosen log path.
  crucible_status StartWithLog(uint64_t key, const Step& s, const std::string& log, std::string* error,
                               std::string* handle = nullptr) {
    std::vector<const char*> argv;
    for (const auto& a : s.argv) argv.push_back(a.c_str());
    std::vector<crucible_kv> env;
    for (const auto& [k, v] : s.env) env.push_back({k.c_str(), v.c_str()});
    std::vector<crucible_input_file> inputs;
    for (const auto& [src, dst] : s.inputs) inputs.push_back({src.c_str(), dst.c_str()});
    std::string work = WorkDir(key);
    std::string step_id = "step" + std::to_string(key);
    crucible_attempt_launch l{};
    l.struct_size = sizeof l;
    l.attempt_key = key;
    l.run_id = "r1";
    l.step_id = step_id.c_str();
    l.attempt = 1;
    l.argv = argv.data();
    l.argc = argv.size();
    l.env = env.data();
    l.env_len = env.size();
    l.inputs = inputs.data();
    l.inputs_len = inputs.size();
    l.upstream_json = s.upstream ? s.upstream->c_str() : nullptr;
    l.work_dir = work.c_str();
    l.log_path = log.c_str();
    l.log_cap_bytes = s.log_cap;
    l.output_cap_bytes = s.output_cap;
    l.timeout_ms = s.timeout_ms;
    l.cpu_millicores = s.cpu_millicores;
    l.memory_bytes = s.memory_bytes;
    l.keep_work = s.keep_work ? 1 : 0;
    l.image = "";
    char h[CRUCIBLE_HANDLE_CAP] = "";
    char err[CRUCIBLE_MESSAGE_CAP] = "";
    crucible_status st = Api()->start(backend_, &l, h, sizeof h, err, sizeof err);
    if (handle) *handle = h;
    if (error) *error = err;
    return st;
  }

  /// Polls until the attempt's result arrives (or a generous deadline passes).
  std::optional<Outcome> Wait(uint64_t key, int timeout_ms = 20000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (results_.count(key) == 0 && std::chrono::steady_clock::now() < deadline) PollOnce(100);
    auto it = results_.find(key);
    if (it == results_.end()) return std::nullopt;
    Outcome o = it->second;
    results_.erase(it);
    return o;
  }

  /// One poll; returns how many results arrived.
  int PollOnce(int timeout_ms) {
    crucible_result_sink sink{this, [](void* ctx, const crucible_attempt_result* r) {
                                Outcome o;
                                o.outcome = r->outcome;
                                o.reason = r->reason;
                                o.exit_code = r->exit_code;
                                o.signal = r->signal;
                                o.started = r->started_at_ms;
                                o.ended = r->ended_at_ms;
                                o.kept = r->log_bytes_kept;
                                o.dropped = r->log_bytes_dropped;
                                if (r->outputs_text) o.outputs = std::string(r->outputs_text, r->outputs_len);
                                if (r->message) o.message = r->message;
                                static_cast<Instance*>(ctx)->results_[r->attempt_key] = o;
                              }};
    return Api()->poll(backend_, timeout_ms, &sink);
  }

  size_t result_count() const { return results_.size(); }

 private:
  std::string dir_;
  crucible_host host_{};
  void* backend_ = nullptr;
  std::string create_error_;
  std::atomic<int> wakes_{0};
  std::map<uint64_t, Outcome> results_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// True when pid is gone or a zombie nobody reaps (pid 1 here may not reap).
bool ProcessGone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t p = stat.rfind(')');
  return p != std::string::npos && p + 2 < stat.size() && (stat[p + 2] == 'Z' || stat[p + 2] == 'X');
}

/// Waits (polling, bounded) until pid is gone.
bool WaitGone(pid_t pid, int timeout_ms = 5000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (ProcessGone(pid)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return ProcessGone(pid);
}

/// Waits (polling, bounded) until a file holds a number; returns it or -1.
pid_t WaitPidFile(const std::string& path, int timeout_ms = 5000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    std::string text = ReadFile(path);
    if (!text.empty() && text.back() == '\n') return static_cast<pid_t>(std::atoi(text.c_str()));
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return -1;
}

int ThreadCount() {
  std::istringstream in(ReadFile("/proc/self/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
  }
  return -1;
}

std::string Describe() {
  char buf[1024] = "";
  Api()->describe(buf, sizeof buf);
  return buf;
}

bool CgroupMemoryEnforced() {
  std::string d = Describe();
  return d.rfind("cgroup ", 0) == 0 && d.find("memory") != std::string::npos &&
         d.find("approximated") == std::string::npos;
}

/// Stops the whole binary early, with the loader's reason, when the plugin cannot be loaded.
class PluginEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { ASSERT_NE(Api(), nullptr) << "cannot load the localproc plugin: " << ::dlerror(); }
};
const auto* const kPluginEnvironment = ::testing::AddGlobalTestEnvironment(new PluginEnvironment);

TEST(LocalProcTest, TableDeclaresItsOptionsAndAbi) {
  ASSERT_NE(Api(), nullptr) << dlerror();
  EXPECT_EQ(Api()->abi_major, static_cast<uint32_t>(CRUCIBLE_ABI_MAJOR));
  EXPECT_STREQ(Api()->name, "localproc");
  std::vector<std::string> names;
  for (size_t i = 0; i < Api()->options_len; ++i) names.push_back(Api()->options[i].name);
  EXPECT_EQ(names, (std::vector<std::string>{"kill_grace", "cgroup_slots", "use_cgroups"}));
  EXPECT_EQ(Api()->capacity != nullptr, true);
}

TEST(LocalProcTest, ExitZeroSucceedsAndNonZeroFails) {
  Instance in;
  ASSERT_NE(in.backend(), nullptr) << in.create_error();
  EXPECT_LT(Api()->capacity(in.backend()), 0);
  std::string handle;
  ASSERT_EQ(in.Start(1, {{"true"}}, &handle), CRUCIBLE_STATUS_OK);
  EXPECT_TRUE(std::regex_match(handle, std::regex("supervisor=[0-9]+ start=[1-9][0-9]*"))) << handle;
  ASSERT_EQ(in.Start(2, {{"/bin/sh", "-c", "exit 3"}}), CRUCIBLE_STATUS_OK);
  auto ok = in.Wait(1);
  auto bad = in.Wait(2);
  ASSERT_TRUE(ok && bad);
  EXPECT_EQ(ok->outcome, CRUCIBLE_OUTCOME_SUCCEEDED);
  EXPECT_EQ(ok->reason, CRUCIBLE_REASON_NONE);
  EXPECT_EQ(ok->exit_code, 0);
  EXPECT_GT(ok->started, 0);
  EXPECT_GE(ok->ended, ok->started);
  EXPECT_EQ(bad->outcome, CRUCIBLE_OUTCOME_FAILED);
  EXPECT_EQ(bad->reason, CRUCIBLE_REASON_EXITED);
  EXPECT_EQ(bad->exit_code, 3);
  EXPECT_GT(in.wakes(), 0);
}

TEST(LocalProcTest, KilledBySignalIsReportedAsSignaled) {
  Instance in;
  ASSERT_EQ(in.Start(1, {{"/bin/sh", "-c", "kill -9 $$"}}), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_FAILED);
  EXPECT_EQ(r->reason, CRUCIBLE_REASON_SIGNALED);
  EXPECT_EQ(r->signal, SIGKILL);
  EXPECT_EQ(r->exit_code, -1);
}

TEST(LocalProcTest, OutputFileIsReadBackUpToCapPlusOne) {
  Instance in;
  Step s{{"/bin/sh", "-c", "printf 'a=1\\nb=two\\n' > \"$CRUCIBLE_OUTPUT\""}};
  ASSERT_EQ(in.Start(1, s), CRUCIBLE_STATUS_OK);
  Step big{{"/bin/sh", "-c", "head -c 100 /dev/zero | tr '\\0' x > \"$CRUCIBLE_OUTPUT\""}};
  big.output_cap = 10;
  ASSERT_EQ(in.Start(2, big), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1);
  auto r2 = in.Wait(2);
  ASSERT_TRUE(r && r2);
  EXPECT_EQ(r->outputs, std::optional<std::string>("a=1\nb=two\n"));
  EXPECT_EQ(r2->outputs, std::optional<std::string>(std::string(11, 'x')));
}

TEST(LocalProcTest, EnvironmentHasEngineEnvLaunchEnvAndCrucibleFiles) {
  ::setenv("LOCALPROC_TEST_PASSTHROUGH", "from-engine", 1);
  ::setenv("LOCALPROC_TEST_OVERRIDDEN", "engine-value", 1);
  Instance in;
  Step s{{"/bin/sh", "-c",
          "printf '%s|%s|%s|%s|%s|' \"$LOCALPROC_TEST_PASSTHROUGH\" \"$LOCALPROC_TEST_OVERRIDDEN\" \"$FOO\" "
          "\"$CRUCIBLE_OUTPUT\" \"$CRUCIBLE_UPSTREAM\" > out.txt; cat \"$CRUCIBLE_UPSTREAM\" >> out.txt; "
          "cat out.txt > \"$CRUCIBLE_OUTPUT\""}};
  s.env = {{"FOO", "bar baz"}, {"LOCALPROC_TEST_OVERRIDDEN", "step-value"}};
  s.upstream = R"({"prep":{"state":"succeeded"}})";
  ASSERT_EQ(in.Start(7, s), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(7);
  ::unsetenv("LOCALPROC_TEST_PASSTHROUGH");
  ::unsetenv("LOCALPROC_TEST_OVERRIDDEN");
  ASSERT_TRUE(r && r->outputs);
  std::string work = in.WorkDir(7);
  EXPECT_EQ(*r->outputs, "from-engine|step-value|bar baz|" + work + "/.crucible-output|" + work +
                             "/crucible-upstream.json|" + *s.upstream);
}

TEST(LocalProcTest, EngineEnvironmentChangesReachLaterSteps) {
  Instance in;
  Step s{{"/bin/sh", "-c", "printf '%s|%s' \"$LOCALPROC_TEST_LATE\" \"$LOCALPROC_TEST_DUP\" > \"$CRUCIBLE_OUTPUT\""}};
  s.env = {{"LOCALPROC_TEST_DUP", "first"}, {"LOCALPROC_TEST_DUP", "second"}};
  ASSERT_EQ(in.Start(1, s), CRUCIBLE_STATUS_OK);
  auto r1 = in.Wait(1);
  ::setenv("LOCALPROC_TEST_LATE", "set-later", 1);
  ASSERT_EQ(in.Start(2, s), CRUCIBLE_STATUS_OK);
  auto r2 = in.Wait(2);
  ::setenv("LOCALPROC_TEST_LATE", "changed", 1);
  ASSERT_EQ(in.Start(3, s), CRUCIBLE_STATUS_OK);
  auto r3 = in.Wait(3);
  ::unsetenv("LOCALPROC_TEST_LATE");
  ASSERT_EQ(in.Start(4, s), CRUCIBLE_STATUS_OK);
  auto r4 = in.Wait(4);
  ASSERT_TRUE(r1 && r2 && r3 && r4);
  EXPECT_EQ(r1->outputs, std::optional<std::string>("|second"));
  EXPECT_EQ(r2->outputs, std::optional<std::string>("set-later|second"));
  EXPECT_EQ(r3->outputs, std::optional<std::string>("changed|second"));
  EXPECT_EQ(r4->outputs, std::optional<std::string>("|second"));
}

TEST(LocalProcTest, InputsAreCopiedToRelativePathsKeepingMode) {
  Instance in;
  std::string src = in.dir() + "/tool.sh";
  {
    std::ofstream f(src);
    f << "#!/bin/sh\necho ran=yes > \"$CRUCIBLE_OUTPUT\"\n";
  }
  ::chmod(src.c_str(), 0755);
  std::string data = in.dir() + "/data.txt";
  std::ofstream(data) << "payload";
  Step s{{"/bin/sh", "-c", "./bin/deep/tool.sh && cat in/data.txt >> \"$CRUCIBLE_OUTPUT\""}};
  s.inputs = {{src, "bin/deep/tool.sh"}, {data, "in/data.txt"}};
  ASSERT_EQ(in.Start(1, s), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_SUCCEEDED) << ReadFile(in.LogPath(1));
  EXPECT_EQ(r->outputs, std::optional<std::string>("ran=yes\npayload"));
}

TEST(LocalProcTest, InputEscapingTheWorkDirIsRefused) {
  Instance in;
  std::string data = in.dir() + "/data.txt";
  std::ofstream(data) << "payload";
  Step s{{"true"}};
  s.inputs = {{data, "../escape.txt"}};
  std::string err;
  EXPECT_EQ(in.Start(1, s, nullptr, &err), CRUCIBLE_STATUS_ERROR);
  EXPECT_NE(err.find("relative"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(in.WorkDir(1)));
}

TEST(LocalProcTest, WorkDirIsRemovedAfterTheAttemptUnlessKeepWork) {
  Instance in;
  ASSERT_EQ(in.Start(1, {{"/bin/sh", "-c", "echo hi > file"}}), CRUCIBLE_STATUS_OK);
  Step keep{{"/bin/sh", "-c", "echo hi > file"}};
  keep.keep_work = true;
  ASSERT_EQ(in.Start(2, keep), CRUCIBLE_STATUS_OK);
  ASSERT_TRUE(in.Wait(1) && in.Wait(2));
  // Removal follows the result, off the engine's path; destroy waits for it.
  in.Destroy();
  EXPECT_FALSE(fs::exists(in.WorkDir(1)));
  EXPECT_EQ(ReadFile(in.WorkDir(2) + "/file"), "hi\n");
  // Nothing else is left behind (no spare directories).
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(in.dir())) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"work-2"});
}

/// The process's umask, from /proc/self/status.
mode_t CurrentUmask() {
  std::istringstream in(ReadFile("/proc/self/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Umask:", 0) == 0) return static_cast<mode_t>(std::strtol(line.c_str() + 6, nullptr, 8));
  }
  return 022;
}

TEST(LocalProcTest, EveryAttemptGetsAFreshEmptyWorkDirEvenWhenDirectoriesAreReused) {
  Instance in;
  char fresh_mode[8];
  std::snprintf(fresh_mode, sizeof fresh_mode, "%o", 0777 & ~CurrentUmask());
  // One after the other, so finished directories are reused: each step sees only its own
  // upstream file (or nothing), the fresh mode, and leaves litter and a changed mode behind.
  for (uint64_t key = 1; key <= 12; ++key) {
    Step s{{"/bin/sh", "-c",
            "seen=$(ls -A; stat -c %a .; cat crucible-upstream.json 2>/dev/null); "
            "echo litter > junk; ln -s junk link; printf '%s' \"$seen\" > \"$CRUCIBLE_OUTPUT\"; "
            "if [ $(( $1 % 3 )) = 0 ]; then chmod 700 .; fi; if [ $(( $1 % 4 )) = 0 ]; then mkdir sub; fi",
            "sh", std::to_string(key)}};
    bool with_upstream = key % 5 != 0;
    std::string doc = "{\"key\":" + std::to_string(key) + "}";
    if (with_upstream) s.upstream = doc;
    s.output_cap = 1000;
    ASSERT_EQ(in.Start(key, s), CRUCIBLE_STATUS_OK);
    auto r = in.Wait(key);
    ASSERT_TRUE(r && r->outputs) << key;
    EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_SUCCEEDED) << key;
    std::string expected = with_upstream ? "crucible-upstream.json\n" + std::string(fresh_mode) + "\n" + doc
                                         : std::string(fresh_mode);
    EXPECT_EQ(*r->outputs, expected) << "attempt " << key;
  }
  in.Destroy();
  for (uint64_t key = 1; key <= 12; ++key) EXPECT_FALSE(fs::exists(in.WorkDir(key))) << key;
}

TEST(LocalProcTest, StepsRunInACgroupSlotAfterItsTreeWasKilled) {
  // One slot, used in turn: the first step leaves a process behind, which is
  // killed through cgroup.kill; the slot must still run the next steps (some
  // kernels kill a child cloned into a cgroup that cgroup.kill was used on).
  Instance in(OptionList().Int("cgroup_slots", CRUCIBLE_OPTION_INT, 1));
  ASSERT_EQ(in.Start(1, {{"/bin/sh", "-c", "sleep 30 & echo $! > \"$CRUCIBLE_OUTPUT\""}}), CRUCIBLE_STATUS_OK);
  auto first = in.Wait(1);
  ASSERT_TRUE(first && first->outputs);
  EXPECT_EQ(first->outcome, CRUCIBLE_OUTCOME_SUCCEEDED);
  EXPECT_TRUE(WaitGone(static_cast<pid_t>(std::atoi(first->outputs->c_str()))));
  for (uint64_t key = 2; key <= 4; ++key) {
    ASSERT_EQ(in.Start(key, {{"true"}}), CRUCIBLE_STATUS_OK);
    auto r = in.Wait(key);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_SUCCEEDED) << key << ": " << r->message;
  }
}

TEST(LocalProcTest, HandleNamesTheRunsOneSupervisorWhichOwnsTheSteps) {
  Instance in;
  std::regex form(R"(supervisor=(\d+) start=(\d+))");
  std::string first;
  for (uint64_t key = 1; key <= 20; ++key) {
    std::string handle;
    ASSERT_EQ(in.Start(key, {{"sleep", "30"}}, &handle), CRUCIBLE_STATUS_OK);
    if (first.empty()) first = handle;
    EXPECT_EQ(handle, first) << "one supervisor per run, not per step";
    std::smatch m;
    ASSERT_TRUE(std::regex_match(handle, m, form)) << handle;
    std::string stat = ReadFile("/proc/" + m[1].str() + "/stat");
    size_t p = stat.rfind(')');
    ASSERT_NE(p, std::string::npos);
    std::istringstream fields(stat.substr(p + 2));
    std::string field;
    for (int i = 3; i <= 22 && fields >> field; ++i) {
    }
    EXPECT_EQ(m[2].str(), field) << handle;
    EXPECT_NE(m[1].str(), std::to_string(::getpid())) << "the steps are not the engine's children";
    Api()->cancel(in.backend(), key, 0);
    ASSERT_TRUE(in.Wait(key));
  }
}

TEST(LocalProcTest, SupervisorKilledLosesItsAttemptsAndTheNextStartsANewOne) {
  Instance in;
  std::string handle;
  ASSERT_EQ(in.Start(1, {{"sleep", "30"}}, &handle), CRUCIBLE_STATUS_OK);
  int pid = 0;
  ASSERT_EQ(std::sscanf(handle.c_str(), "supervisor=%d", &pid), 1) << handle;
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  auto lost = in.Wait(1);
  ASSERT_TRUE(lost);
  EXPECT_EQ(lost->outcome, CRUCIBLE_OUTCOME_FAILED);
  EXPECT_EQ(lost->reason, CRUCIBLE_REASON_LOST);
  std::string again;
  ASSERT_EQ(in.Start(2, {{"true"}}, &again), CRUCIBLE_STATUS_OK);
  EXPECT_NE(again, handle) << "a new supervisor";
  auto ok = in.Wait(2);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->outcome, CRUCIBLE_OUTCOME_SUCCEEDED);
}

/// What a step's supervisor, SIGKILLed under it, left: the step's setsid
/// grandchild (still running) and the cgroups the supervisor named.
struct KilledSupervisor {
  pid_t daemon = -1;
  std::string cgroups_file;
  std::vector<std::string> parents;
};

/// Starts attempt 1 of `in` with a step that daemonises a sleeper, then SIGKILLs its supervisor.
void KillSupervisorUnderADaemonisingStep(Instance& in, KilledSupervisor* out) {
  fs::create_directories(in.dir() + "/logs/r1");  // as the engine makes it, for the supervisor's journal
  std::string pid_file = in.dir() + "/daemon.pid";
  std::string handle;
  ASSERT_EQ(in.Start(1, {{"/bin/sh", "-c", "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > " + pid_file +
                                               "; exec sleep 300"}},
                     &handle),
            CRUCIBLE_STATUS_OK);
  out->daemon = WaitPidFile(pid_file);
  ASSERT_GT(out->daemon, 0);
  int supervisor = 0;
  unsigned long long start = 0;
  ASSERT_EQ(std::sscanf(handle.c_str(), "supervisor=%d start=%llu", &supervisor, &start), 2) << handle;
  out->cgroups_file = in.dir() + "/logs/r1/.localproc-supervisor-" + std::to_string(supervisor) + "-" +
                      std::to_string(start) + ".cgroups";
  std::istringstream listed(ReadFile(out->cgroups_file));
  for (std::string line; std::getline(listed, line);) out->parents.push_back(line);
  ASSERT_FALSE(out->parents.empty()) << "the supervisor names its cgroups in " << out->cgroups_file;
  ASSERT_EQ(::kill(supervisor, SIGKILL), 0);
  auto lost = in.Wait(1);
  ASSERT_TRUE(lost);
  EXPECT_EQ(lost->reason, CRUCIBLE_REASON_LOST);
  EXPECT_FALSE(ProcessGone(out->daemon)) << "the supervisor's death alone does not reach a setsid grandchild";
}

void ExpectReaped(const KilledSupervisor& k) {
  EXPECT_TRUE(WaitGone(k.daemon)) << "pid " << k.daemon << " outlived its supervisor";
  EXPECT_FALSE(fs::exists(k.cgroups_file));
  for (const auto& p : k.parents) EXPECT_FALSE(fs::exists(p)) << p;
}

TEST(LocalProcTest, WhatAKilledSupervisorsStepDaemonisedIsKilledByTheNextSupervisor) {
  if (Describe().rfind("cgroup ", 0) != 0) GTEST_SKIP() << "no cgroups here: " << Describe();
  Instance in;
  KilledSupervisor killed;
  ASSERT_NO_FATAL_FAILURE(KillSupervisorUnderADaemonisingStep(in, &killed));
  // The next attempt starts a new supervisor, which kills what the old one's slots still hold.
  ASSERT_EQ(in.Start(2, {{"true"}}), CRUCIBLE_STATUS_OK);
  ASSERT_TRUE(in.Wait(2));
  ExpectReaped(killed);
}

TEST(LocalProcTest, WhatAKilledSupervisorsStepDaemonisedIsKilledWhenTheRunEnds) {
  if (Describe().rfind("cgroup ", 0) != 0) GTEST_SKIP() << "no cgroups here: " << Describe();
  Instance in;
  KilledSupervisor killed;
  ASSERT_NO_FATAL_FAILURE(KillSupervisorUnderADaemonisingStep(in, &killed));
  in.Destroy();  // no attempt after it: the engine's end reaps
  ExpectReaped(killed);
}

TEST(LocalProcTest, SilentStepHasNoLogFile) {
  Instance in;
  ASSERT_EQ(in.Start(1, {{"true"}}), CRUCIBLE_STATUS_OK);
  ASSERT_EQ(in.Start(2, {{"/bin/sh", "-c", "echo said"}}), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1);
  auto r2 = in.Wait(2);
  ASSERT_TRUE(r && r2);
  EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_SUCCEEDED);
  EXPECT_EQ(r->kept, 0u);
  EXPECT_FALSE(fs::exists(in.LogPath(1)));
  EXPECT_EQ(ReadFile(in.LogPath(2)), "said\n");
}

TEST(LocalProcTest, OutputsFileIsOnlyThereWhenTheStepWritesIt) {
  Instance in;
  Step s{{"/bin/sh", "-c", "test -e \"$CRUCIBLE_OUTPUT\" && exit 3; echo a=1 >> \"$CRUCIBLE_OUTPUT\""}};
  ASSERT_EQ(in.Start(1, s), CRUCIBLE_STATUS_OK);
  ASSERT_EQ(in.Start(2, {{"true"}}), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1);
  auto r2 = in.Wait(2);
  ASSERT_TRUE(r && r2);
  EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_SUCCEEDED);
  EXPECT_EQ(r->outputs, std::optional<std::string>("a=1\n"));
  EXPECT_EQ(r2->outputs, std::nullopt);
}

TEST(LocalProcTest, UnwritableLogDirectoryFailsTheStart) {
  Instance in;
  std::string error;
  Step s{{"true"}};
  // A log path under a directory that does not exist.
  std::string bad = in.dir() + "/missing-dir";
  ASSERT_FALSE(fs::exists(bad));
  EXPECT_EQ(in.StartWithLog(1, s, bad + "/log", &error), CRUCIBLE_STATUS_ERROR);
  EXPECT_NE(error.find("cannot open log"), std::string::npos) << error;
}

TEST(LocalProcTest, CommandFoundInALaterPathEntryRunsAndAShadowingOneDoesNot) {
  Instance in;
  std::string a = in.dir() + "/bin-a", b = in.dir() + "/bin-b";
  fs::create_directories(a);
  fs::create_directories(b);
  std::ofstream(b + "/localproc-tool") << "#!/bin/sh\necho from=b > \"$CRUCIBLE_OUTPUT\"\n";
  ::chmod((b + "/localproc-tool").c_str(), 0755);
  // Not executable: skipped, as execvp skips it.
  std::ofstream(a + "/localproc-tool") << "#!/bin/sh\necho from=a > \"$CRUCIBLE_OUTPUT\"\n";
  ::chmod((a + "/localproc-tool").c_str(), 0644);
  Step s{{"localproc-tool"}};
  s.env = {{"PATH", a + ":" + b + ":/usr/bin:/bin"}};
  for (uint64_t key = 1; key <= 2; ++key) {
    ASSERT_EQ(in.Start(key, s), CRUCIBLE_STATUS_OK);
    auto r = in.Wait(key);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->outputs, std::optional<std::string>("from=b\n")) << r->message;
  }
  // The cached file disappears: the search runs again in the child.
  fs::remove(b + "/localproc-tool");
  ::chmod((a + "/localproc-tool").c_str(), 0755);
  ASSERT_EQ(in.Start(3, s), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(3);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outputs, std::optional<std::string>("from=a\n")) << r->message;
}

TEST(LocalProcTest, HostileArgvArrivesIntact) {
  Instance in;
  std::string hostile = "a b  'single' \"double\" $(touch /tmp/localproc-pwned) `id` ; | & * ?\nline2\t\\ ünïcødé €";
  Step s{{"/bin/sh", "-c", "printf %s \"$1\" > \"$CRUCIBLE_OUTPUT\"", "sh", hostile}};
  ASSERT_EQ(in.Start(1, s), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outputs, std::optional<std::string>(hostile));
  EXPECT_FALSE(fs::exists("/tmp/localproc-pwned"));
}

TEST(LocalProcTest, MissingExecutableFailsWith127AndSaysWhy) {
  Instance in;
  ASSERT_EQ(in.Start(1, {{"/nonexistent/program"}}), CRUCIBLE_STATUS_OK);
  ASSERT_EQ(in.Start(2, {{"no-such-program-localproc"}}), CRUCIBLE_STATUS_OK);
  for (uint64_t key : {1, 2}) {
    auto r = in.Wait(key);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_FAILED);
    EXPECT_EQ(r->reason, CRUCIBLE_REASON_EXITED);
    EXPECT_EQ(r->exit_code, 127);
    EXPECT_NE(r->message.find("No such file"), std::string::npos) << r->message;
    EXPECT_NE(ReadFile(in.LogPath(key)).find("No such file"), std::string::npos);
  }
}

TEST(LocalProcTest, StdoutAndStderrAreBothCaptured) {
  Instance in;
  ASSERT_EQ(in.Start(1, {{"/bin/sh", "-c", "echo to-out; echo to-err >&2"}}), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1);
  ASSERT_TRUE(r);
  EXPECT_EQ(ReadFile(in.LogPath(1)), "to-out\nto-err\n");
  EXPECT_EQ(r->kept, 14u);
  EXPECT_EQ(r->dropped, 0u);
}

/// The marker the log holds between head and tail when output was dropped.
std::string DropMarker(uint64_t dropped) {
  return "\n[crucible-engine: " + std::to_string(dropped) + " bytes dropped]\n";
}

/// What a log with the given cap holds for a step that wrote `all`.
std::string CappedLog(const std::string& all, uint64_t cap) {
  if (all.size() <= cap) return all;
  uint64_t head = cap / 2, tail = cap - head;
  return all.substr(0, head) + DropMarker(all.size() - cap) + all.substr(all.size() - tail);
}

/// A field of /proc/self/status in KiB (VmRSS, VmHWM); -1 when absent.
long ProcStatusKib(const std::string& field, const std::string& pid = "self") {
  std::ifstream in("/proc/" + pid + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
  }
  return -1;
}

TEST(LocalProcTest, LogCapKeepsTheHeadAndTheTailAndCountsTheRest) {
  Instance in;
  Step s{{"/bin/sh", "-c", "seq 1 400000"}};
  s.log_cap = 1048576;
  ASSERT_EQ(in.Start(1, s), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_SUCCEEDED);
  std::string all;
  for (int i = 1; i <= 400000; ++i) all += std::to_string(i) + "\n";
  ASSERT_GT(all.size(), 2u * s.log_cap);
  EXPECT_EQ(r->kept, 1048576u);
  EXPECT_EQ(r->dropped, all.size() - 1048576u);
  std::string log = ReadFile(in.LogPath(1));
  EXPECT_EQ(log.size(), 1048576u + DropMarker(r->dropped).size());
  EXPECT_TRUE(log == CappedLog(all, s.log_cap)) << "log differs from head + marker + tail";

  // A cap smaller than the marker: one byte of head, two of tail.
  Step tiny{{"/bin/sh", "-c", "printf abcdefgh"}};
  tiny.log_cap = 3;
  ASSERT_EQ(in.Start(2, tiny), CRUCIBLE_STATUS_OK);
  r = in.Wait(2);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->kept, 3u);
  EXPECT_EQ(r->dropped, 5u);
  EXPECT_EQ(ReadFile(in.LogPath(2)), "a" + DropMarker(5) + "gh");
}

TEST(LocalProcTest, OutputExactlyAtTheCapIsKeptWhole) {
  Instance in;
  Step s{{"/bin/sh", "-c", "seq 1 1000; seq 1 1000 >&2"}};
  std::string half;
  for (int i = 1; i <= 1000; ++i) half += std::to_string(i) + "\n";
  s.log_cap = 2 * half.size();
  ASSERT_EQ(in.Start(1, s), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->kept, 2 * half.size());
  EXPECT_EQ(r->dropped, 0u);
  EXPECT_EQ(ReadFile(in.LogPath(1)), half + half);
}

TEST(LocalProcTest, FloodOnStdoutAndStderrAtOnceStaysBounded) {
  Instance in;
  // The supervisor drains the pipes: start it with a no-op, then measure it and us.
  std::string handle;
  ASSERT_EQ(in.Start(1, {{"true"}}, &handle), CRUCIBLE_STATUS_OK);
  ASSERT_TRUE(in.Wait(1));
  int sup = 0;
  ASSERT_EQ(std::sscanf(handle.c_str(), "supervisor=%d", &sup), 1) << handle;
  const std::string sup_pid = std::to_string(sup);
  long rss_before = ProcStatusKib("VmRSS");
  long sup_before = ProcStatusKib("VmRSS", sup_pid);
  Step s{{"/bin/sh", "-c",
          "printf THE-START; head -c 100M /dev/zero & head -c 100M /dev/urandom >&2; wait; printf THE-END"}};
  s.log_cap = 1048576;
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(in.Start(2, s), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(2, 60000);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  long rss_after = ProcStatusKib("VmRSS");
  long sup_after = ProcStatusKib("VmRSS", sup_pid);
  long sup_hwm = ProcStatusKib("VmHWM", sup_pid);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_SUCCEEDED);
  const uint64_t total = 200ull * 1048576 + 9 + 7;
  EXPECT_EQ(r->kept, 1048576u);
  EXPECT_EQ(r->dropped, total - r->kept);
  std::string log = ReadFile(in.LogPath(2));
  std::string marker = DropMarker(r->dropped);
  EXPECT_EQ(log.size(), 1048576u + marker.size());
  EXPECT_EQ(log.rfind("THE-START", 0), 0u);
  EXPECT_EQ(log.substr(524288, marker.size()), marker);
  ASSERT_GE(log.size(), 7u);
  EXPECT_EQ(log.substr(log.size() - 7), "THE-END");
  ASSERT_GT(rss_before, 0);
  ASSERT_GT(sup_before, 0);
  EXPECT_LT(rss_after - rss_before, 4096) << "engine VmRSS grew from " << rss_before << " to " << rss_after << " KiB";
  EXPECT_LT(sup_after - sup_before, 4096) << "supervisor VmRSS grew from " << sup_before << " to " << sup_after << " KiB";
  EXPECT_LT(sup_hwm - sup_before, 4096) << "supervisor peak " << sup_hwm << " KiB";
  std::printf("flood of %llu bytes: %lld ms; engine VmRSS %ld -> %ld KiB; supervisor VmRSS %ld -> %ld KiB, peak %ld KiB\n",
              static_cast<unsigned long long>(total), static_cast<long long>(ms), rss_before, rss_after, sup_before,
              sup_after, sup_hwm);
}

TEST(LocalProcTest, OneGiantLineWithoutNewlineKeepsHeadAndTail) {
  Instance in;
  Step s{{"/bin/sh", "-c", "head -c 5242880 /dev/zero | tr '\\0' x; printf END"}};
  s.log_cap = 1048576;
  ASSERT_EQ(in.Start(1, s), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_SUCCEEDED);
  std::string all = std::string(5242880, 'x') + "END";
  EXPECT_EQ(r->kept, 1048576u);
  EXPECT_EQ(r->dropped, all.size() - 1048576u);
  EXPECT_TRUE(ReadFile(in.LogPath(1)) == CappedLog(all, s.log_cap)) << "log differs from head + marker + tail";
}

TEST(LocalProcTest, NulBytesAndTerminalEscapesPassUnchanged) {
  Instance in;
  static constexpr char kRaw[] = "a\0b\033[31mred\033[0m\r\n\a\033]0;title\007";
  const std::string raw(kRaw, sizeof kRaw - 1);
  ASSERT_EQ(in.Start(1, {{"/bin/sh", "-c", "printf 'a\\000b\\033[31mred\\033[0m\\r\\n\\007\\033]0;title\\007'"}}),
            CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1);
  ASSERT_TRUE(r);
  EXPECT_EQ(ReadFile(in.LogPath(1)), raw);
  EXPECT_EQ(r->kept, raw.size());
  EXPECT_EQ(r->dropped, 0u);
  // The same bytes in the tail of a flood come out unchanged too.
  Step s{{"/bin/sh", "-c", "head -c 300000 /dev/zero; printf 'a\\000b\\033[31mred\\033[0m\\r\\n\\007\\033]0;title\\007'"}};
  s.log_cap = 4096;
  ASSERT_EQ(in.Start(2, s), CRUCIBLE_STATUS_OK);
  r = in.Wait(2);
  ASSERT_TRUE(r);
  std::string log = ReadFile(in.LogPath(2));
  ASSERT_GE(log.size(), raw.size());
  EXPECT_EQ(log.substr(log.size() - raw.size()), raw);
  EXPECT_EQ(log, CappedLog(std::string(300000, '\0') + raw, s.log_cap));
}

/// A step whose shell starts a `setsid sleep` grandchild (pid written to $1) and waits.
Step TreeWithDaemon(const std::string& pid_file) {
  return Step{{"/bin/sh", "-c", "setsid sleep 100 & echo $! > \"$1.tmp\"; mv \"$1.tmp\" \"$1\"; sleep 100", "sh",
               pid_file}};
}

TEST(LocalProcTest, TimeoutKillsTheWholeTreeIncludingSetsidGrandchild) {
  if (Describe().rfind("cgroup ", 0) != 0) GTEST_SKIP() << "no writable cgroup: " << Describe();
  Instance in(OptionList().Int("kill_grace", CRUCIBLE_OPTION_DURATION, 1000));
  std::string pid_file = in.dir() + "/grandchild.pid";
  Step s = TreeWithDaemon(pid_file);
  s.timeout_ms = 300;
  ASSERT_EQ(in.Start(1, s), CRUCIBLE_STATUS_OK);
  pid_t grandchild = WaitPidFile(pid_file);
  ASSERT_GT(grandchild, 0);
  auto r = in.Wait(1);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_FAILED);
  EXPECT_EQ(r->reason, CRUCIBLE_REASON_TIMEOUT);
  EXPECT_TRUE(WaitGone(grandchild)) << "setsid grandchild " << grandchild << " survived";
  EXPECT_LT(r->ended - r->started, 5000);
}

TEST(LocalProcTest, CancelReportsCancelledAndKillsTheTree) {
  if (Describe().rfind("cgroup ", 0) != 0) GTEST_SKIP() << "no writable cgroup: " << Describe();
  Instance in;
  std::string pid_file = in.dir() + "/grandchild.pid";
  ASSERT_EQ(in.Start(1, TreeWithDaemon(pid_file)), CRUCIBLE_STATUS_OK);
  pid_t grandchild = WaitPidFile(pid_file);
  ASSERT_GT(grandchild, 0);
  ASSERT_EQ(Api()->cancel(in.backend(), 1, 1000), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_CANCELLED);
  EXPECT_EQ(r->reason, CRUCIBLE_REASON_CANCELLED);
  EXPECT_TRUE(WaitGone(grandchild));
}

TEST(LocalProcTest, CancelEscalatesToSigkillAfterTheGrace) {
  Instance in;
  std::string pid_file = in.dir() + "/ready";
  Step s{{"/bin/sh", "-c", "trap '' TERM; echo $$ > \"$1\"; while :; do sleep 0.05; done", "sh", pid_file}};
  ASSERT_EQ(in.Start(1, s), CRUCIBLE_STATUS_OK);
  ASSERT_GT(WaitPidFile(pid_file), 0);
  ASSERT_EQ(Api()->cancel(in.backend(), 1, 200), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1, 5000);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_CANCELLED);
  EXPECT_EQ(r->signal, SIGKILL);
}

TEST(LocalProcTest, WithoutCgroupsTimeoutKillsTheProcessGroup) {
  Instance in(OptionList()
                  .Int("use_cgroups", CRUCIBLE_OPTION_BOOL, 0)
                  .Int("kill_grace", CRUCIBLE_OPTION_DURATION, 1000));
  ASSERT_NE(in.backend(), nullptr) << in.create_error();
  std::string pid_file = in.dir() + "/child.pid";
  Step s{{"/bin/sh", "-c", "sleep 100 & echo $! > \"$1.tmp\"; mv \"$1.tmp\" \"$1\"; sleep 100", "sh", pid_file}};
  s.timeout_ms = 300;
  ASSERT_EQ(in.Start(1, s), CRUCIBLE_STATUS_OK);
  pid_t child = WaitPidFile(pid_file);
  ASSERT_GT(child, 0);
  auto r = in.Wait(1);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->reason, CRUCIBLE_REASON_TIMEOUT);
  EXPECT_TRUE(WaitGone(child));
}

TEST(LocalProcTest, MemoryOverTheLimitIsOomKilled) {
  if (!CgroupMemoryEnforced()) GTEST_SKIP() << "memory cgroup not writable here: " << Describe();
  Instance in;
  Step s{{"python3", "-c", "b = bytearray(300 * 1024 * 1024)"}};
  s.memory_bytes = 64 << 20;
  ASSERT_EQ(in.Start(1, s), CRUCIBLE_STATUS_OK);
  ASSERT_EQ(in.Start(2, {{"python3", "-c", "b = bytearray(100 * 1024 * 1024)"}}), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1);
  auto unlimited = in.Wait(2);
  ASSERT_TRUE(r && unlimited);
  EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_FAILED);
  EXPECT_EQ(r->reason, CRUCIBLE_REASON_OOM_KILLED) << r->message << " signal=" << r->signal;
  EXPECT_EQ(unlimited->outcome, CRUCIBLE_OUTCOME_SUCCEEDED);
}

TEST(LocalProcTest, CpuLimitThrottlesTheStep) {
  if (Describe().find("cpu enforced") == std::string::npos) GTEST_SKIP() << "cpu not enforced here: " << Describe();
  Instance in;
  Step s{{"python3", "-c",
          "import os, time\nt = time.time()\nwhile time.time() - t < 0.4: pass\n"
          "open(os.environ['CRUCIBLE_OUTPUT'], 'w').write(str(time.process_time()))"}};
  s.cpu_millicores = 200;
  ASSERT_EQ(in.Start(1, s), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1);
  ASSERT_TRUE(r && r->outputs);
  // Unthrottled the loop burns about 0.4 s of cpu; at 200 millicores about 0.08 s (plus start-up).
  EXPECT_LT(std::stod(*r->outputs), 0.25) << *r->outputs;
}

TEST(LocalProcTest, WithoutCgroupsMemoryLimitIsAnRlimit) {
  Instance in(OptionList().Int("use_cgroups", CRUCIBLE_OPTION_BOOL, 0));
  Step s{{"python3", "-c", "b = bytearray(300 * 1024 * 1024)"}};
  s.memory_bytes = 64 << 20;
  ASSERT_EQ(in.Start(1, s), CRUCIBLE_STATUS_OK);
  auto r = in.Wait(1);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_FAILED);
  EXPECT_NE(ReadFile(in.LogPath(1)).find("MemoryError"), std::string::npos) << ReadFile(in.LogPath(1));
}

TEST(LocalProcTest, ThousandConcurrentStepsUseOneWaiterThread) {
  Instance in(OptionList(), fs::is_directory("/dev/shm") ? "/dev/shm" : "/tmp");
  const int kSteps = 1000;
  int threads_before = ThreadCount();
  int max_threads = 0;
  for (int i = 1; i <= kSteps; ++i) {
    ASSERT_EQ(in.Start(static_cast<uint64_t>(i), {{"true"}}), CRUCIBLE_STATUS_OK) << i;
    if (i % 100 == 0) max_threads = std::max(max_threads, ThreadCount());
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (in.result_count() < static_cast<size_t>(kSteps) && std::chrono::steady_clock::now() < deadline) {
    in.PollOnce(100);
    max_threads = std::max(max_threads, ThreadCount());
  }
  ASSERT_EQ(in.result_count(), static_cast<size_t>(kSteps));
  for (int i = 1; i <= kSteps; ++i) {
    auto r = in.Wait(static_cast<uint64_t>(i), 0);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->outcome, CRUCIBLE_OUTCOME_SUCCEEDED);
  }
  EXPECT_LT(max_threads, 10);
  EXPECT_LE(max_threads, threads_before + 1);
}

TEST(LocalProcTest, NoOpThroughputWithTwoInFlight) {
  // Work dirs and logs on tmpfs: the plugin's own cost, not the disk's (a step creates and removes a
  // directory and two files, which costs milliseconds on a busy disk).
  std::string root = fs::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
  for (bool cgroups : {true, false}) {
    Instance in(OptionList().Int("use_cgroups", CRUCIBLE_OPTION_BOOL, cgroups ? 1 : 0), root);
    const int kSteps = 300;
    auto t0 = std::chrono::steady_clock::now();
    int started = 0, done = 0;
    double start_secs = 0;
    while (done < kSteps) {
      while (started < kSteps && started - done < 2) {
        ++started;
        auto s0 = std::chrono::steady_clock::now();
        ASSERT_EQ(in.Start(static_cast<uint64_t>(started), {{"true"}}), CRUCIBLE_STATUS_OK);
        start_secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
      }
      done += in.PollOnce(1000);
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("localproc no-op steps, 2 in flight, cgroups=%s, files in %s: %.0f per second (%.0f us each, "
                "start() %.0f us)\n",
                cgroups ? "on" : "off", root.c_str(), kSteps / secs, secs / kSteps * 1e6, start_secs / kSteps * 1e6);
  }
}

TEST(LocalProcTest, DescribeAndCheckStepReportWhatIsEnforced) {
  std::string d = Describe();
  EXPECT_FALSE(d.empty());
  std::printf("describe: %s\n", d.c_str());
  struct Found {
    std::vector<std::pair<crucible_severity, std::string>> items;
  } found;
  crucible_diag_sink sink{&found, [](void* ctx, crucible_severity sev, const char* field, const char*) {
                            static_cast<Found*>(ctx)->items.emplace_back(sev, field);
                          }};
  OptionList no_cgroups;
  no_cgroups.Int("use_cgroups", CRUCIBLE_OPTION_BOOL, 0);
  crucible_step_check c{};
  c.struct_size = sizeof c;
  c.step_id = "s";
  c.image = "python:3.11";
  c.cpu_millicores = 500;
  c.memory_bytes = 64 << 20;
  c.backend_options = no_cgroups.data();
  c.backend_options_len = no_cgroups.size();
  ASSERT_EQ(Api()->check_step(&c, &sink), CRUCIBLE_STATUS_OK);
  ASSERT_EQ(found.items.size(), 1u);
  EXPECT_EQ(found.items[0].first, CRUCIBLE_SEVERITY_WARNING);
  EXPECT_EQ(found.items[0].second, "resources.cpu");
  found.items.clear();
  c.cpu_millicores = 0;
  ASSERT_EQ(Api()->check_step(&c, &sink), CRUCIBLE_STATUS_OK);
  EXPECT_TRUE(found.items.empty());
}

TEST(LocalProcTest, DestroyKillsWhatIsStillRunning) {
  std::string pid_file;
  pid_t child;
  {
    Instance in;
    pid_file = in.dir() + "/p";
    ASSERT_EQ(in.Start(1, {{"/bin/sh", "-c", "echo $$ > \"$1.tmp\"; mv \"$1.tmp\" \"$1\"; sleep 100", "sh", pid_file}}),
              CRUCIBLE_STATUS_OK);
    child = WaitPidFile(pid_file);
    ASSERT_GT(child, 0);
  }
  EXPECT_TRUE(WaitGone(child));
}

}  // namespace

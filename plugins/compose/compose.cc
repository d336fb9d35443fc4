// The compose backend: steps run in a warm, hardened pool of executor
// containers that Docker Compose brings up, one exec per attempt.
//
// Design:
//   - create() renders the pool's compose file (the shipped one, or the
//     user's) into STATE_DIR/compose/PROJECT.yaml, with an override file
//     (PROJECT.stamp.yaml) that labels each executor with a digest of that
//     configuration, and runs `compose up` only when fewer executors than
//     configured run with this project's labels and this digest: a warm pool
//     made from another configuration (another image, network or limits) is
//     recreated by that `up`, never reused. Compose is not used again until a lost
//     executor has to be replaced or the pool is taken down.
//   - Everything per step is the Engine API over the unix socket (libcurl):
//     Start() leases an idle executor and creates the exec on the engine's
//     thread (the exec id is part of the handle); the executor's worker starts
//     it on a hijacked connection, streams a tar into its stdin and reads the
//     multiplexed output until the exec ends. One exec per attempt: the
//     supervisor (supervisor.sh) inside the executor creates the attempt's
//     directory, unpacks the tar (inputs, upstream file, launch script), runs
//     the argv in its own session with the timeout, reports the status and
//     CRUCIBLE_OUTPUT on its stderr, kills whatever the step left and empties
//     the work root, /tmp and /dev/shm ("scrub"), and says whether that held.
//   - Threads: one worker per executor (a fixed pool, the size of the Compose
//     pool), each blocked in poll(2) on its exec's socket and an eventfd that
//     brings cancel and stop requests. Concurrency is the pool size: capacity()
//     is the number of idle executors.
//   - Steps run as step_user, not as the user of the executor's main process,
//     so the scrub's kill(-1) reaches every process of the step (setsid ones
//     included) and cannot stop the executor.
//   - Failures: the supervisor reports timeout and cancel; an OOM kill is seen
//     in the executor cgroup's oom_kill counter, read before and after the
//     step; an exec that ends without a status in a container that no longer
//     runs is LOST (the engine retries it without charging retries), and the
//     worker brings the pool back to size (compose up) and takes the new
//     executor. A scrub that did not hold, or isolation = "recycle", restarts
//     the executor (its tmpfs mounts start empty) before its next lease.
//
// Thread-safety: Start/Poll/Cancel/Capacity come from the engine's thread; a
// worker owns its executor's running attempt; mu_ guards the rest.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "attempt_io.h"
#include "compose_cli.h"
#include "crucible/backend_sdk.hpp"
#include "docker_api.h"
#include "pool_config.h"

namespace crucible::plugins::compose {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kOutputFile = ".crucible-output";
constexpr const char* kUpstreamFile = "crucible-upstream.json";
/// What a report read back may carry of an output (the engine caps it lower).
constexpr uint64_t kMaxOutputBytes = 1 << 20;

int64_t NowEpochMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

json ParseJson(const std::string& text) { return json::parse(text, nullptr, false); }

/// One attempt handed to an executor's worker.
struct Attempt {
  uint64_t key = 0;
  std::string name;  ///< its working directory under the work root (the same for every attempt of an executor)
  std::string exec_id;
  std::string tar;
  std::string log_path;
  uint64_t log_cap = 0;
  int64_t timeout_ms = 0;
  std::atomic<bool> cancel{false};
  /// Started by an earlier engine: followed through its report, not its stream.
  bool adopted = false;
  std::string label;
};

/// One executor container and its worker.
struct Executor {
  std::string container;
  std::string service;
  bool busy = false;     ///< leased (an attempt is assigned or running)
  bool healthy = true;   ///< false while lost and not yet replaced
  bool replace = false;  ///< asks the worker to replace its lost container
  bool restart = false;  ///< asks the worker to restart it (left by an engine that died, not adopted)
  std::shared_ptr<Attempt> attempt;
  int wake_fd = -1;
  std::thread thread;
};

class ComposeBackend : public sdk::Backend {
 public:
  ComposeBackend(const sdk::Host& host, const sdk::Options& options)
      : host_(host), config_(PoolConfig::FromOptions(options)), api_(DockerSocketFromEnv()) {
    HttpResponse ping = api_.Request("GET", "/_ping", "", 10000);
    if (ping.status != 200) throw sdk::Unavailable("docker at " + api_.socket_path() + " answers " + std::to_string(ping.status));
    fs::path dir = fs::path(host_.state_dir()) / "compose";
    fs::create_directories(dir);
    owner_path_ = (dir / (config_.project + ".engine")).string();
    bool abandoned = ClaimPool();
    // Only once the pool is this engine's: a refused engine must not change
    // the files the pool's user brings it back to size from.
    compose_files_ = {(dir / (config_.project + ".yaml")).string(), (dir / (config_.project + ".stamp.yaml")).string()};
    std::ofstream(compose_files_[0], std::ios::binary | std::ios::trunc) << config_.compose_text;
    std::ofstream(compose_files_[1], std::ios::binary | std::ios::trunc) << config_.stamp_text;

    std::map<std::string, std::vector<std::string>> running = RunningExecutors(api_);
    bool short_of_replicas = false;
    for (const auto& s : config_.services) short_of_replicas |= running[s.name].size() < static_cast<size_t>(config_.replicas);
    if (short_of_replicas) {
      Up();
      running = RunningExecutors(api_);
    }
    for (const auto& s : config_.services) {
      const auto& ids = running[s.name];
      if (ids.size() < static_cast<size_t>(config_.replicas)) {
        throw sdk::Unavailable("compose pool " + config_.project + ": " + std::to_string(ids.size()) + " of " +
                               std::to_string(config_.replicas) + " executors of service " + s.name + " run after up");
      }
      for (int i = 0; i < config_.replicas; ++i) {
        auto ex = std::make_unique<Executor>();
        ex->container = ids[static_cast<size_t>(i)];
        ex->service = s.name;
        ex->wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        executors_.push_back(std::move(ex));
      }
    }
    // An engine that died left its executors as they were: a step may still
    // run in one. They stay leased until Adopt() has taken what it follows
    // and the rest is restarted (CloseAdoption).
    adopt_open_ = abandoned;
    for (auto& ex : executors_) {
      Executor* e = ex.get();
      e->busy = abandoned;
      e->thread = std::thread([this, e] { WorkerLoop(*e); });
    }
    host_.Log(CRUCIBLE_LOG_DEBUG, "compose: pool up project=" + config_.project + " executors=" +
                                     std::to_string(executors_.size()));
  }

  ~ComposeBackend() override {
    CloseAdoption();
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      for (auto& ex : executors_) {
        if (ex->attempt) ex->attempt->cancel = true;
      }
    }
    work_cv_.notify_all();
    for (auto& ex : executors_) Wake(*ex);
    for (auto& ex : executors_) {
      if (ex->thread.joinable()) ex->thread.join();
      if (ex->wake_fd >= 0) ::close(ex->wake_fd);
    }
    if (!config_.keep_warm) Down();
    ::unlink(owner_path_.c_str());
  }

  int64_t Capacity() override {
    if (adopt_open_) CloseAdoption();
    std::lock_guard<std::mutex> lock(mu_);
    int64_t n = 0;
    bool any_alive = false;
    for (const auto& ex : executors_) {
      n += (ex->healthy && !ex->busy) ? 1 : 0;
      any_alive = any_alive || ex->healthy || ex->busy;
    }
    // Every executor lost for good: let start() fail the attempt rather than wait forever.
    return any_alive ? n : 1;
  }

  std::string Start(const sdk::Launch& launch) override {
    if (adopt_open_) CloseAdoption();
    const ServiceInfo* service = config_.ServiceFor(launch.image);
    if (service == nullptr) throw std::runtime_error("no service of the compose pool runs image " + launch.image);
    Executor* ex = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& e : executors_) {
        if (e->healthy && !e->busy && (launch.image.empty() || e->service == service->name)) {
          ex = e.get();
          break;
        }
      }
      if (ex == nullptr) {
        throw sdk::Unavailable("no idle executor in compose pool " + config_.project +
                               " (executors lost and not replaced: is the Docker engine up?)");
      }
      ex->busy = true;
    }
    try {
      auto a = std::make_shared<Attempt>();
      a->key = launch.attempt_key;
      a->name = "attempt";
      a->log_path = launch.log_path;
      a->log_cap = launch.log_cap_bytes;
      a->timeout_ms = launch.timeout_ms;
      std::string dir = config_.work_root + "/" + a->name;
      std::vector<std::pair<std::string, std::string>> env = launch.env;
      env.emplace_back("CRUCIBLE_OUTPUT", dir + "/" + kOutputFile);
      std::vector<TarEntry> entries;
      if (launch.upstream_json) {
        env.emplace_back("CRUCIBLE_UPSTREAM", dir + "/" + kUpstreamFile);
        entries.push_back({a->name + "/" + kUpstreamFile, std::nullopt, *launch.upstream_json, 0644});
      }
      for (const auto& in : launch.inputs) entries.push_back({a->name + "/" + in.dest, in.source, "", 0644});
      std::string launch_script = BuildLaunchScript(launch.timeout_ms, config_.kill_grace_ms,
                                                    launch.output_cap_bytes + 1, launch.argv, env);
      a->label = Label(launch.step_id, launch.attempt);
      json cmd = json::array({"/bin/sh", "-c", std::string(kSupervisorScript), a->label, config_.work_root, a->name});
      if (entries.empty() && IsValidUtf8(launch_script)) {
        cmd.push_back(launch_script);  // nothing to unpack: the launch script travels in the command
      } else {
        entries.push_back({".crucible-launch", std::nullopt, launch_script, 0600});
        a->tar = BuildTar(entries);
      }
      // Attaching stdin costs dockerd a few milliseconds per exec: only when there is a tar to send.
      json body = {{"AttachStdin", !a->tar.empty()}, {"AttachStdout", true}, {"AttachStderr", true},
                   {"Tty", false},         {"User", config_.step_user}, {"Cmd", cmd}};
      HttpResponse r = api_.Request("POST", "/containers/" + ex->container + "/exec", body.dump());
      json created = ParseJson(r.body);
      if (r.status != 201 || !created.is_object() || !created.contains("Id")) {
        MarkLost(*ex);
        throw sdk::Unavailable("exec in executor " + ex->container.substr(0, 12) + ": HTTP " + std::to_string(r.status) +
                               " " + r.body.substr(0, 200));
      }
      a->exec_id = created["Id"].get<std::string>();
      std::string handle = "container=" + ex->container + " exec=" + a->exec_id + " pool=" + config_.project;
      {
        std::lock_guard<std::mutex> lock(mu_);
        ex->attempt = a;
        attempts_[a->key] = ex;
      }
      work_cv_.notify_all();
      return handle;
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!ex->attempt && !ex->replace) ex->busy = false;
      throw;
    }
  }

  int Poll(int timeout_ms, sdk::ResultSink& sink) override {
    std::vector<sdk::Result> ready;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (done_.empty() && timeout_ms > 0) {
        done_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [this] { return !done_.empty(); });
      }
      ready.swap(done_);
    }
    for (const auto& r : ready) sink.Emit(r);
    return static_cast<int>(ready.size());
  }

  void Cancel(uint64_t attempt_key, int64_t /*grace_ms*/) override {
    Executor* ex = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = attempts_.find(attempt_key);
      if (it == attempts_.end()) return;
      ex = it->second;
      if (ex->attempt && ex->attempt->key == attempt_key) ex->attempt->cancel = true;
    }
    Wake(*ex);
  }

  /// Finds each attempt by its label in the executors' reports (the handle's
  /// container is not needed: an attempt whose handle was never recorded is
  /// found all the same). A supervisor still running is followed by its
  /// executor's worker; one that ended has its report turned into the result.
  bool Adopt(const std::vector<sdk::AdoptItem>& items) override {
    std::map<std::string, const sdk::AdoptItem*> wanted;
    for (const auto& item : items) wanted[Label(item.step_id, item.attempt)] = &item;
    std::set<uint64_t> taken;
    if (adopt_open_) {
      for (auto& ex : executors_) {
        std::optional<ControlReport> report = ReadReport(api_, *ex);
        if (!report) continue;
        auto it = wanted.find(report->label);
        if (it == wanted.end() || taken.count(it->second->attempt_key)) continue;
        auto a = std::make_shared<Attempt>();
        a->key = it->second->attempt_key;
        a->adopted = true;
        a->label = report->label;
        taken.insert(a->key);
        {
          std::lock_guard<std::mutex> lock(mu_);
          ex->attempt = a;
          attempts_[a->key] = ex.get();
        }
        host_.Log(CRUCIBLE_LOG_DEBUG, "compose: adopted " + a->label + " in executor " + ex->container.substr(0, 12));
      }
      work_cv_.notify_all();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& item : items) {
        if (taken.count(item.attempt_key)) continue;
        sdk::Result r;
        r.attempt_key = item.attempt_key;
        r.outcome = CRUCIBLE_OUTCOME_FAILED;
        r.reason = CRUCIBLE_REASON_LOST;
        r.message = "no executor of compose pool " + config_.project + " holds it any more (restarted, or used by "
                    "another engine since)";
        done_.push_back(std::move(r));
      }
    }
    done_cv_.notify_all();
    host_.Wake();
    CloseAdoption();
    return true;
  }

 private:
  /// The attempt's name in its supervisor's report: crucible:RUN/STEP#N, one line.
  std::string Label(const std::string& step_id, uint32_t attempt) const {
    std::string label = "crucible:" + host_.run_id() + "/" + step_id + "#" + std::to_string(attempt);
    for (char& c : label) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    }
    return label;
  }

  /// Restarts every executor an engine that died left and Adopt() did not take.
  void CloseAdoption() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!adopt_open_) return;
      adopt_open_ = false;
      for (auto& e : executors_) {
        if (!e->attempt) e->restart = true;
      }
    }
    work_cv_.notify_all();
  }

  /// The executor's report of its last attempt (supervisor.sh), read by an
  /// exec: the lines, "crucible-alive" when its supervisor still runs, and
  /// the output once it ended. nullopt when it could not be read.
  std::optional<ControlReport> ReadReport(DockerApi& api, const Executor& ex) {
    static const char* kRead = R"(w=$1; c=$3; r=$w/.crucible-report; o=$w/$2/.crucible-output
[ -f "$r" ] || exit 0
x=0
while IFS= read -r l; do
  printf '%s
' "$l"
  case $l in
    "crucible-pid "*) p=${l#crucible-pid }; p=${p%% *}; kill -0 "$p" 2>/dev/null && echo crucible-alive ;;
    "crucible-exit "*) x=1 ;;
  esac
done <"$r"
if [ $x = 1 ] && [ -s "$o" ]; then echo crucible-output; head -c "$c" "$o"; fi
)";
    try {
      json body = {{"AttachStdin", false},
                   {"AttachStdout", true},
                   {"AttachStderr", false},
                   {"Tty", false},
                   {"User", config_.step_user},
                   {"Cmd", {"/bin/sh", "-c", kRead, "crucible-read", config_.work_root, "attempt",
                            std::to_string(kMaxOutputBytes)}}};
      HttpResponse r = api.Request("POST", "/containers/" + ex.container + "/exec", body.dump());
      json created = ParseJson(r.body);
      if (r.status != 201 || !created.is_object() || !created.contains("Id")) return std::nullopt;
      std::unique_ptr<RawStream> s =
          api.Hijack("/exec/" + created["Id"].get<std::string>() + "/start", R"({"Detach":false,"Tty":false})");
      ControlParser control;
      FrameDemux demux([&](int stream, const char* data, size_t len) {
        if (stream == 1) control.Feed(data, len);
      });
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      char buf[16384];
      for (;;) {
        ssize_t got = s->Recv(buf, sizeof buf);
        if (got > 0) {
          demux.Feed(buf, static_cast<size_t>(got));
          continue;
        }
        if (got == 0) break;
        if (got == -2 || std::chrono::steady_clock::now() > deadline) return std::nullopt;
        pollfd pfd = {s->fd(), POLLIN, 0};
        (void)::poll(&pfd, 1, 1000);
      }
      return control.report();
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }

  static void Wake(Executor& ex) {
    uint64_t one = 1;
    if (ex.wake_fd >= 0) (void)!::write(ex.wake_fd, &one, sizeof one);
  }

  /// Running executor containers of the project made from this configuration
  /// (its stamp: Compose recreates the others on `up`), by service, oldest name first.
  std::map<std::string, std::vector<std::string>> RunningExecutors(DockerApi& api) {
    json filters = {{"label", {"com.docker.compose.project=" + config_.project,
                               std::string(kStampLabel) + "=" + config_.stamp}}};
    HttpResponse r = api.Request("GET", "/containers/json?filters=" + Escape(filters.dump()));
    json list = ParseJson(r.body);
    std::map<std::string, std::vector<std::pair<std::string, std::string>>> named;
    if (r.status == 200 && list.is_array()) {
      for (const auto& c : list) {
        std::string service = c["Labels"].value("com.docker.compose.service", "");
        std::string name = c["Names"].is_array() && !c["Names"].empty() ? c["Names"][0].get<std::string>() : "";
        named[service].emplace_back(name, c.value("Id", ""));
      }
    }
    std::map<std::string, std::vector<std::string>> out;
    for (auto& [service, v] : named) {
      std::sort(v.begin(), v.end());
      for (auto& p : v) out[service].push_back(p.second);
    }
    return out;
  }

  static std::string Escape(const std::string& s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
      if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
        out += static_cast<char>(c);
      } else {
        out += '%';
        out += hex[c >> 4];
        out += hex[c & 15];
      }
    }
    return out;
  }

  /// Records this engine as the pool's user in STATE_DIR/compose/PROJECT.engine.
  /// Returns true when an engine that died held it; throws when a live one does.
  bool ClaimPool() {
    for (int round = 0; round < 2; ++round) {
      int fd = ::open(owner_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd >= 0) {
        std::string pid = std::to_string(::getpid()) + "\n";
        (void)!::write(fd, pid.data(), pid.size());
        ::close(fd);
        return round > 0;
      }
      std::ifstream in(owner_path_);
      long pid = 0;
      in >> pid;
      // A live engine: comm holds 15 bytes of the name; a zombie (killed, not yet reaped) is gone.
      std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
      std::string line;
      std::getline(stat, line);
      size_t open = line.find('('), close = line.rfind(')');
      bool engine = open != std::string::npos && close != std::string::npos && close + 2 < line.size() &&
                    line.compare(open + 1, 14, "crucible-engin") == 0 && line[close + 2] != 'Z';
      if (pid > 0 && pid != ::getpid() && engine) {
        throw std::runtime_error("compose pool " + config_.project + " is in use by crucible-engine pid " +
                                 std::to_string(pid) + " (" + owner_path_ + ")");
      }
      ::unlink(owner_path_.c_str());
    }
    throw std::runtime_error("cannot claim compose pool " + config_.project + " (" + owner_path_ + ")");
  }

  /// Restarts an executor (its tmpfs mounts come back empty, every process ends), then frees it.
  void Restart(Executor& ex) {
    bool ok = false;
    try {
      DockerApi api(api_.socket_path());
      ok = api.Request("POST", "/containers/" + ex.container + "/restart?t=0", "", 60000).status == 204;
    } catch (const std::exception&) {
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ex.busy = false;
      ex.healthy = ok;
    }
    host_.Wake();
  }

  /// The Compose CLI, found on first use (a warm pool needs none).
  const ComposeCli& Cli() {
    std::lock_guard<std::mutex> lock(cli_mu_);
    if (!cli_) {
      cli_ = DetectCompose();
      if (!cli_) throw sdk::Unavailable("neither `docker compose` (v2) nor `docker-compose` (v1) can be run");
    }
    return *cli_;
  }

  /// compose up; throws with Compose's output on failure.
  void Up() {
    std::map<std::string, int> replicas;
    for (const auto& s : config_.services) replicas[s.name] = config_.replicas;
    std::string output;
    int rc = RunCommand(UpCommand(Cli(), config_.project, compose_files_, replicas), &output);
    if (rc != 0) throw sdk::Unavailable("compose up of pool " + config_.project + " failed: " + output.substr(0, 600));
  }

  /// compose down, then removes whatever still carries the project's label.
  void Down() {
    std::string output;
    try {
      RunCommand(DownCommand(Cli(), config_.project, compose_files_), &output);
    } catch (const std::exception&) {
      // No Compose: what carries the project's label is removed below all the same.
    }
    try {
      json filters = {{"label", {"com.docker.compose.project=" + config_.project}}};
      HttpResponse r = api_.Request("GET", "/containers/json?all=1&filters=" + Escape(filters.dump()));
      json list = ParseJson(r.body);
      if (list.is_array()) {
        for (const auto& c : list) api_.Request("DELETE", "/containers/" + c.value("Id", "") + "?force=1&v=1");
      }
    } catch (const std::exception&) {
    }
  }

  /// The executor's container is gone: its worker replaces it (busy until then).
  void MarkLost(Executor& ex) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ex.healthy = false;
      ex.busy = true;
      ex.replace = true;
    }
    work_cv_.notify_all();
  }

  /// Whether the container still runs after an exec ended without a status:
  /// false when it is gone or stops within a moment (a kill is seen by the
  /// exec's stream before the container's state says so).
  bool ContainerRunning(DockerApi& api, const std::string& id) {
    try {
      HttpResponse r = api.Request("POST", "/containers/" + id + "/wait?condition=not-running", "", 2000);
      return false;
    } catch (const sdk::Unavailable&) {
      // No answer within the moment: it still runs, unless it is gone.
    }
    try {
      HttpResponse r = api.Request("GET", "/containers/" + id + "/json");
      if (r.status == 404) return false;
      json j = ParseJson(r.body);
      return j.is_object() && j["State"].value("Running", false) && !j["State"].value("Restarting", false);
    } catch (const std::exception&) {
      return false;
    }
  }

  /// Brings the pool back to size and gives ex a running container no other executor has.
  bool Replace(DockerApi& api, Executor& ex) {
    std::lock_guard<std::mutex> up_lock(up_mu_);
    try {
      std::map<std::string, std::vector<std::string>> running;
      auto take = [&]() -> bool {
        std::lock_guard<std::mutex> lock(mu_);
        std::set<std::string> owned;
        for (const auto& e : executors_) {
          if (e.get() != &ex && e->healthy) owned.insert(e->container);
        }
        for (const auto& id : running[ex.service]) {
          if (!owned.count(id)) {
            ex.container = id;
            ex.healthy = true;
            return true;
          }
        }
        return false;
      };
      running = RunningExecutors(api);
      if (take()) return true;
      Up();
      running = RunningExecutors(api);
      return take();
    } catch (const std::exception&) {
      return false;
    }
  }

  void WorkerLoop(Executor& ex) {
    DockerApi api(api_.socket_path());
    for (;;) {
      std::shared_ptr<Attempt> a;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_cv_.wait(lock, [&] { return stopping_ || ex.attempt != nullptr || ex.replace || ex.restart; });
        if (ex.restart && ex.attempt == nullptr) {
          ex.restart = false;
          lock.unlock();
          Restart(ex);
          continue;
        }
        if (stopping_ && ex.attempt == nullptr) return;
        if (ex.replace && ex.attempt == nullptr) {
          ex.replace = false;
          lock.unlock();
          Replace(api, ex);
          lock.lock();
          ex.busy = false;
          lock.unlock();
          host_.Wake();
          continue;
        }
        a = ex.attempt;
      }
      bool lost = false;
      bool dirty = false;
      sdk::Result result = a->adopted ? Follow(api, ex, *a, &lost, &dirty) : Run(api, ex, *a, &lost, &dirty);
      if (!lost && (dirty || config_.recycle)) {
        // Restarting empties the executor's tmpfs mounts and ends every process in it.
        try {
          HttpResponse r = api.Request("POST", "/containers/" + ex.container + "/restart?t=0", "", 60000);
          if (r.status != 204) lost = true;
        } catch (const std::exception&) {
          lost = true;
        }
      }
      bool stopping;
      {
        std::lock_guard<std::mutex> lock(mu_);
        done_.push_back(std::move(result));
        attempts_.erase(a->key);
        ex.attempt = nullptr;
        if (lost) ex.healthy = false;
        ex.busy = lost;  // free at once, so the engine can start the next attempt on this turn
        stopping = stopping_;
      }
      done_cv_.notify_all();
      host_.Wake();
      if (lost) {
        if (!stopping) Replace(api, ex);
        {
          std::lock_guard<std::mutex> lock(mu_);
          ex.busy = false;
        }
        host_.Wake();
      }
    }
  }

  /// The exit code of an ended exec, -1 when unknown.
  static int ExecExitCode(DockerApi& api, const std::string& exec_id) {
    try {
      HttpResponse r = api.Request("GET", "/exec/" + exec_id + "/json");
      json j = ParseJson(r.body);
      if (r.status == 200 && j.is_object() && j["ExitCode"].is_number_integer()) return j["ExitCode"].get<int>();
    } catch (const std::exception&) {
    }
    return -1;
  }

  void SendCancel(DockerApi& api, const Executor& ex, long supervisor_pid) {
    try {
      json body = {{"AttachStdin", false},
                   {"AttachStdout", false},
                   {"AttachStderr", false},
                   {"User", config_.step_user},
                   {"Cmd", {"/bin/sh", "-c", "kill -USR1 " + std::to_string(supervisor_pid)}}};
      HttpResponse r = api.Request("POST", "/containers/" + ex.container + "/exec", body.dump());
      json created = ParseJson(r.body);
      if (r.status != 201 || !created.contains("Id")) return;
      api.Request("POST", "/exec/" + created["Id"].get<std::string>() + "/start", R"({"Detach":true,"Tty":false})");
    } catch (const std::exception&) {
    }
  }

  sdk::Result Run(DockerApi& api, Executor& ex, Attempt& a, bool* lost, bool* dirty) {
    sdk::Result r;
    r.attempt_key = a.key;
    r.started_at_ms = NowEpochMs();
    CappedLog log(a.log_path, a.log_cap);
    ControlParser control;
    FrameDemux demux([&](int stream, const char* data, size_t len) {
      if (stream == 2) {
        control.Feed(data, len);
      } else {
        log.Write(data, len);
      }
    });
    bool stream_failed = false;
    std::string failure;
    std::string forced;  ///< set when the backstop restarted the executor
    try {
      std::unique_ptr<RawStream> s = api.Hijack("/exec/" + a.exec_id + "/start", R"({"Detach":false,"Tty":false})");
      if (!a.tar.empty()) {
        if (!s->SendAll(a.tar)) {
          stream_failed = true;
          failure = "sending the attempt's files failed";
        }
        s->CloseWrite();
      }
      a.tar.clear();
      a.tar.shrink_to_fit();
      bool cancel_sent = false;
      // The supervisor enforces the timeout and the cancel; should the step
      // have disabled it (it runs as the same user), the executor is
      // restarted once the grace and a margin have passed as well.
      constexpr int64_t kBackstopMarginMs = 10000;
      auto now_ms = [] {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
      };
      int64_t backstop = a.timeout_ms > 0 ? now_ms() + a.timeout_ms + config_.kill_grace_ms + kBackstopMarginMs : 0;
      char buf[65536];
      while (!stream_failed) {
        if (a.cancel && !cancel_sent && control.has_pid()) {
          SendCancel(api, ex, control.report().supervisor_pid);
          cancel_sent = true;
          int64_t by = now_ms() + config_.kill_grace_ms + kBackstopMarginMs;
          backstop = backstop == 0 ? by : std::min(backstop, by);
        }
        if (backstop != 0 && now_ms() > backstop && forced.empty()) {
          forced = a.cancel ? "cancelled" : "timeout";
          try {
            api.Request("POST", "/containers/" + ex.container + "/restart?t=0", "", 60000);
          } catch (const std::exception&) {
          }
        }
        pollfd fds[2] = {{s->fd(), POLLIN, 0}, {ex.wake_fd, POLLIN, 0}};
        int n = ::poll(fds, 2, 1000);
        if (n < 0 && errno != EINTR) break;
        if (fds[1].revents & POLLIN) {
          uint64_t v;
          (void)!::read(ex.wake_fd, &v, sizeof v);
        }
        bool eof = false;
        for (;;) {
          ssize_t got = s->Recv(buf, sizeof buf);
          if (got == -1) break;
          if (got <= 0) {
            eof = true;
            break;
          }
          demux.Feed(buf, static_cast<size_t>(got));
        }
        if (eof) break;
      }
    } catch (const std::exception& e) {
      stream_failed = true;
      failure = e.what();
    }
    log.Finish();
    r.ended_at_ms = NowEpochMs();
    r.log_bytes_kept = log.kept();
    r.log_bytes_dropped = log.dropped();
    const ControlReport& c = control.report();
    if (c.scrub_ok.has_value() && !*c.scrub_ok) *dirty = true;
    if (!c.exited && !forced.empty()) {
      r.outcome = forced == "cancelled" ? CRUCIBLE_OUTCOME_CANCELLED : CRUCIBLE_OUTCOME_FAILED;
      r.reason = forced == "cancelled" ? CRUCIBLE_REASON_CANCELLED : CRUCIBLE_REASON_TIMEOUT;
      r.message = "the step outlived its supervisor's " + forced + "; executor " + ex.container.substr(0, 12) +
                  " was restarted";
      return r;
    }
    if (!c.exited) {
      if (!ContainerRunning(api, ex.container)) {
        *lost = true;
        r.outcome = CRUCIBLE_OUTCOME_FAILED;
        r.reason = CRUCIBLE_REASON_LOST;
        r.message = "executor " + ex.container.substr(0, 12) + " of pool " + config_.project + " stopped during the step";
      } else if (c.setup_failed) {
        *dirty = true;
        r.outcome = CRUCIBLE_OUTCOME_FAILED;
        r.reason = CRUCIBLE_REASON_BACKEND_ERROR;
        r.message = "the attempt's directory could not be set up in executor " + ex.container.substr(0, 12) +
                    " (see its log)";
      } else {
        *dirty = true;
        r.outcome = CRUCIBLE_OUTCOME_FAILED;
        int exec_exit = ExecExitCode(api, a.exec_id);
        if (exec_exit > 128) {
          // The supervisor itself was killed, by the step (same user) or the OOM killer.
          r.reason = CRUCIBLE_REASON_SIGNALED;
          r.signal = exec_exit - 128;
          r.message = "the attempt's supervisor was killed by signal " + std::to_string(r.signal);
        } else {
          r.reason = CRUCIBLE_REASON_BACKEND_ERROR;
          r.message = "the exec in executor " + ex.container.substr(0, 12) + " ended without a status" +
                      (failure.empty() ? "" : ": " + failure);
        }
      }
      return r;
    }
    Classify(c, r);
    return r;
  }

  /// The result of an attempt whose supervisor reported its end.
  static void Classify(const ControlReport& c, sdk::Result& r) {
    r.outputs_text = c.output;
    r.exit_code = c.rc;
    r.signal = c.rc < 0 ? c.signal : 0;
    if (c.why == "cancelled") {
      r.outcome = CRUCIBLE_OUTCOME_CANCELLED;
      r.reason = CRUCIBLE_REASON_CANCELLED;
    } else if (c.why == "timeout") {
      r.outcome = CRUCIBLE_OUTCOME_FAILED;
      r.reason = CRUCIBLE_REASON_TIMEOUT;
    } else if (c.oom_after > c.oom_before) {
      r.outcome = CRUCIBLE_OUTCOME_FAILED;
      r.reason = CRUCIBLE_REASON_OOM_KILLED;
      r.message = "killed by the executor's memory limit";
    } else if (c.rc == 0) {
      r.outcome = CRUCIBLE_OUTCOME_SUCCEEDED;
      r.reason = CRUCIBLE_REASON_NONE;
    } else if (c.rc > 0) {
      r.outcome = CRUCIBLE_OUTCOME_FAILED;
      r.reason = CRUCIBLE_REASON_EXITED;
    } else if (c.signal > 0) {
      r.outcome = CRUCIBLE_OUTCOME_FAILED;
      r.reason = CRUCIBLE_REASON_SIGNALED;
    } else {
      r.outcome = CRUCIBLE_OUTCOME_FAILED;
      r.reason = CRUCIBLE_REASON_BACKEND_ERROR;
      r.message = "the executor's shell did not tell how the step ended";
    }
  }

  /// Follows an attempt an earlier engine started: its stream is gone (what
  /// the step wrote since is not in its log), so its supervisor's report is
  /// read every half second until the attempt has ended and been scrubbed.
  sdk::Result Follow(DockerApi& api, Executor& ex, Attempt& a, bool* lost, bool* dirty) {
    sdk::Result r;
    r.attempt_key = a.key;
    bool cancel_sent = false;
    bool following = false;
    for (int unreadable = 0;;) {
      std::optional<ControlReport> c = ReadReport(api, ex);
      if (!c || c->label != a.label) {
        if (c || ++unreadable >= 3 || !ContainerRunning(api, ex.container)) {
          *lost = !ContainerRunning(api, ex.container);
          *dirty = true;
          r.outcome = CRUCIBLE_OUTCOME_FAILED;
          r.reason = CRUCIBLE_REASON_LOST;
          r.message = "executor " + ex.container.substr(0, 12) + " no longer reports the attempt";
          return r;
        }
      } else if (c->exited && (c->scrub_ok.has_value() || !c->alive)) {
        if (!c->scrub_ok.value_or(false)) *dirty = true;
        Classify(*c, r);
        r.ended_at_ms = NowEpochMs();
        return r;
      } else if (!c->alive) {
        *dirty = true;
        r.outcome = CRUCIBLE_OUTCOME_FAILED;
        r.reason = CRUCIBLE_REASON_LOST;
        r.message = "its supervisor in executor " + ex.container.substr(0, 12) +
                    " ended without a status while no engine followed it";
        return r;
      } else {
        if (!following) {
          following = true;
          host_.Log(CRUCIBLE_LOG_DEBUG, "compose: following " + a.label + " (its supervisor still runs)");
        }
        if (a.cancel && !cancel_sent) {
          SendCancel(api, ex, c->supervisor_pid);
          cancel_sent = true;
        }
      }
      pollfd pfd = {ex.wake_fd, POLLIN, 0};
      if (::poll(&pfd, 1, a.cancel && !cancel_sent ? 0 : 500) > 0) {
        uint64_t v;
        (void)!::read(ex.wake_fd, &v, sizeof v);
      }
    }
  }

  sdk::Host host_;
  PoolConfig config_;
  DockerApi api_;  ///< the engine thread's (and create/destroy's); each worker has its own
  std::mutex cli_mu_;
  std::optional<ComposeCli> cli_;
  std::vector<std::string> compose_files_;  ///< the rendered compose file, then the stamp override
  std::string owner_path_;
  std::vector<std::unique_ptr<Executor>> executors_;
  std::mutex mu_;
  std::mutex up_mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  bool stopping_ = false;
  std::atomic<bool> adopt_open_{false};  ///< executors an engine that died left wait for Adopt()
  std::vector<sdk::Result> done_;
  std::map<uint64_t, Executor*> attempts_;
};

void Describe(std::string& out) {
  out =
      "steps run in a warm Docker Compose pool of hardened executors (one exec per attempt); Docker through "
      "DOCKER_HOST (unix://) or /var/run/docker.sock; compose v2 or v1 found at run time; a step's image must be "
      "one a pool service runs and its resources must fit the executor's limits; working directories live in the "
      "executor's tmpfs work root and are always removed (keep_work does not apply)";
}

void CheckStep(const sdk::StepCheck& step, sdk::DiagSink& sink) {
  PoolConfig config;
  try {
    config = PoolConfig::FromOptions(step.backend_options);
  } catch (const std::exception& e) {
    sink.Error("", std::string("[backends.compose]: ") + e.what());
    return;
  }
  const ServiceInfo* service = config.ServiceFor(step.image);
  if (service == nullptr) {
    std::string images;
    for (const auto& i : config.Images()) images += (images.empty() ? "" : ", ") + i;
    sink.Error("image", "image \"" + step.image + "\" is not run by any service of compose pool " + config.project +
                            " (it runs " + images + "); set [backends.compose] image or add a service");
    return;
  }
  if (service->memory_bytes > 0 && step.memory_bytes > service->memory_bytes) {
    sink.Error("resources.memory", "memory " + std::to_string(step.memory_bytes >> 20) + "Mi exceeds the limit of " +
                                       "executor service " + service->name + " (" +
                                       std::to_string(service->memory_bytes >> 20) + "Mi)");
  }
  if (service->cpu_millicores > 0 && step.cpu_millicores > service->cpu_millicores) {
    sink.Error("resources.cpu", "cpu " + std::to_string(step.cpu_millicores) + "m exceeds the limit of executor service " +
                                    service->name + " (" + std::to_string(service->cpu_millicores) + "m)");
  }
}

const crucible_option_decl kOptions[] = {
    sdk::Option("project", CRUCIBLE_OPTION_STRING, CRUCIBLE_SCOPE_BACKEND,
                "Compose project name of the pool (default $CRUCIBLE_COMPOSE_PROJECT, else crucible-pool); it labels "
                "every executor"),
    sdk::Option("compose_file", CRUCIBLE_OPTION_STRING, CRUCIBLE_SCOPE_BACKEND,
                "your own compose file instead of the shipped hardened one"),
    sdk::Option("services", CRUCIBLE_OPTION_STRING_LIST, CRUCIBLE_SCOPE_BACKEND,
                "the executor services of the compose file (default: all)"),
    sdk::Option("replicas", CRUCIBLE_OPTION_INT, CRUCIBLE_SCOPE_BACKEND, "executors per service (default 4)"),
    sdk::Option("image", CRUCIBLE_OPTION_STRING, CRUCIBLE_SCOPE_BACKEND,
                "image of the shipped executor service (default crucible/busybox:latest)"),
    sdk::Option("memory", CRUCIBLE_OPTION_STRING, CRUCIBLE_SCOPE_BACKEND, "memory limit of an executor (default 512m)"),
    sdk::Option("cpus", CRUCIBLE_OPTION_FLOAT, CRUCIBLE_SCOPE_BACKEND, "CPU limit of an executor (default 1.0)"),
    sdk::Option("pids_limit", CRUCIBLE_OPTION_INT, CRUCIBLE_SCOPE_BACKEND, "process limit of an executor (default 256)"),
    sdk::Option("network", CRUCIBLE_OPTION_STRING, CRUCIBLE_SCOPE_BACKEND,
                "network_mode of the executors (default none; \"bridge\" opts in)"),
    sdk::Option("user", CRUCIBLE_OPTION_STRING, CRUCIBLE_SCOPE_BACKEND,
                "user of an executor's main process (default 65534:65534)"),
    sdk::Option("step_user", CRUCIBLE_OPTION_STRING, CRUCIBLE_SCOPE_BACKEND,
                "user steps run as, distinct from user (default 10001:10001)"),
    sdk::Option("work_root", CRUCIBLE_OPTION_STRING, CRUCIBLE_SCOPE_BACKEND,
                "tmpfs in the executor holding the attempts' directories (default /work)"),
    sdk::Option("work_size", CRUCIBLE_OPTION_STRING, CRUCIBLE_SCOPE_BACKEND,
                "size of an executor's tmpfs work root (default 256m)"),
    sdk::Option("keep_warm", CRUCIBLE_OPTION_BOOL, CRUCIBLE_SCOPE_BACKEND,
                "leave the pool running after the run (default false: compose down)"),
    sdk::Option("isolation", CRUCIBLE_OPTION_STRING, CRUCIBLE_SCOPE_BACKEND,
                "\"scrub\" (default: kill leftovers, empty the tmpfs mounts, verify) or \"recycle\" (restart the "
                "executor after each attempt)"),
    sdk::Option("kill_grace", CRUCIBLE_OPTION_DURATION, CRUCIBLE_SCOPE_BACKEND,
                "SIGTERM to SIGKILL delay on timeout and cancel (default 5s)"),
};

}  // namespace
}  // namespace crucible::plugins::compose

CRUCIBLE_DEFINE_BACKEND(crucible::plugins::compose::ComposeBackend, "compose", "0.1.0",
                        "steps in a warm, hardened Docker Compose pool of executor containers",
                        crucible::plugins::compose::kOptions,
                        CRUCIBLE_DESCRIBE(crucible::plugins::compose::Describe),
                        CRUCIBLE_CHECK_STEP(crucible::plugins::compose::CheckStep))

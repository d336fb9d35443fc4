// The verbs that read a workflow: validate, graph, run, and retry (the one stored with a run).
#include <csignal>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "cli/progress_reporter.h"
#include "cli/run_view.h"
#include "cli/terminal.h"
#include "cli/validate_pipeline.h"
#include "cli/views.h"
#include "common/crash_point.h"
#include "common/process_identity.h"
#include "common/sha256.h"
#include "loader/loader.h"
#include "scheduler/scheduler.h"

namespace crucible::cli {
namespace {

/// How long a run's owner keeps it without a heartbeat (it renews it every
/// third of this): 30 s, or CRUCIBLE_LEASE_MS (milliseconds).
int64_t LeaseMs() {
  static const int64_t lease = [] {
    const char* v = std::getenv("CRUCIBLE_LEASE_MS");
    long long ms = v ? std::atoll(v) : 0;
    return ms > 0 ? static_cast<int64_t>(ms) : int64_t{30000};
  }();
  return lease;
}

/// The scheduler that SIGINT/SIGTERM cancel (lock-free atomic: async-signal-safe).
std::atomic<scheduler::Scheduler*> g_scheduler{nullptr};
/// Set when a signal came before the scheduler existed.
volatile std::sig_atomic_t g_signalled = 0;
static_assert(std::atomic<scheduler::Scheduler*>::is_always_lock_free);

extern "C" void OnStopSignal(int /*sig*/) {
  g_signalled = 1;
  scheduler::Scheduler* s = g_scheduler.load();
  if (s != nullptr) s->RequestCancel();
}

/// Installs the SIGINT/SIGTERM handlers for its lifetime.
class StopSignals {
 public:
  StopSignals() {
    struct sigaction sa {};
    sa.sa_handler = OnStopSignal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    g_scheduler.store(nullptr);
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

/// Wakes the scheduler every interval so a live display can redraw its clock.
class Ticker {
 public:
  Ticker(const scheduler::Waker& waker, std::chrono::milliseconds interval) : waker_(waker) {
    thread_ = std::thread([this, interval] {
      std::unique_lock<std::mutex> lock(mu_);
      while (!cv_.wait_for(lock, interval, [this] { return stop_; })) waker_.Wake();
    });
  }
  ~Ticker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Ticker(const Ticker&) = delete;
  Ticker& operator=(const Ticker&) = delete;

 private:
  const scheduler::Waker& waker_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

plan::PlanOptions ToPlanOptions(const WorkflowArgs& a) {
  plan::PlanOptions o;
  o.params = a.params;
  o.backend = a.backend;
  return o;
}

/// The part of `run` and `retry` after the run is chosen: creates the backends,
/// runs (or continues) the run with live progress and SIGINT/SIGTERM, prints
/// the --json status. Returns the exit code.
int ExecuteRun(const GlobalOptions& g, const host::PluginHost& host, store::Store& store, const plan::Plan& plan,
               const std::map<std::string, std::vector<host::OptionValue>>& backend_options,
               scheduler::RunOptions options, bool json, bool cancel_at_once = false) {
  const std::string run_id = options.run_id;
  StopSignals signals;
  scheduler::Waker waker;
  std::map<std::string, std::unique_ptr<host::Backend>> owned;
  std::map<std::string, host::Backend*> backends;
  for (const std::string& name : plan.backend_names()) {
    const host::Plugin* plugin = host.Find(name);
    if (plugin == nullptr) {  // validation guarantees it; a plugin list cannot change in between
      std::cerr << "crucible-engine: error: backend \"" << name << "\" is not loaded\n";
      return kExitBackend;
    }
    auto it = backend_options.find(name);
    std::vector<host::OptionValue> opts = it != backend_options.end() ? it->second : std::vector<host::OptionValue>{};
    Result<std::unique_ptr<host::Backend>> backend =
        plugin->Create(opts, g.state_dir, run_id, [&waker] { waker.Wake(); }, waker.fd());
    if (!backend.ok()) {
      std::cerr << "crucible-engine: error: backend \"" << name << "\" could not start: " << backend.error().message
                << "\n";
      return kExitBackend;
    }
    backends[name] = backend->get();
    owned[name] = std::move(*backend);
  }

  scheduler::SystemClock clock;
  ProgressReporter::Options progress;
  progress.live = IsTerminal(2);
  progress.width = TerminalWidth(2);
  ProgressReporter reporter(std::cerr, clock, progress);

  scheduler::Scheduler sched(plan, store, backends, clock, waker, &reporter, std::move(options));
  g_scheduler.store(&sched);
  if (g_signalled || cancel_at_once) sched.RequestCancel();
  Result<scheduler::RunSummary> summary = [&] {
    std::unique_ptr<Ticker> ticker;
    if (progress.live) ticker = std::make_unique<Ticker>(waker, std::chrono::milliseconds(100));
    return sched.Run();
  }();
  g_scheduler.store(nullptr);
  if (!summary.ok() &&
      (summary.error().code == ErrorCode::kFenced || summary.error().code == ErrorCode::kStorageFull)) {
    // Fenced: another engine owns the run now and follows its steps. Full:
    // nothing more can be recorded. Either way, leave as a crash would:
    // without writing and without stopping what the backends run.
    std::cerr << "crucible-engine: error: ";
    if (summary.error().code == ErrorCode::kFenced) {
      std::cerr << summary.error().message << "\n";
    } else {
      std::cerr << "run " << run_id << ": " << summary.error().message
                << "\ncrucible-engine: the run is left as it is (steps still running go on); `crucible-engine resume "
                << run_id << "` continues it once there is space\n";
    }
    std::cerr << std::flush;
    std::_Exit(kExitFailed);
  }
  if (!summary.ok()) {
    std::cerr << "crucible-engine: error: run " << run_id << ": " << summary.error().message << "\n";
    return summary.error().code == ErrorCode::kInvalidArgument ? kExitUsage : kExitFailed;
  }
  if (json) {
    Result<RunView> view = LoadRunView(store, run_id);
    if (!view.ok()) {
      std::cerr << "crucible-engine: error: " << view.error().message << "\n";
      return kExitFailed;
    }
    std::cout << StatusJson(*view) << "\n" << std::flush;
  }
  return static_cast<int>(summary->exit_code);
}

/// An error of `retry` before the run starts: 2 for an unknown run, else 1.
int ReportRetryError(const Error& e) {
  std::cerr << "crucible-engine: error: " << e.message << "\n";
  return e.code == ErrorCode::kNotFound || e.code == ErrorCode::kInvalidArgument ? kExitUsage : kExitFailed;
}

/// Whether `plan` has exactly the recorded steps, in order, on the recorded backends.
bool MatchesRecord(const plan::Plan& plan, const std::vector<store::StepRow>& steps) {
  if (plan.step_count() != steps.size()) return false;
  for (const store::StepRow& row : steps) {
    if (row.idx < 0 || static_cast<size_t>(row.idx) >= plan.step_count()) return false;
    const auto& ps = plan.step(static_cast<plan::TaskId>(row.idx));
    if (ps.id != row.step_id || ps.backend != row.backend) return false;
  }
  return true;
}

/// Plans `spec` as the recorded run was planned. The run row does not keep
/// --backend, so the recorded steps' backends tell it: no override first, then
/// each recorded backend name as the override. Sets options->backend to the one
/// that fits; nullopt (with diagnostics when planning failed) when none does.
std::optional<plan::Plan> PlanAsRecorded(const loader::WorkflowSpec& spec, const std::vector<store::StepRow>& steps,
                                         plan::PlanOptions& options, Diagnostics& diags) {
  std::vector<std::optional<std::string>> candidates{std::nullopt};
  for (const store::StepRow& row : steps) {
    if (std::find(candidates.begin(), candidates.end(), std::optional<std::string>(row.backend)) == candidates.end()) {
      candidates.emplace_back(row.backend);
    }
  }
  for (const auto& backend : candidates) {
    plan::PlanOptions o = options;
    o.backend = backend;
    Diagnostics scratch(diags.file());
    std::optional<plan::Plan> plan = plan::Plan::Build(spec, o, backend ? scratch : diags);
    if (plan && MatchesRecord(*plan, steps)) {
      options = std::move(o);
      return plan;
    }
    if (!plan) return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace

int CmdValidate(const GlobalOptions& /*g*/, const WorkflowArgs& a) {
  host::PluginHost host = host::PluginHost::Load(host::PluginHost::DefaultSearchPath());
  Diagnostics diags(a.file);
  ValidationOutcome v = ValidateWorkflow(a.file, ToPlanOptions(a), host, diags);
  std::cerr << diags.Format() << std::flush;
  return v.exit_code;
}

int CmdGraph(const GlobalOptions& /*g*/, const WorkflowArgs& a) {
  host::PluginHost host = host::PluginHost::Load(host::PluginHost::DefaultSearchPath());
  Diagnostics diags(a.file);
  ValidationOutcome v = ValidateWorkflow(a.file, ToPlanOptions(a), host, diags);
  std::cerr << diags.Format() << std::flush;
  if (v.exit_code != 0) return v.exit_code;
  std::cout << v.workflow->plan.ToDot() << std::flush;
  return kExitOk;
}

int CmdRun(const GlobalOptions& g, const WorkflowArgs& a) {
  host::PluginHost host = host::PluginHost::Load(host::PluginHost::DefaultSearchPath());
  Diagnostics diags(a.file);
  ValidationOutcome v = ValidateWorkflow(a.file, ToPlanOptions(a), host, diags);
  if (v.exit_code != 0) {
    std::cerr << diags.Format() << std::flush;
    return v.exit_code;
  }
  ValidatedWorkflow& wf = *v.workflow;

  std::string text;
  {
    std::ifstream in(a.file, std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    if (!in || Sha256Hex(buffer.str()) != wf.spec.source_sha256) {
      std::cerr << a.file << ": error: the workflow file changed while it was being read; run it again\n";
      return kExitUsage;
    }
    text = std::move(buffer).str();
  }
  // The plan has all the run needs: the spec (a node per `needs` entry) goes now.
  std::string source_sha256 = wf.spec.source_sha256;
  wf.spec = loader::WorkflowSpec{};
#ifdef __GLIBC__
  // Loading left the heap full of small holes (the TOML DOM, the spec): give
  // them back before the run allocates, so its peak is not stacked on them.
  malloc_trim(0);
#endif

  // Only now, with a valid workflow, is anything written.
  Result<std::unique_ptr<store::Store>> store = store::Store::Open(g.state_dir);
  if (!store.ok()) {
    std::cerr << "crucible-engine: error: state directory " << g.state_dir << ": " << store.error().message << "\n";
    return kExitFailed;
  }
  std::string run_id = scheduler::NewRunId();
  std::cerr << run_id << "\n";
  std::cerr << diags.Format() << std::flush;  // warnings, after the run id line

  scheduler::RunOptions options;
  options.run_id = run_id;
  options.workflow_file = a.file;
  options.source_text = std::move(text);
  options.source_sha256 = source_sha256;
  options.max_parallel = a.max_parallel;
  options.keep_work = a.keep_work;
  options.lease_ms = LeaseMs();
  options.step_options = std::move(wf.step_options);
  return ExecuteRun(g, host, **store, wf.plan, wf.backend_options, std::move(options), a.json);
}

namespace {

/// The workflow stored with a run, planned as it was (same params, same
/// backends) and checked against the plugins; says which definition is used.
/// nullopt after printing why (*code set) when it cannot be.
std::optional<ValidatedWorkflow> PlanStoredRun(store::Store& store, const store::RunRow& run,
                                               const host::PluginHost& host, const char* verb, int* code) {
  Result<std::vector<store::StepRow>> steps = store.GetSteps(run.id);
  if (!steps.ok()) {
    *code = ReportRetryError(steps.error());
    return std::nullopt;
  }
  plan::PlanOptions plan_options;
  try {
    nlohmann::json params = nlohmann::json::parse(run.params_json);
    for (const auto& [k, v] : params.items()) {
      plan_options.params.emplace_back(k, v.is_string() ? v.get<std::string>() : v.dump());
    }
  } catch (const nlohmann::json::exception& e) {
    std::cerr << "crucible-engine: error: run " << run.id << ": unreadable params: " << e.what() << "\n";
    *code = kExitFailed;
    return std::nullopt;
  }
  Diagnostics diags(run.file);
  std::optional<loader::WorkflowSpec> spec = loader::LoadWorkflowText(run.source_text, run.file, diags);
  std::optional<plan::Plan> plan;
  if (spec) plan = PlanAsRecorded(*spec, *steps, plan_options, diags);
  if (!plan) {
    std::cerr << diags.Format() << "crucible-engine: error: run " << run.id
              << ": the workflow stored with it no longer plans to its recorded steps\n";
    *code = kExitUsage;
    return std::nullopt;
  }
  ValidatedWorkflow wf{std::move(*spec), std::move(*plan), {}, {}};
  *code = CheckBackends(wf.spec, &wf.plan, plan_options, host, diags, &wf.backend_options, &wf.step_options);
  if (*code != 0) {
    std::cerr << diags.Format() << std::flush;
    return std::nullopt;
  }
  wf.spec = loader::WorkflowSpec{};
  std::cerr << run.id << "\n";
  std::cerr << diags.Format();
  std::cerr << verb << ": using the workflow as submitted with run " << run.id << " (sha256 "
            << run.source_sha256.substr(0, 12) << ")\n";
  {
    std::ifstream in(run.file, std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    if (!in) {
      std::cerr << verb << ": " << run.file << " cannot be read now; it is not needed\n";
    } else if (Sha256Hex(buffer.str()) != run.source_sha256) {
      std::cerr << verb << ": " << run.file << " differs from it now; the file on disk is not used\n";
    }
  }
  std::cerr << std::flush;
  return wf;
}

/// Makes this process the run's owner (a new fencing token), or says why not:
/// a live owner whose lease is fresh is never displaced; one whose lease
/// expired (frozen, or on another host) only with force; a dead one at once.
std::optional<int64_t> TakeOwnership(store::Store& store, const store::RunRow& run, bool force, const char* verb,
                                     int* code) {
  const int64_t lease_ms = LeaseMs();
  int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  bool here = run.owner_host == HostName();
  bool alive = run.owner_pid > 0 && (here ? ProcessAlive(static_cast<pid_t>(run.owner_pid), run.owner_start) : true);
  bool self = here && run.owner_pid == ::getpid();
  int64_t since = run.heartbeat_at_ms > 0 ? now - run.heartbeat_at_ms : -1;
  bool expired = since < 0 || since > lease_ms;
  std::string owner = "pid " + std::to_string(run.owner_pid) + " on host \"" + run.owner_host + "\"";
  std::string beat = since < 0 ? "no heartbeat recorded" : "last heartbeat " + std::to_string(since / 1000) + " s ago";
  if (alive && !self) {
    if (!expired) {
      std::cerr << "crucible-engine: error: run " << run.id << " is owned by " << owner << " (" << beat
                << "); one engine per run: cancel it, or wait for it to end\n";
      *code = kExitFailed;
      return std::nullopt;
    }
    if (!force) {
      std::cerr << "crucible-engine: error: run " << run.id << " is owned by " << owner << " whose lease expired ("
                << beat << ", lease " << lease_ms / 1000 << " s)" << (here ? ", but the process still exists" : "")
                << "; `resume --force` takes it over (that engine then stops at its next write)\n";
      *code = kExitFailed;
      return std::nullopt;
    }
  }
  store::OwnerChange change;
  change.expect_token = run.owner_token;
  change.pid = ::getpid();
  change.host = HostName();
  change.start = ProcessStartTime(::getpid());
  change.now_ms = now;
  Result<int64_t> token = store.TakeOver(run.id, change);
  if (!token.ok()) {
    std::cerr << "crucible-engine: error: " << token.error().message << "\n";
    *code = kExitFailed;
    return std::nullopt;
  }
  if (run.owner_pid > 0 && !self) {
    std::cerr << verb << ": took run " << run.id << " over from " << owner << " ("
              << (alive ? "lease expired, forced" : "that engine is gone") << ")\n";
  }
  return *token;
}

/// The options of `retry` and `resume`: the stored run, owned with `token`.
scheduler::RunOptions StoredRunOptions(const std::string& run_id, int64_t token, int max_parallel, bool keep_work,
                                       ValidatedWorkflow& wf) {
  scheduler::RunOptions options;
  options.run_id = run_id;
  options.owner_token = token;
  options.lease_ms = LeaseMs();
  options.max_parallel = max_parallel;
  options.keep_work = keep_work;
  options.step_options = std::move(wf.step_options);
  return options;
}

/// Opens the state directory and finds the run `arg` names; the exit code when it cannot.
std::optional<int> OpenStoredRun(const GlobalOptions& g, const std::string& arg, std::unique_ptr<store::Store>* store,
                                 store::RunRow* run) {
  Result<std::unique_ptr<store::Store>> opened = OpenExistingStore(g.state_dir);
  if (!opened.ok()) return ReportRetryError(opened.error());
  Result<store::RunRow> found = (*opened)->GetRun(arg);
  if (!found.ok()) return ReportRetryError(found.error());
  *store = std::move(*opened);
  *run = std::move(*found);
  return std::nullopt;
}

}  // namespace

int CmdRetry(const GlobalOptions& g, const RetryArgs& a) {
  std::unique_ptr<store::Store> opened;
  store::RunRow run;
  if (std::optional<int> failed = OpenStoredRun(g, a.run, &opened, &run)) return *failed;
  store::Store& store = *opened;
  if (run.state != store::RunState::kFailed && run.state != store::RunState::kCancelled) {
    std::cerr << "crucible-engine: error: run " << run.id << " is " << store::ToString(run.state)
              << ": only a finished run that failed or was cancelled can be retried"
              << (run.state == store::RunState::kRunning ? " (a run whose engine died is continued with `resume`)" : "")
              << "\n";
    return kExitUsage;
  }
  host::PluginHost host = host::PluginHost::Load(host::PluginHost::DefaultSearchPath());
  int code = 0;
  std::optional<ValidatedWorkflow> wf = PlanStoredRun(store, run, host, "retry", &code);
  if (!wf) return code;
  std::optional<int64_t> token = TakeOwnership(store, run, false, "retry", &code);
  if (!token) return code;

  scheduler::RunOptions options = StoredRunOptions(run.id, *token, a.max_parallel, a.keep_work, *wf);
  options.resume_from_store = true;
  return ExecuteRun(g, host, store, wf->plan, wf->backend_options, std::move(options), a.json);
}

int CmdResume(const GlobalOptions& g, const ResumeArgs& a) {
  std::unique_ptr<store::Store> opened;
  store::RunRow run;
  if (std::optional<int> failed = OpenStoredRun(g, a.run, &opened, &run)) return *failed;
  store::Store& store = *opened;
  if (run.state != store::RunState::kRunning && run.state != store::RunState::kInterrupted) {
    std::cerr << "crucible-engine: error: run " << run.id << " has finished (" << store::ToString(run.state)
              << "): nothing to resume"
              << (run.state == store::RunState::kSucceeded ? "" : "; `retry` runs again what did not succeed") << "\n";
    return kExitUsage;
  }
  int code = 0;
  std::optional<int64_t> token = TakeOwnership(store, run, a.force, "resume", &code);
  if (!token) return code;
  CRUCIBLE_CRASH_POINT("after-takeover");
  host::PluginHost host = host::PluginHost::Load(host::PluginHost::DefaultSearchPath());
  std::optional<ValidatedWorkflow> wf = PlanStoredRun(store, run, host, "resume", &code);
  if (!wf) return code;

  scheduler::RunOptions options = StoredRunOptions(run.id, *token, a.max_parallel, a.keep_work, *wf);
  options.resume_running = true;
  return ExecuteRun(g, host, store, wf->plan, wf->backend_options, std::move(options), a.json);
}

int CancelThroughBackends(const GlobalOptions& g, const std::string& run_id) {
  std::unique_ptr<store::Store> opened;
  store::RunRow run;
  if (std::optional<int> failed = OpenStoredRun(g, run_id, &opened, &run)) return *failed;
  store::Store& store = *opened;
  int code = 0;
  std::optional<int64_t> token = TakeOwnership(store, run, false, "cancel", &code);
  if (!token) return code;
  host::PluginHost host = host::PluginHost::Load(host::PluginHost::DefaultSearchPath());
  std::optional<ValidatedWorkflow> wf = PlanStoredRun(store, run, host, "cancel", &code);
  if (!wf) return code;
  scheduler::RunOptions options = StoredRunOptions(run.id, *token, 0, false, *wf);
  options.resume_running = true;
  return ExecuteRun(g, host, store, wf->plan, wf->backend_options, std::move(options), false, true);
}

}  // namespace crucible::cli

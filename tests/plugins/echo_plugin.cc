// The "echo" fixture backend: completes every attempt at once, for tests.
//
// argv[0] decides what an attempt does:
//   a number N   exits with N (0 succeeds, anything else fails with reason exited)
//   "hang"       keeps running until cancelled
//   "throw"      Start() throws (the SDK turns it into CRUCIBLE_STATUS_ERROR)
//   "unavailable" Start() throws sdk::Unavailable
//   "unset"      Poll() reports a result without an outcome
//   anything else succeeds
// Every finished attempt has the outputs "k=v"; with a log_path, the log holds
// the argv joined by spaces. Options cover every declared type for tests.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "crucible/backend_sdk.hpp"

namespace {

namespace sdk = crucible::sdk;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool IsNumber(const std::string& s) {
  if (s.empty() || s.size() > 9) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

/// One echo instance.
class EchoBackend : public sdk::Backend {
 public:
  EchoBackend(const sdk::Host& host, const sdk::Options& options) : host_(host), options_(options) {
    if (options_.Bool("fail_create")) throw std::runtime_error("echo: asked to fail in create");
    max_parallel_ = options_.Int("max_parallel", -1);
    host_.Log(CRUCIBLE_LOG_INFO, "echo: created for run " + host_.run_id());
  }

  int64_t Capacity() override {
    if (max_parallel_ < 0) return -1;
    return max_parallel_ - static_cast<int64_t>(ready_.size() + hanging_.size());
  }

  std::string Start(const sdk::Launch& launch) override {
    std::string first = launch.argv.empty() ? "" : launch.argv[0];
    if (first == "throw") throw std::runtime_error("echo: asked to throw");
    if (first == "unavailable") throw sdk::Unavailable("echo: substrate unreachable (asked to be)");
    sdk::Result r;
    r.attempt_key = launch.attempt_key;
    r.started_at_ms = NowMs();
    r.outputs_text = "k=v";
    if (!launch.log_path.empty()) {
      std::string text;
      for (size_t i = 0; i < launch.argv.size(); ++i) text += (i ? " " : "") + launch.argv[i];
      text += "\n";
      std::ofstream log(launch.log_path, std::ios::binary);
      log << text;
      r.log_bytes_kept = text.size();
    }
    if (first == "hang") {
      hanging_[launch.attempt_key] = r;
    } else {
      if (first == "unset") {
        r.outcome = CRUCIBLE_OUTCOME_UNSET;
      } else {
        r.exit_code = IsNumber(first) ? std::stoi(first) : 0;
        r.outcome = r.exit_code == 0 ? CRUCIBLE_OUTCOME_SUCCEEDED : CRUCIBLE_OUTCOME_FAILED;
        r.reason = r.exit_code == 0 ? CRUCIBLE_REASON_NONE : CRUCIBLE_REASON_EXITED;
      }
      r.ended_at_ms = NowMs();
      ready_.push_back(r);
      host_.Wake();
    }
    return "echo:" + launch.run_id + ":" + launch.step_id + ":" + std::to_string(launch.attempt);
  }

  int Poll(int /*timeout_ms*/, sdk::ResultSink& sink) override {
    std::vector<sdk::Result> ready;
    ready.swap(ready_);
    for (const sdk::Result& r : ready) sink.Emit(r);
    return static_cast<int>(ready.size());
  }

  void Cancel(uint64_t attempt_key, int64_t /*grace_ms*/) override {
    auto it = hanging_.find(attempt_key);
    if (it == hanging_.end()) return;
    sdk::Result r = it->second;
    hanging_.erase(it);
    r.outcome = CRUCIBLE_OUTCOME_CANCELLED;
    r.reason = CRUCIBLE_REASON_CANCELLED;
    r.exit_code = -1;
    r.signal = 15;
    r.ended_at_ms = NowMs();
    r.message = "cancelled by the engine";
    ready_.push_back(r);
    host_.Wake();
  }

 private:
  sdk::Host host_;
  sdk::Options options_;
  int64_t max_parallel_ = -1;
  std::vector<sdk::Result> ready_;
  std::map<uint64_t, sdk::Result> hanging_;
};

void Describe(std::string& text) { text = "echo: completes every attempt at once; for tests"; }

void CheckStep(const sdk::StepCheck& step, sdk::DiagSink& sink) {
  if (step.image == "forbidden") sink.Error("image", "echo cannot run image \"forbidden\"");
  if (step.memory_bytes > (int64_t{1} << 30)) sink.Warning("resources.memory", "echo ignores memory over 1Gi");
}

constexpr crucible_option_decl kOptions[] = {
    sdk::Option("namespace", CRUCIBLE_OPTION_STRING, CRUCIBLE_SCOPE_BACKEND, "a string"),
    sdk::Option("max_parallel", CRUCIBLE_OPTION_INT, CRUCIBLE_SCOPE_BACKEND, "attempts at once"),
    sdk::Option("verbose", CRUCIBLE_OPTION_BOOL, CRUCIBLE_SCOPE_BACKEND, "a boolean"),
    sdk::Option("ratio", CRUCIBLE_OPTION_FLOAT, CRUCIBLE_SCOPE_BACKEND, "a float"),
    sdk::Option("delay", CRUCIBLE_OPTION_DURATION, CRUCIBLE_SCOPE_BACKEND, "a duration"),
    sdk::Option("tags", CRUCIBLE_OPTION_STRING_LIST, CRUCIBLE_SCOPE_BACKEND, "a list"),
    sdk::Option("labels", CRUCIBLE_OPTION_STRING_MAP, CRUCIBLE_SCOPE_BACKEND, "a map"),
    sdk::Option("fail_create", CRUCIBLE_OPTION_BOOL, CRUCIBLE_SCOPE_BACKEND, "create() throws"),
    sdk::Option("node_selector", CRUCIBLE_OPTION_STRING_MAP, CRUCIBLE_SCOPE_STEP, "a per-step map"),
    sdk::Option("priority", CRUCIBLE_OPTION_INT, CRUCIBLE_SCOPE_STEP, "a per-step integer"),
};

}  // namespace

CRUCIBLE_DEFINE_BACKEND(EchoBackend, "echo", "1.0.0", "completes every attempt at once (test fixture)", kOptions,
                        CRUCIBLE_DESCRIBE(Describe), CRUCIBLE_CHECK_STEP(CheckStep))

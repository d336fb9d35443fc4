// A sample backend: "runs" each attempt by writing its argv to the log and
// reporting success, with the argv's length as an output. It shows the whole
// SDK surface: declared options, describe, check_step, start, poll, cancel.
#include <deque>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>

#include <crucible/backend_sdk.hpp>

namespace {

using crucible::sdk::Backend;
using crucible::sdk::DiagSink;
using crucible::sdk::Host;
using crucible::sdk::Launch;
using crucible::sdk::Options;
using crucible::sdk::Result;
using crucible::sdk::ResultSink;
using crucible::sdk::StepCheck;

const crucible_option_decl kOptions[] = {
    crucible::sdk::Option("greeting", CRUCIBLE_OPTION_STRING, CRUCIBLE_SCOPE_BACKEND,
                          "a line written at the top of every log"),
    crucible::sdk::Option("max_argc", CRUCIBLE_OPTION_INT, CRUCIBLE_SCOPE_STEP,
                          "refuse steps with more arguments than this"),
};

class SampleBackend : public Backend {
 public:
  SampleBackend(const Host& host, const Options& options)
      : host_(host), greeting_(options.String("greeting", "sample backend")) {}

  std::string Start(const Launch& launch) override {
    int64_t max_argc = launch.step_options.Int("max_argc", 0);
    if (max_argc > 0 && static_cast<int64_t>(launch.argv.size()) > max_argc) {
      // The SDK turns the exception into CRUCIBLE_STATUS_ERROR with this message.
      throw std::runtime_error("too many arguments for the sample backend");
    }
    std::ofstream log(launch.log_path);
    log << greeting_ << "\n";
    std::string joined;
    for (const std::string& arg : launch.argv) joined += (joined.empty() ? "" : " ") + arg;
    log << joined << "\n";
    Result r;
    r.attempt_key = launch.attempt_key;
    r.outcome = CRUCIBLE_OUTCOME_SUCCEEDED;
    r.reason = CRUCIBLE_REASON_NONE;
    r.exit_code = 0;
    r.log_bytes_kept = greeting_.size() + joined.size() + 2;
    r.outputs_text = "argc=" + std::to_string(launch.argv.size()) + "\n";
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_.push_back(r);
    }
    host_.Wake();
    return "sample:" + std::to_string(launch.attempt_key);
  }

  int Poll(int /*timeout_ms*/, ResultSink& sink) override {
    std::deque<Result> ready;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready.swap(done_);
    }
    for (const Result& r : ready) sink.Emit(r);
    return static_cast<int>(ready.size());
  }

  void Cancel(uint64_t /*attempt_key*/, int64_t /*grace_ms*/) override {}  // attempts end at once

 private:
  Host host_;
  std::string greeting_;
  std::mutex mu_;
  std::deque<Result> done_;
};

void Describe(std::string& out) { out = "writes argv to the log; runs nothing"; }

void CheckStep(const StepCheck& step, DiagSink& diags) {
  if (step.memory_bytes > 0) diags.Warning("resources.memory", "the sample backend enforces no memory limit");
}

}  // namespace

CRUCIBLE_DEFINE_BACKEND(SampleBackend, "sample", "1.0.0", "a sample backend built out of tree", kOptions,
                        CRUCIBLE_DESCRIBE(Describe), CRUCIBLE_CHECK_STEP(CheckStep))

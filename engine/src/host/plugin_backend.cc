// Plugin and Backend over a plugin's C table: engine types in, C structs out.
#include <spdlog/logger.h>
#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstring>
#include <exception>

#include "host/plugin_impl.h"

namespace crucible::host::internal {

namespace {

/// C views of OptionValues; valid while this object and the values live.
class COptionValues {
 public:
  explicit COptionValues(const std::vector<OptionValue>& values) {
    values_.reserve(values.size());
    lists_.reserve(values.size());
    maps_.reserve(values.size());
    for (const OptionValue& v : values) {
      crucible_option_value c;
      std::memset(&c, 0, sizeof c);
      c.struct_size = sizeof c;
      c.name = v.name.c_str();
      c.type = v.type;
      c.string_value = v.string_value.c_str();
      c.int_value = v.int_value;
      c.float_value = v.float_value;
      std::vector<const char*>& list = lists_.emplace_back();
      for (const std::string& s : v.list) list.push_back(s.c_str());
      std::vector<crucible_kv>& map = maps_.emplace_back();
      for (const auto& [k, val] : v.map) map.push_back(crucible_kv{k.c_str(), val.c_str()});
      c.list = list.empty() ? nullptr : list.data();
      c.list_len = list.size();
      c.map = map.empty() ? nullptr : map.data();
      c.map_len = map.size();
      values_.push_back(c);
    }
  }
  const crucible_option_value* data() const { return values_.empty() ? nullptr : values_.data(); }
  size_t size() const { return values_.size(); }

 private:
  std::vector<crucible_option_value> values_;
  std::vector<std::vector<const char*>> lists_;
  std::vector<std::vector<crucible_kv>> maps_;
};

/// The text of a C message buffer, or `fallback` when the plugin wrote none.
std::string MessageOr(const char* buf, const std::string& fallback) {
  return buf[0] != '\0' ? std::string(buf) : fallback;
}

/// Converts what a plugin handed to the result sink (struct_size respected).
AttemptResult ToAttemptResult(const crucible_attempt_result* in) {
  crucible_attempt_result c;
  std::memset(&c, 0, sizeof c);
  size_t n = in->struct_size < sizeof c ? in->struct_size : sizeof c;
  std::memcpy(&c, in, n);
  AttemptResult r;
  r.attempt_key = c.attempt_key;
  r.outcome = c.outcome;
  r.reason = c.reason;
  r.exit_code = c.exit_code;
  r.signal = c.signal;
  r.started_at_ms = c.started_at_ms;
  r.ended_at_ms = c.ended_at_ms;
  r.log_bytes_kept = c.log_bytes_kept;
  r.log_bytes_dropped = c.log_bytes_dropped;
  if (c.outputs_text != nullptr) r.outputs_text = std::string(c.outputs_text, c.outputs_len);
  if (c.message != nullptr) r.message = c.message;
  bool known_outcome = c.outcome == CRUCIBLE_OUTCOME_SUCCEEDED || c.outcome == CRUCIBLE_OUTCOME_FAILED ||
                       c.outcome == CRUCIBLE_OUTCOME_CANCELLED;
  if (!known_outcome) {
    // Zeroed or garbage memory never reads as success.
    r.outcome = CRUCIBLE_OUTCOME_FAILED;
    r.reason = CRUCIBLE_REASON_BACKEND_ERROR;
    r.message = c.outcome == CRUCIBLE_OUTCOME_UNSET
                    ? "plugin returned an attempt result without an outcome"
                    : "plugin returned an attempt result with an unknown outcome " + std::to_string(c.outcome);
  } else if (c.reason <= CRUCIBLE_REASON_UNSET || c.reason > CRUCIBLE_REASON_SIGNALED) {
    switch (c.outcome) {
      case CRUCIBLE_OUTCOME_SUCCEEDED: r.reason = CRUCIBLE_REASON_NONE; break;
      case CRUCIBLE_OUTCOME_CANCELLED: r.reason = CRUCIBLE_REASON_CANCELLED; break;
      default: r.reason = r.exit_code > 0 ? CRUCIBLE_REASON_EXITED : CRUCIBLE_REASON_BACKEND_ERROR; break;
    }
  }
  return r;
}

std::shared_ptr<spdlog::logger> PluginLogger(const std::string& name) {
  std::shared_ptr<spdlog::logger> logger = spdlog::get(name);
  if (logger) return logger;
  return spdlog::default_logger()->clone(name);
}

/// One backend instance over the C table.
class PluginBackend : public Backend {
 public:
  PluginBackend(std::shared_ptr<const void> library, const crucible_backend_api& api, std::string name,
                std::string state_dir, std::string run_id, WakeFn wake, int wake_fd)
      : library_(std::move(library)),
        api_(api),
        name_(std::move(name)),
        state_dir_(std::move(state_dir)),
        run_id_(std::move(run_id)),
        wake_(std::move(wake)),
        logger_(PluginLogger(name_)) {
    std::memset(&host_, 0, sizeof host_);
    host_.struct_size = sizeof host_;
    host_.ctx = this;
    host_.wake = &PluginBackend::WakeTrampoline;
    host_.log = &PluginBackend::LogTrampoline;
    host_.state_dir = state_dir_.c_str();
    host_.run_id = run_id_.c_str();
    host_.wake_fd = wake_fd;
  }

  ~PluginBackend() override {
    if (instance_ != nullptr) api_.destroy(instance_);
  }

  /// Calls create(); on failure returns the plugin's message.
  Status Init(const std::vector<OptionValue>& options) {
    COptionValues c(options);
    char err[CRUCIBLE_MESSAGE_CAP] = {0};
    instance_ = api_.create(&host_, c.data(), c.size(), err, sizeof err);
    if (instance_ == nullptr) {
      return MakeError(ErrorCode::kUnavailable,
                       "backend \"" + name_ + "\": " + MessageOr(err, "create failed without a message"));
    }
    return Ok{};
  }

  const std::string& name() const override { return name_; }

  int64_t Capacity() override { return api_.capacity(instance_); }

  Result<std::string> Start(const LaunchSpec& l) override {
    std::vector<const char*> argv;
    argv.reserve(l.argv.size() + 1);
    for (const std::string& a : l.argv) argv.push_back(a.c_str());
    argv.push_back(nullptr);
    std::vector<crucible_kv> env;
    env.reserve(l.env.size());
    for (const auto& [k, v] : l.env) env.push_back(crucible_kv{k.c_str(), v.c_str()});
    std::vector<crucible_input_file> inputs;
    inputs.reserve(l.inputs.size());
    for (const auto& [src, dest] : l.inputs) inputs.push_back(crucible_input_file{src.c_str(), dest.c_str()});
    COptionValues step_options(l.step_options);

    crucible_attempt_launch c;
    std::memset(&c, 0, sizeof c);
    c.struct_size = sizeof c;
    c.attempt_key = l.attempt_key;
    c.run_id = l.run_id.c_str();
    c.step_id = l.step_id.c_str();
    c.attempt = l.attempt;
    c.argv = argv.data();
    c.argc = l.argv.size();
    c.env = env.empty() ? nullptr : env.data();
    c.env_len = env.size();
    c.inputs = inputs.empty() ? nullptr : inputs.data();
    c.inputs_len = inputs.size();
    c.upstream_json = l.upstream_json ? l.upstream_json->c_str() : nullptr;
    c.work_dir = l.work_dir.c_str();
    c.log_path = l.log_path.c_str();
    c.log_cap_bytes = l.log_cap_bytes;
    c.output_cap_bytes = l.output_cap_bytes;
    c.timeout_ms = l.timeout_ms;
    c.cpu_millicores = l.cpu_millicores;
    c.memory_bytes = l.memory_bytes;
    c.keep_work = l.keep_work ? 1 : 0;
    c.image = l.image.c_str();
    c.step_options = step_options.data();
    c.step_options_len = step_options.size();

    char handle[CRUCIBLE_HANDLE_CAP] = {0};
    char err[CRUCIBLE_MESSAGE_CAP] = {0};
    crucible_status status = api_.start(instance_, &c, handle, sizeof handle, err, sizeof err);
    handle[sizeof handle - 1] = '\0';
    err[sizeof err - 1] = '\0';
    switch (status) {
      case CRUCIBLE_STATUS_OK:
        return std::string(handle);
      case CRUCIBLE_STATUS_UNAVAILABLE:
        return MakeError(ErrorCode::kUnavailable,
                         "backend \"" + name_ + "\" unavailable: " + MessageOr(err, "start failed without a message"));
      case CRUCIBLE_STATUS_UNSUPPORTED:
        return MakeError(ErrorCode::kInternal, "backend \"" + name_ + "\" does not support start: " +
                                                   MessageOr(err, "no message"));
      default:
        return MakeError(ErrorCode::kInternal, "backend \"" + name_ + "\" failed to start " + l.step_id + ": " +
                                                   MessageOr(err, "start failed without a message"));
    }
  }

  Status Poll(int timeout_ms, std::vector<AttemptResult>& out) override {
    SinkContext ctx{&out, false};
    crucible_result_sink sink{&ctx, &PluginBackend::ResultTrampoline};
    int n = api_.poll(instance_, timeout_ms, &sink);
    if (ctx.failed) {
      return MakeError(ErrorCode::kInternal, "backend \"" + name_ + "\": could not take a result from poll");
    }
    if (n < 0) return MakeError(ErrorCode::kInternal, "backend \"" + name_ + "\": poll failed");
    return Ok{};
  }

  void Cancel(uint64_t attempt_key, int64_t grace_ms) override {
    crucible_status s = api_.cancel(instance_, attempt_key, grace_ms);
    if (s != CRUCIBLE_STATUS_OK) {
      logger_->warn("cancel failed attempt_key={} status={}", attempt_key, static_cast<int>(s));
    }
  }

  Result<bool> Adopt(const std::vector<AdoptItem>& items) override {
    if (api_.struct_size < offsetof(crucible_backend_api, adopt) + sizeof api_.adopt || api_.adopt == nullptr) {
      return false;
    }
    std::vector<crucible_adopt_item> c(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      std::memset(&c[i], 0, sizeof c[i]);
      c[i].struct_size = sizeof c[i];
      c[i].attempt_key = items[i].attempt_key;
      c[i].handle = items[i].handle.c_str();
      c[i].step_id = items[i].step_id.c_str();
      c[i].attempt = items[i].attempt;
    }
    char err[CRUCIBLE_MESSAGE_CAP] = {0};
    crucible_status s = api_.adopt(instance_, c.empty() ? nullptr : c.data(), c.size(), err, sizeof err);
    err[sizeof err - 1] = '\0';
    switch (s) {
      case CRUCIBLE_STATUS_OK: return true;
      case CRUCIBLE_STATUS_UNSUPPORTED: return false;
      case CRUCIBLE_STATUS_UNAVAILABLE:
        return MakeError(ErrorCode::kUnavailable, "backend \"" + name_ + "\" unavailable: " + MessageOr(err, "adopt failed"));
      default:
        return MakeError(ErrorCode::kInternal, "backend \"" + name_ + "\": " + MessageOr(err, "adopt failed without a message"));
    }
  }

 private:
  struct SinkContext {
    std::vector<AttemptResult>* out;
    bool failed;
  };

  static void WakeTrampoline(void* ctx) {
    auto* self = static_cast<PluginBackend*>(ctx);
    if (self->wake_) self->wake_();
  }

  static void LogTrampoline(void* ctx, crucible_log_level level, const char* message) {
    auto* self = static_cast<PluginBackend*>(ctx);
    try {
      const char* text = message ? message : "";
      switch (level) {
        case CRUCIBLE_LOG_DEBUG: self->logger_->debug("{}", text); break;
        case CRUCIBLE_LOG_WARN: self->logger_->warn("{}", text); break;
        case CRUCIBLE_LOG_ERROR: self->logger_->error("{}", text); break;
        default: self->logger_->info("{}", text); break;
      }
    } catch (...) {
      // Nothing may unwind into plugin code.
    }
  }

  static void ResultTrampoline(void* ctx, const crucible_attempt_result* result) {
    auto* sink = static_cast<SinkContext*>(ctx);
    if (result == nullptr) return;
    try {
      sink->out->push_back(ToAttemptResult(result));
    } catch (...) {
      sink->failed = true;  // nothing may unwind into plugin code
    }
  }

  std::shared_ptr<const void> library_;  // first: released last
  crucible_backend_api api_;
  std::string name_;
  std::string state_dir_;
  std::string run_id_;
  WakeFn wake_;
  std::shared_ptr<spdlog::logger> logger_;
  crucible_host host_;
  void* instance_ = nullptr;
};

/// A loaded plugin.
class PluginImpl : public Plugin {
 public:
  PluginImpl(std::shared_ptr<const void> library, const crucible_backend_api& api,
             std::vector<crucible_option_decl> options, std::string path)
      : library_(std::move(library)),
        api_(api),
        name_(api.name),
        version_(api.version ? api.version : ""),
        description_(api.description ? api.description : ""),
        path_(std::move(path)),
        options_(std::move(options)) {}

  const std::string& name() const override { return name_; }
  const std::string& version() const override { return version_; }
  const std::string& path() const override { return path_; }
  std::string abi() const override { return std::to_string(api_.abi_major) + "." + std::to_string(api_.abi_minor); }
  const std::string& description() const override { return description_; }
  const std::vector<crucible_option_decl>& options() const override { return options_; }

  std::string Describe() const override {
    if (api_.describe == nullptr) return "";
    std::vector<char> buf(4 * CRUCIBLE_MESSAGE_CAP, '\0');
    api_.describe(buf.data(), buf.size());
    buf.back() = '\0';
    return std::string(buf.data());
  }

  std::vector<StepFinding> CheckStep(const std::string& step_id, const std::string& image, int64_t cpu_millicores,
                                     int64_t memory_bytes, int64_t timeout_ms,
                                     const std::vector<OptionValue>& backend_options,
                                     const std::vector<OptionValue>& step_options) const override {
    std::vector<StepFinding> findings;
    if (api_.check_step == nullptr) return findings;
    COptionValues backend_c(backend_options);
    COptionValues step_c(step_options);
    crucible_step_check c;
    std::memset(&c, 0, sizeof c);
    c.struct_size = sizeof c;
    c.step_id = step_id.c_str();
    c.image = image.c_str();
    c.cpu_millicores = cpu_millicores;
    c.memory_bytes = memory_bytes;
    c.timeout_ms = timeout_ms;
    c.backend_options = backend_c.data();
    c.backend_options_len = backend_c.size();
    c.step_options = step_c.data();
    c.step_options_len = step_c.size();
    crucible_diag_sink sink{&findings, &PluginImpl::ReportTrampoline};
    crucible_status s = api_.check_step(&c, &sink);
    if (s != CRUCIBLE_STATUS_OK && s != CRUCIBLE_STATUS_UNSUPPORTED) {
      findings.push_back(StepFinding{CRUCIBLE_SEVERITY_ERROR, "",
                                     "backend \"" + name_ + "\" failed while checking this step"});
    }
    return findings;
  }

  Result<std::unique_ptr<Backend>> Create(const std::vector<OptionValue>& options, const std::string& state_dir,
                                          const std::string& run_id, WakeFn wake, int wake_fd) const override {
    auto backend = std::make_unique<PluginBackend>(library_, api_, name_, state_dir, run_id, std::move(wake), wake_fd);
    Status s = backend->Init(options);
    if (!s.ok()) return s.error();
    return std::unique_ptr<Backend>(std::move(backend));
  }

 private:
  static void ReportTrampoline(void* ctx, crucible_severity severity, const char* field, const char* message) {
    auto* findings = static_cast<std::vector<StepFinding>*>(ctx);
    try {
      crucible_severity sev = severity == CRUCIBLE_SEVERITY_WARNING ? CRUCIBLE_SEVERITY_WARNING
                                                                    : CRUCIBLE_SEVERITY_ERROR;
      findings->push_back(StepFinding{sev, field ? field : "", message ? message : ""});
    } catch (...) {
      // Nothing may unwind into plugin code.
    }
  }

  std::shared_ptr<const void> library_;  // first: released last
  crucible_backend_api api_;
  std::string name_;
  std::string version_;
  std::string description_;
  std::string path_;
  std::vector<crucible_option_decl> options_;
};

}  // namespace

std::unique_ptr<Plugin> MakePlugin(std::shared_ptr<const void> library, const crucible_backend_api& api,
                                   std::vector<crucible_option_decl> options, std::string path) {
  return std::make_unique<PluginImpl>(std::move(library), api, std::move(options), std::move(path));
}

}  // namespace crucible::host::internal

// crucible-engine backend SDK: a header-only C++17 wrapper of backend_abi.h.
//
// A plugin derives from crucible::sdk::Backend and names itself with
// CRUCIBLE_DEFINE_BACKEND. The SDK builds the C table, copies the C structs
// into C++ values, and catches every exception at the boundary: an exception
// from Start() becomes CRUCIBLE_STATUS_ERROR with its what() as the message;
// one from Poll() becomes -1.
//
//   class MyBackend : public crucible::sdk::Backend {
//    public:
//     explicit MyBackend(const crucible::sdk::Host& host, const crucible::sdk::Options& options);
//     std::string Start(const crucible::sdk::Launch& launch) override;  // returns the handle
//     int Poll(int timeout_ms, crucible::sdk::ResultSink& sink) override;
//     void Cancel(uint64_t attempt_key, int64_t grace_ms) override;
//   };
//   static const crucible_option_decl kOptions[] = {...};
//   CRUCIBLE_DEFINE_BACKEND(MyBackend, "mine", "1.0.0", "what it does", kOptions)
//
// Thread-safety: the engine calls a Backend from one thread; Host::Wake() may
// be called from any thread.
#ifndef CRUCIBLE_BACKEND_SDK_HPP_
#define CRUCIBLE_BACKEND_SDK_HPP_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "crucible/backend_abi.h"

namespace crucible {
namespace sdk {

/// Copies a message into a C buffer, truncating and always NUL-terminating.
inline void CopyOut(const std::string& text, char* buf, size_t cap) {
  if (buf == nullptr || cap == 0) return;
  size_t n = text.size() < cap - 1 ? text.size() : cap - 1;
  std::memcpy(buf, text.data(), n);
  buf[n] = '\0';
}

/// One validated option value, copied out of the engine's C struct.
struct OptionValue {
  crucible_option_type type = CRUCIBLE_OPTION_UNSET;
  std::string string_value;
  int64_t int_value = 0;
  double float_value = 0;
  std::vector<std::string> list;
  std::map<std::string, std::string> map;
};

/// Options by name; absent options are not in the map.
class Options {
 public:
  Options() = default;
  Options(const crucible_option_value* values, size_t len) {
    for (size_t i = 0; i < len; ++i) {
      const crucible_option_value& v = values[i];
      OptionValue o;
      o.type = v.type;
      if (v.string_value) o.string_value = v.string_value;
      o.int_value = v.int_value;
      o.float_value = v.float_value;
      for (size_t j = 0; j < v.list_len; ++j) o.list.emplace_back(v.list[j]);
      for (size_t j = 0; j < v.map_len; ++j) o.map[v.map[j].key] = v.map[j].value;
      values_[v.name] = std::move(o);
    }
  }
  bool Has(const std::string& name) const { return values_.count(name) != 0; }
  const OptionValue* Find(const std::string& name) const {
    auto it = values_.find(name);
    return it == values_.end() ? nullptr : &it->second;
  }
  std::string String(const std::string& name, const std::string& fallback = "") const {
    const OptionValue* v = Find(name);
    return v ? v->string_value : fallback;
  }
  int64_t Int(const std::string& name, int64_t fallback = 0) const {
    const OptionValue* v = Find(name);
    return v ? v->int_value : fallback;
  }
  bool Bool(const std::string& name, bool fallback = false) const {
    const OptionValue* v = Find(name);
    return v ? v->int_value != 0 : fallback;
  }
  double Float(const std::string& name, double fallback = 0) const {
    const OptionValue* v = Find(name);
    return v ? v->float_value : fallback;
  }
  const std::map<std::string, OptionValue>& all() const { return values_; }

 private:
  std::map<std::string, OptionValue> values_;
};

/// What the engine offers a backend instance.
class Host {
 public:
  explicit Host(const crucible_host* host) : host_(*host) {
    state_dir_ = host->state_dir ? host->state_dir : "";
    run_id_ = host->run_id ? host->run_id : "";
  }
  /// Tells the engine poll() has results. Safe from any thread.
  void Wake() const {
    if (host_.wake) host_.wake(host_.ctx);
  }
  /// One log line under the plugin's name. Scheduler thread only.
  void Log(crucible_log_level level, const std::string& message) const {
    if (host_.log) host_.log(host_.ctx, level, message.c_str());
  }
  const std::string& state_dir() const { return state_dir_; }
  const std::string& run_id() const { return run_id_; }
  /// The engine's wake eventfd (see crucible_host.wake_fd), -1 when it gives none.
  int wake_fd() const {
    if (host_.struct_size < offsetof(crucible_host, wake_fd) + sizeof(int) || host_.wake_fd <= 0) return -1;
    return host_.wake_fd;
  }

 private:
  crucible_host host_;
  std::string state_dir_;
  std::string run_id_;
};

/// One attempt recorded as running by an earlier engine, for Adopt().
struct AdoptItem {
  uint64_t attempt_key = 0;  ///< the key this engine uses for it
  std::string handle;        ///< as start() returned it; empty when never recorded
  std::string step_id;
  uint32_t attempt = 0;
};

struct InputFile {
  std::string source;  ///< absolute path
  std::string dest;    ///< relative path in the working directory
};

/// One attempt to start, copied out of crucible_attempt_launch.
struct Launch {
  uint64_t attempt_key = 0;
  std::string run_id;
  std::string step_id;
  uint32_t attempt = 0;
  std::vector<std::string> argv;
  std::vector<std::pair<std::string, std::string>> env;
  std::vector<InputFile> inputs;
  std::optional<std::string> upstream_json;
  std::string work_dir;
  std::string log_path;
  uint64_t log_cap_bytes = 0;
  uint64_t output_cap_bytes = 0;
  int64_t timeout_ms = 0;
  int64_t cpu_millicores = 0;
  int64_t memory_bytes = 0;
  bool keep_work = false;
  std::string image;
  Options step_options;

  static Launch FromC(const crucible_attempt_launch& c) {
    Launch l;
    l.attempt_key = c.attempt_key;
    l.run_id = c.run_id ? c.run_id : "";
    l.step_id = c.step_id ? c.step_id : "";
    l.attempt = c.attempt;
    l.argv.reserve(c.argc);
    for (size_t i = 0; i < c.argc; ++i) l.argv.emplace_back(c.argv[i]);
    l.env.reserve(c.env_len);
    for (size_t i = 0; i < c.env_len; ++i) l.env.emplace_back(c.env[i].key, c.env[i].value);
    for (size_t i = 0; i < c.inputs_len; ++i) l.inputs.push_back({c.inputs[i].source, c.inputs[i].dest});
    if (c.upstream_json) l.upstream_json = std::string(c.upstream_json);
    l.work_dir = c.work_dir ? c.work_dir : "";
    l.log_path = c.log_path ? c.log_path : "";
    l.log_cap_bytes = c.log_cap_bytes;
    l.output_cap_bytes = c.output_cap_bytes;
    l.timeout_ms = c.timeout_ms;
    l.cpu_millicores = c.cpu_millicores;
    l.memory_bytes = c.memory_bytes;
    l.keep_work = c.keep_work != 0;
    l.image = c.image ? c.image : "";
    l.step_options = Options(c.step_options, c.step_options_len);
    return l;
  }
};

/// A finished attempt, as a plugin reports it.
struct Result {
  uint64_t attempt_key = 0;
  crucible_outcome outcome = CRUCIBLE_OUTCOME_UNSET;
  crucible_reason reason = CRUCIBLE_REASON_UNSET;
  int exit_code = -1;
  int signal = 0;
  int64_t started_at_ms = 0;
  int64_t ended_at_ms = 0;
  uint64_t log_bytes_kept = 0;
  uint64_t log_bytes_dropped = 0;
  std::optional<std::string> outputs_text;
  std::string message;
};

/// Where Poll() hands finished attempts.
class ResultSink {
 public:
  explicit ResultSink(const crucible_result_sink* sink) : sink_(sink) {}
  void Emit(const Result& r) {
    crucible_attempt_result c;
    std::memset(&c, 0, sizeof c);
    c.struct_size = sizeof c;
    c.attempt_key = r.attempt_key;
    c.outcome = r.outcome;
    c.reason = r.reason;
    c.exit_code = r.exit_code;
    c.signal = r.signal;
    c.started_at_ms = r.started_at_ms;
    c.ended_at_ms = r.ended_at_ms;
    c.log_bytes_kept = r.log_bytes_kept;
    c.log_bytes_dropped = r.log_bytes_dropped;
    if (r.outputs_text) {
      c.outputs_text = r.outputs_text->c_str();
      c.outputs_len = r.outputs_text->size();
    }
    c.message = r.message.empty() ? nullptr : r.message.c_str();
    sink_->on_result(sink_->ctx, &c);
    ++count_;
  }
  int count() const { return count_; }

 private:
  const crucible_result_sink* sink_;
  int count_ = 0;
};

/// A step as validation sees it.
struct StepCheck {
  std::string step_id;
  std::string image;
  int64_t cpu_millicores = 0;
  int64_t memory_bytes = 0;
  int64_t timeout_ms = 0;
  Options backend_options;
  Options step_options;
};

/// Where CheckStep() reports findings.
class DiagSink {
 public:
  explicit DiagSink(const crucible_diag_sink* sink) : sink_(sink) {}
  void Error(const std::string& field, const std::string& message) {
    sink_->report(sink_->ctx, CRUCIBLE_SEVERITY_ERROR, field.c_str(), message.c_str());
  }
  void Warning(const std::string& field, const std::string& message) {
    sink_->report(sink_->ctx, CRUCIBLE_SEVERITY_WARNING, field.c_str(), message.c_str());
  }

 private:
  const crucible_diag_sink* sink_;
};

/// Thrown by a backend for an infrastructure failure (maps to CRUCIBLE_STATUS_UNAVAILABLE).
class Unavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Base class of every backend instance (one per run).
class Backend {
 public:
  virtual ~Backend() = default;
  /// How many more attempts it accepts now; negative: no limit of its own.
  virtual int64_t Capacity() { return -1; }
  /// Starts one attempt, returns at once with the durable handle. Throws on failure.
  virtual std::string Start(const Launch& launch) = 0;
  /// Emits finished attempts; waits up to timeout_ms when none is ready. Returns how many.
  virtual int Poll(int timeout_ms, ResultSink& sink) = 0;
  /// Asks one attempt to stop; its result still comes through Poll.
  virtual void Cancel(uint64_t attempt_key, int64_t grace_ms) = 0;
  /// Follows attempts recorded by an earlier engine: report each through Poll
  /// when it ends, or at once as CRUCIBLE_REASON_LOST when it is gone.
  /// Default: unsupported (the engine records them lost).
  virtual bool Adopt(const std::vector<AdoptItem>& /*items*/) { return false; }
};

namespace detail {

template <typename T>
struct Trampolines {
  static void* Create(const crucible_host* host, const crucible_option_value* options, size_t options_len,
                      char* err, size_t err_cap) {
    try {
      return new T(Host(host), Options(options, options_len));
    } catch (const std::exception& e) {
      CopyOut(e.what(), err, err_cap);
    } catch (...) {
      CopyOut("unknown exception in create", err, err_cap);
    }
    return nullptr;
  }
  static void Destroy(void* backend) {
    try {
      delete static_cast<T*>(backend);
    } catch (...) {
    }
  }
  static int64_t Capacity(void* backend) {
    try {
      return static_cast<T*>(backend)->Capacity();
    } catch (...) {
      return 0;
    }
  }
  static crucible_status Start(void* backend, const crucible_attempt_launch* launch, char* handle,
                               size_t handle_cap, char* err, size_t err_cap) {
    try {
      std::string h = static_cast<T*>(backend)->Start(Launch::FromC(*launch));
      CopyOut(h, handle, handle_cap);
      return CRUCIBLE_STATUS_OK;
    } catch (const Unavailable& e) {
      CopyOut(e.what(), err, err_cap);
      return CRUCIBLE_STATUS_UNAVAILABLE;
    } catch (const std::exception& e) {
      CopyOut(e.what(), err, err_cap);
    } catch (...) {
      CopyOut("unknown exception in start", err, err_cap);
    }
    return CRUCIBLE_STATUS_ERROR;
  }
  static int Poll(void* backend, int timeout_ms, const crucible_result_sink* sink) {
    try {
      ResultSink s(sink);
      return static_cast<T*>(backend)->Poll(timeout_ms, s);
    } catch (...) {
      return -1;
    }
  }
  static crucible_status Cancel(void* backend, uint64_t attempt_key, int64_t grace_ms) {
    try {
      static_cast<T*>(backend)->Cancel(attempt_key, grace_ms);
      return CRUCIBLE_STATUS_OK;
    } catch (...) {
      return CRUCIBLE_STATUS_ERROR;
    }
  }
  static crucible_status Adopt(void* backend, const crucible_adopt_item* items, size_t len, char* err,
                               size_t err_cap) {
    try {
      std::vector<AdoptItem> v;
      const char* base = reinterpret_cast<const char*>(items);
      size_t stride = len > 0 ? items[0].struct_size : 0;
      for (size_t i = 0; i < len; ++i) {
        crucible_adopt_item c;
        std::memset(&c, 0, sizeof c);
        std::memcpy(&c, base + i * stride, stride < sizeof c ? stride : sizeof c);
        AdoptItem a;
        a.attempt_key = c.attempt_key;
        a.handle = c.handle ? c.handle : "";
        if (stride >= offsetof(crucible_adopt_item, step_id) + sizeof(const char*) && c.step_id) a.step_id = c.step_id;
        if (stride >= offsetof(crucible_adopt_item, attempt) + sizeof(uint32_t)) a.attempt = c.attempt;
        v.push_back(std::move(a));
      }
      return static_cast<T*>(backend)->Adopt(v) ? CRUCIBLE_STATUS_OK : CRUCIBLE_STATUS_UNSUPPORTED;
    } catch (const std::exception& e) {
      CopyOut(e.what(), err, err_cap);
    } catch (...) {
      CopyOut("unknown exception in adopt", err, err_cap);
    }
    return CRUCIBLE_STATUS_ERROR;
  }
};

template <void (*F)(std::string&)>
void DescribeTrampoline(char* buf, size_t cap) {
  try {
    std::string text;
    F(text);
    CopyOut(text, buf, cap);
  } catch (...) {
    CopyOut("", buf, cap);
  }
}

template <void (*F)(const StepCheck&, DiagSink&)>
crucible_status CheckStepTrampoline(const crucible_step_check* step, const crucible_diag_sink* sink) {
  try {
    StepCheck s;
    s.step_id = step->step_id ? step->step_id : "";
    s.image = step->image ? step->image : "";
    s.cpu_millicores = step->cpu_millicores;
    s.memory_bytes = step->memory_bytes;
    s.timeout_ms = step->timeout_ms;
    s.backend_options = Options(step->backend_options, step->backend_options_len);
    s.step_options = Options(step->step_options, step->step_options_len);
    DiagSink d(sink);
    F(s, d);
    return CRUCIBLE_STATUS_OK;
  } catch (...) {
    return CRUCIBLE_STATUS_ERROR;
  }
}

}  // namespace detail

/// Builds the table for backend class T. describe / check_step may be null.
template <typename T>
crucible_backend_api MakeApi(const char* name, const char* version, const char* description,
                             const crucible_option_decl* options, size_t options_len,
                             void (*describe)(char*, size_t), crucible_status (*check_step)(const crucible_step_check*,
                                                                                            const crucible_diag_sink*)) {
  crucible_backend_api api;
  std::memset(&api, 0, sizeof api);
  api.struct_size = sizeof api;
  api.abi_major = CRUCIBLE_ABI_MAJOR;
  api.abi_minor = CRUCIBLE_ABI_MINOR;
  api.name = name;
  api.version = version;
  api.description = description;
  api.options = options;
  api.options_len = options_len;
  api.describe = describe;
  api.check_step = check_step;
  api.create = &detail::Trampolines<T>::Create;
  api.destroy = &detail::Trampolines<T>::Destroy;
  api.capacity = &detail::Trampolines<T>::Capacity;
  api.start = &detail::Trampolines<T>::Start;
  api.poll = &detail::Trampolines<T>::Poll;
  api.cancel = &detail::Trampolines<T>::Cancel;
  api.adopt = &detail::Trampolines<T>::Adopt;
  return api;
}

/// An option declaration, for the plugin's static table.
inline constexpr crucible_option_decl Option(const char* name, crucible_option_type type, crucible_option_scope scope,
                                             const char* description, bool required = false) {
  return crucible_option_decl{sizeof(crucible_option_decl), name, type, scope, required ? 1 : 0, description};
}

}  // namespace sdk
}  // namespace crucible

#if defined(_WIN32)
#define CRUCIBLE_EXPORT __declspec(dllexport)
#else
#define CRUCIBLE_EXPORT __attribute__((visibility("default")))
#endif

/// Defines the entry symbol of a plugin whose backend class is CLASS.
/// DESCRIBE: void(std::string&) or nullptr-equivalent macro CRUCIBLE_NO_DESCRIBE;
/// CHECK_STEP: void(const StepCheck&, DiagSink&) or CRUCIBLE_NO_CHECK_STEP.
#define CRUCIBLE_NO_DESCRIBE nullptr
#define CRUCIBLE_NO_CHECK_STEP nullptr
#define CRUCIBLE_DESCRIBE(F) (&::crucible::sdk::detail::DescribeTrampoline<F>)
#define CRUCIBLE_CHECK_STEP(F) (&::crucible::sdk::detail::CheckStepTrampoline<F>)

#define CRUCIBLE_DEFINE_BACKEND(CLASS, NAME, VERSION, DESCRIPTION, OPTIONS, DESCRIBE, CHECK_STEP)          \
  extern "C" CRUCIBLE_EXPORT const crucible_backend_api* crucible_backend_api_v0(void) {                   \
    static const crucible_backend_api api = ::crucible::sdk::MakeApi<CLASS>(                               \
        NAME, VERSION, DESCRIPTION, OPTIONS, sizeof(OPTIONS) / sizeof((OPTIONS)[0]), DESCRIBE, CHECK_STEP); \
    return &api;                                                                                           \
  }

#endif  // CRUCIBLE_BACKEND_SDK_HPP_

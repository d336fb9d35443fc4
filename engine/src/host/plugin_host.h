// PluginHost: finds backend plugins, loads them with Boost.DLL, checks their ABI.
//
// Search path, in order: $CRUCIBLE_PLUGIN_PATH (colon-separated), the build
// tree's plugin directory when the binary runs from the build tree (compiled
// in), then <prefix>/lib/crucible-engine/plugins relative to the executable.
// A file is a plugin when it is named libcrucible-backend-*.so. The ABI is
// checked before any other call; one bad plugin never stops the others.
//
// Thread-safety: load once on the main thread; Plugins are then read-only.
#ifndef CRUCIBLE_HOST_PLUGIN_HOST_H_
#define CRUCIBLE_HOST_PLUGIN_HOST_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/diagnostic.h"
#include "common/result.h"
#include "host/backend.h"
#include "loader/workflow_spec.h"

namespace crucible::host {

/// Wakes the scheduler; safe from any thread.
using WakeFn = std::function<void()>;

/// A loaded plugin library.
class Plugin {
 public:
  virtual ~Plugin() = default;
  virtual const std::string& name() const = 0;
  virtual const std::string& version() const = 0;
  virtual const std::string& path() const = 0;
  virtual std::string abi() const = 0;  ///< "0.1"
  virtual const std::string& description() const = 0;
  virtual const std::vector<crucible_option_decl>& options() const = 0;
  /// The plugin's facts about this machine (describe()), "" when none.
  virtual std::string Describe() const = 0;

  /// Checks a raw option table against the declared options of `scope`;
  /// reports unknown keys (with did-you-mean), wrong types and missing
  /// required options to `diags`, and returns the typed values.
  std::vector<OptionValue> CheckOptions(const loader::RawOptionTable& table, crucible_option_scope scope,
                                        const std::string& where, Diagnostics& diags) const;

  struct StepFinding {
    crucible_severity severity = CRUCIBLE_SEVERITY_UNSET;
    std::string field;
    std::string message;
  };
  /// check_step(): what this backend cannot honour for one step.
  virtual std::vector<StepFinding> CheckStep(const std::string& step_id, const std::string& image,
                                             int64_t cpu_millicores, int64_t memory_bytes, int64_t timeout_ms,
                                             const std::vector<OptionValue>& backend_options,
                                             const std::vector<OptionValue>& step_options) const = 0;

  /// create(): one backend instance for one run.
  virtual Result<std::unique_ptr<Backend>> Create(const std::vector<OptionValue>& options, const std::string& state_dir,
                                                  const std::string& run_id, WakeFn wake,
                                                  int wake_fd = -1) const = 0;
};

/// A file that looked like a plugin and could not be used.
struct LoadFailure {
  std::string path;
  std::string why;
};

class PluginHost {
 public:
  /// The default search path (see the file comment).
  static std::vector<std::string> DefaultSearchPath();

  /// Loads every plugin found in `dirs` (later duplicates of a name are load failures).
  static PluginHost Load(const std::vector<std::string>& dirs);

  /// nullptr when no plugin of that name loaded.
  const Plugin* Find(const std::string& name) const;
  const std::vector<std::unique_ptr<Plugin>>& plugins() const { return plugins_; }
  const std::vector<LoadFailure>& failures() const { return failures_; }
  /// Names of loaded plugins, for did-you-mean.
  std::vector<std::string> names() const;

 private:
  std::vector<std::unique_ptr<Plugin>> plugins_;
  std::vector<LoadFailure> failures_;
};

}  // namespace crucible::host

#endif  // CRUCIBLE_HOST_PLUGIN_HOST_H_

// PoolConfig: the compose pool as [backends.compose] describes it, the
// rendered compose file, and what each executor service runs and allows.
#ifndef CRUCIBLE_PLUGINS_COMPOSE_POOL_CONFIG_H_
#define CRUCIBLE_PLUGINS_COMPOSE_POOL_CONFIG_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "crucible/backend_sdk.hpp"

namespace crucible::plugins::compose {

/// One executor service of the compose file.
struct ServiceInfo {
  std::string name;
  std::string image;           ///< normalised (":latest" added when untagged)
  int64_t memory_bytes = 0;    ///< 0: no limit
  int64_t cpu_millicores = 0;  ///< 0: no limit
};

struct PoolConfig {
  std::string project;        ///< the Compose project name, which labels the pool
  std::string compose_text;   ///< the compose file, rendered
  /// Digest of the rendered file and the executor services: the label
  /// kStampLabel of every executor made from this configuration, so that a
  /// warm pool made from another one (other image, network, limits) is
  /// recreated rather than reused.
  std::string stamp;
  std::string stamp_text;     ///< a compose override file setting that label on each executor service
  bool shipped_file = true;   ///< the plugin's own compose file, not the user's
  std::vector<ServiceInfo> services;
  int replicas = 4;
  std::string step_user;      ///< who steps run as inside an executor
  std::string work_root;
  bool keep_warm = false;
  bool recycle = false;       ///< isolation = "recycle"
  int64_t kill_grace_ms = 5000;

  /// From validated options; throws std::runtime_error with a message for the user.
  static PoolConfig FromOptions(const sdk::Options& options);
  /// The service for an image (any when image is empty), or nullptr.
  const ServiceInfo* ServiceFor(const std::string& image) const;
  std::vector<std::string> Images() const;
};

/// The label that carries PoolConfig::stamp on each executor container.
inline constexpr const char* kStampLabel = "org.crucible-engine.config";

/// "512m", "1g", "1Gi", "256Mi", "1000000" -> bytes; -1 when not a size.
int64_t ParseByteSize(const std::string& text);
/// "repo/name" -> "repo/name:latest"; a tag or digest is kept.
std::string NormaliseImage(const std::string& image);

/// The plugin's compose file (plugins/compose/pool/compose.yaml, compiled in).
extern const char kPoolComposeFile[];
/// The in-executor supervisor (plugins/compose/supervisor.sh, compiled in).
extern const char kSupervisorScript[];

}  // namespace crucible::plugins::compose

#endif  // CRUCIBLE_PLUGINS_COMPOSE_POOL_CONFIG_H_

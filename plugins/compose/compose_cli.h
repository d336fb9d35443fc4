// The Compose command line, used only to bring the pool up and down: Compose
// v2 (`docker compose`) or v1 (`docker-compose`), found at run time.
#ifndef CRUCIBLE_PLUGINS_COMPOSE_COMPOSE_CLI_H_
#define CRUCIBLE_PLUGINS_COMPOSE_COMPOSE_CLI_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace crucible::plugins::compose {

enum class ComposeFlavor { kV2, kV1 };

/// Which Compose runs the pool, and how it is called.
struct ComposeCli {
  ComposeFlavor flavor = ComposeFlavor::kV2;
  std::vector<std::string> prefix;  ///< {"docker", "compose"} or {"docker-compose"}
};

/// `docker compose version` answers: v2; else `docker-compose version`: v1; else nullopt.
std::optional<ComposeCli> DetectCompose();

/// Brings PROJECT up from FILES (each later one overriding the earlier) with each service scaled to its replicas.
std::vector<std::string> UpCommand(const ComposeCli& cli, const std::string& project,
                                   const std::vector<std::string>& files, const std::map<std::string, int>& replicas);
/// Removes everything of PROJECT (containers, networks, volumes, orphans) without a stop grace.
std::vector<std::string> DownCommand(const ComposeCli& cli, const std::string& project,
                                     const std::vector<std::string>& files);

/// Runs argv (PATH lookup), stdout and stderr together into *output; the exit status, or -1 if it could not run.
int RunCommand(const std::vector<std::string>& argv, std::string* output);

/// Replaces ${NAME:-default} and ${NAME} for the NAMEs in vars; other references are left for Compose.
std::string RenderTemplate(const std::string& text, const std::map<std::string, std::string>& vars);

}  // namespace crucible::plugins::compose

#endif  // CRUCIBLE_PLUGINS_COMPOSE_COMPOSE_CLI_H_

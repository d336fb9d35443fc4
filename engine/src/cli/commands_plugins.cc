// The `plugins` verb.
#include <iostream>

#include "cli/commands.h"
#include "cli/views.h"
#include "host/plugin_host.h"

namespace crucible::cli {

int CmdPlugins(const GlobalOptions& /*g*/, bool json) {
  std::vector<std::string> path = host::PluginHost::DefaultSearchPath();
  host::PluginHost host = host::PluginHost::Load(path);
  std::cout << (json ? PluginsJson(host, path) + "\n" : PluginsText(host, path)) << std::flush;
  return kExitOk;
}

}  // namespace crucible::cli

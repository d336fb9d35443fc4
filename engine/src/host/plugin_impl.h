// Internal to the plugin host: the Plugin made from a validated C table.
//
// plugin_host.cc loads the library (Boost.DLL stays there) and validates the
// table; plugin_backend.cc adapts the table to Plugin and Backend.
#ifndef CRUCIBLE_HOST_PLUGIN_IMPL_H_
#define CRUCIBLE_HOST_PLUGIN_IMPL_H_

#include <memory>
#include <string>
#include <vector>

#include "crucible/backend_abi.h"
#include "host/plugin_host.h"

namespace crucible::host::internal {

/// Smallest struct_size of a table we accept: every member up to `cancel`.
inline constexpr size_t kMinApiSize = offsetof(crucible_backend_api, cancel) + sizeof(void*);
/// Smallest struct_size of an option declaration: up to `required`.
inline constexpr size_t kMinOptionDeclSize = offsetof(crucible_option_decl, required) + sizeof(int);

/// A Plugin over `api` (already validated, copied and zero-extended to our
/// struct size). `library` keeps the shared object loaded; every Backend the
/// plugin creates holds it too. `options` are copies of the declarations.
std::unique_ptr<Plugin> MakePlugin(std::shared_ptr<const void> library, const crucible_backend_api& api,
                                   std::vector<crucible_option_decl> options, std::string path);

}  // namespace crucible::host::internal

#endif  // CRUCIBLE_HOST_PLUGIN_IMPL_H_

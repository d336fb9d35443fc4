// Plugin loading with Boost.DLL (error_code overloads only) and option checking.
#include "host/plugin_host.h"

#include <dlfcn.h>

#include <boost/dll/shared_library.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>

#include "common/units.h"
#include "host/plugin_impl.h"

namespace crucible::host {

namespace {

namespace fs = std::filesystem;

constexpr const char* kPluginPrefix = "libcrucible-backend-";
constexpr const char* kPluginSuffix = ".so";

bool IsPluginFileName(const std::string& name) {
  size_t prefix = std::strlen(kPluginPrefix);
  size_t suffix = std::strlen(kPluginSuffix);
  return name.size() > prefix + suffix && name.compare(0, prefix, kPluginPrefix) == 0 &&
         name.compare(name.size() - suffix, suffix, kPluginSuffix) == 0;
}

/// [a-z][a-z0-9_-]*, at most 64 characters.
bool IsValidPluginName(const char* name) {
  if (name == nullptr || !(name[0] >= 'a' && name[0] <= 'z')) return false;
  size_t n = 0;
  for (const char* p = name; *p != '\0'; ++p, ++n) {
    char c = *p;
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok || n >= 64) return false;
  }
  return true;
}

/// [a-z][a-z0-9_]* for option names (they are TOML bare keys).
bool IsValidOptionName(const char* name) {
  if (name == nullptr || !(name[0] >= 'a' && name[0] <= 'z')) return false;
  for (const char* p = name; *p != '\0'; ++p) {
    char c = *p;
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

std::string Quoted(const char* s) { return s == nullptr ? "(null)" : "\"" + std::string(s) + "\""; }

std::string Abi(uint32_t major, uint32_t minor) { return std::to_string(major) + "." + std::to_string(minor); }

/// The dlerror() text of the last failed dlopen, without the leading path.
std::string LastDlError(const std::string& path) {
  const char* e = ::dlerror();
  if (e == nullptr) return "unknown dlopen error";
  std::string text = e;
  if (text.rfind(path + ": ", 0) == 0) text = text.substr(path.size() + 2);
  return text;
}

/// Loads and validates one plugin file; the Error's message is the "why".
Result<std::unique_ptr<Plugin>> LoadOne(const std::string& path) {
  auto library = std::make_shared<boost::dll::shared_library>();
  boost::dll::fs::error_code ec;
  library->load(boost::dll::fs::path(path), boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, ec);
  if (ec || !library->is_loaded()) {
    std::string detail = LastDlError(path);
    if (detail.find("invalid ELF header") != std::string::npos || detail.find("file too short") != std::string::npos) {
      return MakeError(ErrorCode::kUnavailable, "not a shared library (" + detail + ")");
    }
    return MakeError(ErrorCode::kUnavailable, "cannot be loaded: " + detail);
  }
  if (!library->has(CRUCIBLE_BACKEND_ENTRY_SYMBOL)) {
    return MakeError(ErrorCode::kVersion, std::string("no entry symbol ") + CRUCIBLE_BACKEND_ENTRY_SYMBOL +
                                              " (built for another ABI major?)");
  }
  crucible_backend_entry_fn entry = nullptr;
  try {
    entry = library->get<const crucible_backend_api*()>(CRUCIBLE_BACKEND_ENTRY_SYMBOL);
  } catch (const std::exception& e) {
    return MakeError(ErrorCode::kUnavailable, std::string("cannot read entry symbol: ") + e.what());
  }
  const crucible_backend_api* table = entry();
  if (table == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument,
                     std::string(CRUCIBLE_BACKEND_ENTRY_SYMBOL) + "() returned no table (NULL)");
  }
  // The versions first: nothing else is read from a table of another major.
  constexpr size_t kVersionsEnd = offsetof(crucible_backend_api, abi_minor) + sizeof(uint32_t);
  if (table->struct_size < kVersionsEnd) {
    return MakeError(ErrorCode::kVersion, "table struct_size " + std::to_string(table->struct_size) +
                                              " is too small to hold an ABI version");
  }
  if (table->abi_major != CRUCIBLE_ABI_MAJOR) {
    return MakeError(ErrorCode::kVersion, "ABI " + Abi(table->abi_major, table->abi_minor) +
                                              ", this crucible-engine speaks ABI " +
                                              Abi(CRUCIBLE_ABI_MAJOR, CRUCIBLE_ABI_MINOR));
  }
  if (table->struct_size < internal::kMinApiSize) {
    return MakeError(ErrorCode::kVersion, "table struct_size " + std::to_string(table->struct_size) +
                                              " is too small: ABI " + Abi(CRUCIBLE_ABI_MAJOR, CRUCIBLE_ABI_MINOR) +
                                              " needs at least " + std::to_string(internal::kMinApiSize) +
                                              " bytes (every member up to cancel)");
  }
  // Our copy, zero-extended: members the plugin does not know read as absent.
  crucible_backend_api api;
  std::memset(&api, 0, sizeof api);
  std::memcpy(&api, table, std::min(table->struct_size, sizeof api));
  api.struct_size = sizeof api;

  if (!IsValidPluginName(api.name)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "invalid plugin name " + Quoted(api.name) + " (must match [a-z][a-z0-9_-]*)");
  }
  std::string who = std::string("plugin \"") + api.name + "\"";
  const char* missing = api.create == nullptr     ? "create"
                        : api.destroy == nullptr  ? "destroy"
                        : api.capacity == nullptr ? "capacity"
                        : api.start == nullptr    ? "start"
                        : api.poll == nullptr     ? "poll"
                        : api.cancel == nullptr   ? "cancel"
                                                  : nullptr;
  if (missing != nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, who + ": required function " + missing + " is NULL");
  }
  if (api.version == nullptr) api.version = "";
  if (api.description == nullptr) api.description = "";

  std::vector<crucible_option_decl> options;
  if (api.options_len > 0) {
    if (api.options == nullptr) {
      return MakeError(ErrorCode::kInvalidArgument, who + ": declares " + std::to_string(api.options_len) +
                                                        " options but the options pointer is NULL");
    }
    if (api.options_len > 1000) {
      return MakeError(ErrorCode::kInvalidArgument, who + ": declares an absurd number of options (" +
                                                        std::to_string(api.options_len) + ")");
    }
    // The array's stride is the plugin's own struct size.
    size_t stride = api.options[0].struct_size;
    if (stride < internal::kMinOptionDeclSize) {
      return MakeError(ErrorCode::kInvalidArgument,
                       who + ": option declaration struct_size " + std::to_string(stride) + " is too small");
    }
    std::set<std::pair<std::string, int>> seen;
    const auto* base = reinterpret_cast<const unsigned char*>(api.options);
    for (size_t i = 0; i < api.options_len; ++i) {
      crucible_option_decl d;
      std::memset(&d, 0, sizeof d);
      std::memcpy(&d, base + i * stride, std::min(stride, sizeof d));
      d.struct_size = sizeof d;
      std::string which = "option " + std::to_string(i);
      if (!IsValidOptionName(d.name)) {
        return MakeError(ErrorCode::kInvalidArgument,
                         who + ": " + which + " has an invalid name " + Quoted(d.name));
      }
      which = std::string("option \"") + d.name + "\"";
      if (d.type < CRUCIBLE_OPTION_STRING || d.type > CRUCIBLE_OPTION_STRING_MAP) {
        return MakeError(ErrorCode::kInvalidArgument,
                         who + ": " + which + " has an unknown type " + std::to_string(static_cast<int>(d.type)));
      }
      if (d.scope != CRUCIBLE_SCOPE_BACKEND && d.scope != CRUCIBLE_SCOPE_STEP) {
        return MakeError(ErrorCode::kInvalidArgument,
                         who + ": " + which + " has an unknown scope " + std::to_string(static_cast<int>(d.scope)));
      }
      if (!seen.insert({d.name, static_cast<int>(d.scope)}).second) {
        return MakeError(ErrorCode::kInvalidArgument, who + ": " + which + " is declared twice");
      }
      options.push_back(d);
    }
  }
  // The aliasing constructor keeps the library alive through a type-erased pointer.
  std::shared_ptr<const void> keep(library, library.get());
  return internal::MakePlugin(std::move(keep), api, std::move(options), path);
}

// --- option checking -------------------------------------------------------

const char* TypeName(crucible_option_type t) {
  switch (t) {
    case CRUCIBLE_OPTION_STRING: return "a string";
    case CRUCIBLE_OPTION_INT: return "an integer";
    case CRUCIBLE_OPTION_BOOL: return "a boolean";
    case CRUCIBLE_OPTION_FLOAT: return "a number";
    case CRUCIBLE_OPTION_DURATION: return "a duration (\"30s\", \"1h30m\" or integer seconds)";
    case CRUCIBLE_OPTION_STRING_LIST: return "a list of strings";
    case CRUCIBLE_OPTION_STRING_MAP: return "a table of strings";
    default: return "a value of an unknown type";
  }
}

const char* JsonTypeName(const nlohmann::json& v) {
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a float";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "a table";
  return "null";
}

/// Converts one raw value; returns the problem, or "" when it fits.
std::string Convert(const nlohmann::json& v, crucible_option_type type, OptionValue& out) {
  std::string expected = std::string("expected ") + TypeName(type) + ", got " + JsonTypeName(v);
  switch (type) {
    case CRUCIBLE_OPTION_STRING:
      if (!v.is_string()) return expected;
      out.string_value = v.get<std::string>();
      return "";
    case CRUCIBLE_OPTION_INT:
      if (!v.is_number_integer()) return expected;
      out.int_value = v.get<int64_t>();
      return "";
    case CRUCIBLE_OPTION_BOOL:
      if (!v.is_boolean()) return expected;
      out.int_value = v.get<bool>() ? 1 : 0;
      return "";
    case CRUCIBLE_OPTION_FLOAT:
      if (!v.is_number()) return expected;
      out.float_value = v.get<double>();
      return "";
    case CRUCIBLE_OPTION_DURATION:
      if (v.is_number_integer()) {
        int64_t seconds = v.get<int64_t>();
        if (seconds < 0 || seconds > (int64_t{1} << 40)) return "a duration must be a non-negative number of seconds";
        out.int_value = seconds * 1000;
        return "";
      }
      if (v.is_string()) {
        std::optional<int64_t> ms = ParseDuration(v.get<std::string>());
        if (!ms) {
          return "invalid duration \"" + v.get<std::string>() + "\" (use \"250ms\", \"30s\", \"5m\", \"1h30m\" or "
                                                                  "integer seconds)";
        }
        out.int_value = *ms;
        return "";
      }
      return expected;
    case CRUCIBLE_OPTION_STRING_LIST:
      if (!v.is_array()) return expected;
      for (const nlohmann::json& item : v) {
        if (!item.is_string()) return std::string("expected a list of strings, got an item that is ") + JsonTypeName(item);
        out.list.push_back(item.get<std::string>());
      }
      return "";
    case CRUCIBLE_OPTION_STRING_MAP:
      if (!v.is_object()) return expected;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!it.value().is_string()) {
          return "expected a table of strings, but \"" + it.key() + "\" is " + JsonTypeName(it.value());
        }
        out.map.emplace_back(it.key(), it.value().get<std::string>());
      }
      return "";
    default:
      return expected;
  }
}

}  // namespace

std::vector<OptionValue> Plugin::CheckOptions(const loader::RawOptionTable& table, crucible_option_scope scope,
                                              const std::string& where, Diagnostics& diags) const {
  std::vector<OptionValue> values;
  std::vector<std::string> declared;
  for (const crucible_option_decl& d : options()) {
    if (d.scope == scope) declared.push_back(d.name);
  }
  std::string owner = "backend \"" + name() + "\"";
  std::string in = scope == CRUCIBLE_SCOPE_BACKEND ? "" : " in [" + where + "]";
  std::set<std::string> given;
  for (const loader::RawOption& raw : table.options) {
    const crucible_option_decl* decl = nullptr;
    for (const crucible_option_decl& d : options()) {
      if (d.scope == scope && raw.key == d.name) decl = &d;
    }
    if (decl == nullptr) {
      std::string kind = scope == CRUCIBLE_SCOPE_BACKEND ? "option" : "per-step option";
      diags.Error(raw.pos, "unknown " + kind + " \"" + raw.key + "\" for " + owner + in + DidYouMean(raw.key, declared));
      continue;
    }
    if (!given.insert(raw.key).second) {
      diags.Error(raw.pos, "option \"" + raw.key + "\" for " + owner + " given twice" + in);
      continue;
    }
    OptionValue v;
    v.name = decl->name;
    v.type = decl->type;
    std::string problem = Convert(raw.value, decl->type, v);
    if (!problem.empty()) {
      diags.Error(raw.pos, "option \"" + raw.key + "\" for " + owner + in + ": " + problem);
      continue;
    }
    values.push_back(std::move(v));
  }
  for (const crucible_option_decl& d : options()) {
    if (d.scope != scope || d.required == 0 || given.count(d.name) != 0) continue;
    diags.Error(table.pos, "[" + where + "] is missing required option \"" + std::string(d.name) + "\" (" +
                               TypeName(d.type) + ") of " + owner);
  }
  return values;
}

std::vector<std::string> PluginHost::DefaultSearchPath() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("CRUCIBLE_PLUGIN_PATH"); env != nullptr) {
    std::string text = env;
    size_t start = 0;
    while (start <= text.size()) {
      size_t colon = text.find(':', start);
      if (colon == std::string::npos) colon = text.size();
      if (colon > start) dirs.push_back(text.substr(start, colon - start));
      start = colon + 1;
    }
  }
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return dirs;
  fs::path bin_dir = fs::weakly_canonical(fs::path(CRUCIBLE_BUILD_BIN_DIR), ec);
  if (ec) bin_dir = fs::path(CRUCIBLE_BUILD_BIN_DIR);
  fs::path rel = exe.lexically_relative(bin_dir);
  bool in_build_tree = !rel.empty() && *rel.begin() != "..";
  if (in_build_tree) {
    dirs.push_back(CRUCIBLE_BUILD_PLUGIN_DIR);
  } else {
    dirs.push_back((exe.parent_path() / ".." / CRUCIBLE_INSTALL_PLUGIN_SUBDIR).lexically_normal().string());
  }
  return dirs;
}

PluginHost PluginHost::Load(const std::vector<std::string>& dirs) {
  PluginHost host;
  std::set<std::string> seen_files;
  std::map<std::string, std::string> first_path;  // plugin name -> path that provided it
  for (const std::string& dir : dirs) {
    std::error_code ec;
    std::vector<std::string> files;
    fs::directory_iterator it(dir, ec);
    if (ec) continue;  // a search path entry that does not exist is not an error
    for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
      std::string name = it->path().filename().string();
      if (!IsPluginFileName(name)) continue;
      std::error_code type_ec;
      if (fs::is_directory(it->path(), type_ec)) continue;
      files.push_back(it->path().string());
    }
    std::sort(files.begin(), files.end());
    for (const std::string& file : files) {
      std::error_code canon_ec;
      std::string canonical = fs::canonical(file, canon_ec).string();
      if (canon_ec) canonical = file;
      if (!seen_files.insert(canonical).second) continue;  // the same file reached twice
      Result<std::unique_ptr<Plugin>> plugin = LoadOne(file);
      if (!plugin.ok()) {
        host.failures_.push_back(LoadFailure{file, plugin.error().message});
        continue;
      }
      const std::string& pname = (*plugin)->name();
      auto [pos, inserted] = first_path.emplace(pname, file);
      if (!inserted) {
        host.failures_.push_back(
            LoadFailure{file, "a plugin named \"" + pname + "\" is already loaded from " + pos->second});
        continue;
      }
      host.plugins_.push_back(std::move(plugin.value()));
    }
  }
  return host;
}

const Plugin* PluginHost::Find(const std::string& name) const {
  for (const auto& p : plugins_) {
    if (p->name() == name) return p.get();
  }
  return nullptr;
}

std::vector<std::string> PluginHost::names() const {
  std::vector<std::string> out;
  for (const auto& p : plugins_) out.push_back(p->name());
  return out;
}

}  // namespace crucible::host

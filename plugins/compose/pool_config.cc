// See pool_config.h. yaml-cpp's exceptions stop here.
#include "pool_config.h"

#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>

#include "compose_cli.h"

namespace crucible::plugins::compose {
namespace {

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("compose_file " + path + " cannot be read");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

int64_t ScalarBytes(const YAML::Node& n) {
  if (!n || !n.IsScalar()) return 0;
  int64_t v = ParseByteSize(n.Scalar());
  return v < 0 ? 0 : v;
}

int64_t ScalarMillicores(const YAML::Node& n) {
  if (!n || !n.IsScalar()) return 0;
  try {
    return static_cast<int64_t>(std::llround(std::stod(n.Scalar()) * 1000));
  } catch (const std::exception&) {
    return 0;
  }
}

/// The first 16 hex digits of the SHA-256 of text.
std::string ShortDigest(const std::string& text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(text.data(), text.size(), digest, &len, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("SHA-256 of the compose file failed");
  }
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < 8 && i < len; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

/// A compose file that adds the stamp label to each service (Compose merges
/// labels of several --file arguments); its version is the main file's, as
/// Compose v1 requires.
std::string StampOverride(const YAML::Node& version, const std::vector<ServiceInfo>& services,
                          const std::string& stamp) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  if (version && version.IsScalar()) out << YAML::Key << "version" << YAML::Value << YAML::DoubleQuoted << version.Scalar();
  out << YAML::Key << "services" << YAML::Value << YAML::BeginMap;
  for (const auto& s : services) {
    out << YAML::Key << YAML::DoubleQuoted << s.name << YAML::Value << YAML::BeginMap << YAML::Key << "labels" << YAML::Value
        << YAML::BeginMap << YAML::Key << kStampLabel << YAML::Value << YAML::DoubleQuoted << stamp << YAML::EndMap
        << YAML::EndMap;
  }
  out << YAML::EndMap << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string FormatCpus(double cpus) {
  std::ostringstream s;
  s << cpus;
  std::string t = s.str();
  if (t.find('.') == std::string::npos) t += ".0";
  return t;
}

}  // namespace

int64_t ParseByteSize(const std::string& text) {
  static const std::regex re(R"(^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$)");
  std::smatch m;
  if (!std::regex_match(text, m, re)) return -1;
  double v = std::stod(m[1]);
  std::string unit = m[2];
  for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double mul = 1;
  if (unit.empty() || unit == "b") mul = 1;
  else if (unit == "k" || unit == "kb" || unit == "ki" || unit == "kib") mul = 1024.0;
  else if (unit == "m" || unit == "mb" || unit == "mi" || unit == "mib") mul = 1024.0 * 1024;
  else if (unit == "g" || unit == "gb" || unit == "gi" || unit == "gib") mul = 1024.0 * 1024 * 1024;
  else return -1;
  return static_cast<int64_t>(v * mul);
}

std::string NormaliseImage(const std::string& image) {
  if (image.empty() || image.find('@') != std::string::npos) return image;
  size_t slash = image.rfind('/');
  size_t colon = image.rfind(':');
  if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) return image;
  return image + ":latest";
}

PoolConfig PoolConfig::FromOptions(const sdk::Options& options) {
  static const std::regex project_re("^[a-z0-9][a-z0-9_-]{0,62}$");
  PoolConfig c;
  // A workflow that names no project gets $CRUCIBLE_COMPOSE_PROJECT, else crucible-pool.
  const char* env_project = std::getenv("CRUCIBLE_COMPOSE_PROJECT");
  c.project = options.String("project", env_project != nullptr && *env_project != '\0' ? env_project : "crucible-pool");
  if (!std::regex_match(c.project, project_re)) {
    throw std::runtime_error(std::string(options.Find("project") == nullptr ? "CRUCIBLE_COMPOSE_PROJECT" : "project") +
                             " \"" + c.project + "\" is not a Compose project name ([a-z0-9][a-z0-9_-]*)");
  }
  c.replicas = static_cast<int>(options.Int("replicas", 4));
  if (c.replicas < 1 || c.replicas > 256) throw std::runtime_error("replicas must be between 1 and 256");
  c.step_user = options.String("step_user", "10001:10001");
  c.work_root = options.String("work_root", "/work");
  if (c.work_root.empty() || c.work_root[0] != '/' || c.work_root == "/") {
    throw std::runtime_error("work_root must be an absolute directory other than /");
  }
  c.keep_warm = options.Bool("keep_warm", false);
  std::string isolation = options.String("isolation", "scrub");
  if (isolation != "scrub" && isolation != "recycle") {
    throw std::runtime_error("isolation must be \"scrub\" or \"recycle\", not \"" + isolation + "\"");
  }
  c.recycle = isolation == "recycle";
  c.kill_grace_ms = options.Int("kill_grace", 5000);

  static const std::regex user_re("^([0-9]+):([0-9]+)$");
  std::smatch user;
  if (!std::regex_match(c.step_user, user, user_re)) {
    throw std::runtime_error("step_user \"" + c.step_user + "\" must be numeric UID:GID");
  }
  std::string memory = options.String("memory", "512m");
  if (ParseByteSize(memory) <= 0) throw std::runtime_error("memory \"" + memory + "\" is not a size such as 512m");
  std::map<std::string, std::string> vars = {
      {"CRUCIBLE_POOL", c.project},
      {"CRUCIBLE_IMAGE", options.String("image", "crucible/busybox:latest")},
      {"CRUCIBLE_MEMORY", memory},
      {"CRUCIBLE_CPUS", FormatCpus(options.Float("cpus", 1.0))},
      {"CRUCIBLE_PIDS_LIMIT", std::to_string(options.Int("pids_limit", 256))},
      {"CRUCIBLE_NETWORK", options.String("network", "none")},
      {"CRUCIBLE_USER", options.String("user", "65534:65534")},
      {"CRUCIBLE_WORK_ROOT", c.work_root},
      {"CRUCIBLE_WORK_SIZE", options.String("work_size", "256m")},
      {"CRUCIBLE_TMP_SIZE", "64m"},
      {"CRUCIBLE_STEP_UID", user[1].str()},
      {"CRUCIBLE_STEP_GID", user[2].str()},
  };
  std::string file = options.String("compose_file", "");
  c.shipped_file = file.empty();
  c.compose_text = RenderTemplate(c.shipped_file ? std::string(kPoolComposeFile) : ReadText(file), vars);

  std::vector<std::string> wanted;
  if (const sdk::OptionValue* v = options.Find("services")) wanted = v->list;
  YAML::Node root;
  try {
    root = YAML::Load(c.compose_text);
    YAML::Node services = root["services"];
    if (!services || !services.IsMap()) throw std::runtime_error("the compose file has no services");
    for (const auto& kv : services) {
      std::string name = kv.first.as<std::string>();
      if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), name) == wanted.end()) continue;
      const YAML::Node& s = kv.second;
      ServiceInfo info;
      info.name = name;
      if (s["image"] && s["image"].IsScalar()) info.image = NormaliseImage(s["image"].Scalar());
      info.memory_bytes = ScalarBytes(s["mem_limit"]);
      info.cpu_millicores = ScalarMillicores(s["cpus"]);
      if (YAML::Node deploy = s["deploy"]; deploy && deploy.IsMap() && deploy["resources"] &&
                                            deploy["resources"].IsMap() && deploy["resources"]["limits"]) {
        YAML::Node limits = deploy["resources"]["limits"];
        if (info.memory_bytes == 0) info.memory_bytes = ScalarBytes(limits["memory"]);
        if (info.cpu_millicores == 0) info.cpu_millicores = ScalarMillicores(limits["cpus"]);
      }
      if (info.image.empty()) throw std::runtime_error("service \"" + name + "\" names no image");
      c.services.push_back(info);
    }
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(std::string("the compose file is not valid YAML: ") + e.what());
  }
  for (const auto& w : wanted) {
    bool found = false;
    for (const auto& s : c.services) found = found || s.name == w;
    if (!found) throw std::runtime_error("services names \"" + w + "\", which the compose file does not have");
  }
  if (c.services.empty()) throw std::runtime_error("the compose file has no executor service");
  std::string identity = c.compose_text;
  for (const auto& s : c.services) identity += "\n#executor " + s.name;
  c.stamp = ShortDigest(identity);
  c.stamp_text = StampOverride(root["version"], c.services, c.stamp);
  return c;
}

const ServiceInfo* PoolConfig::ServiceFor(const std::string& image) const {
  if (image.empty()) return &services.front();
  std::string want = NormaliseImage(image);
  for (const auto& s : services) {
    if (s.image == want) return &s;
  }
  return nullptr;
}

std::vector<std::string> PoolConfig::Images() const {
  std::vector<std::string> v;
  for (const auto& s : services) v.push_back(s.image);
  return v;
}

}  // namespace crucible::plugins::compose

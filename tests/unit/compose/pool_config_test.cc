// The pool's configuration from [backends.compose] and the compose file.
#include "pool_config.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace crucible::plugins::compose {
namespace {

/// Options as the engine would hand them over.
class OptionsBuilder {
 public:
  OptionsBuilder& Str(const char* name, const char* v) {
    Add(name, CRUCIBLE_OPTION_STRING).string_value = v;
    return *this;
  }
  OptionsBuilder& Int(const char* name, int64_t v) {
    Add(name, CRUCIBLE_OPTION_INT).int_value = v;
    return *this;
  }
  OptionsBuilder& Float(const char* name, double v) {
    Add(name, CRUCIBLE_OPTION_FLOAT).float_value = v;
    return *this;
  }
  sdk::Options Build() const { return sdk::Options(values_.data(), values_.size()); }

 private:
  crucible_option_value& Add(const char* name, crucible_option_type type) {
    crucible_option_value v{};
    v.struct_size = sizeof v;
    v.name = name;
    v.type = type;
    values_.push_back(v);
    return values_.back();
  }
  std::vector<crucible_option_value> values_;
};

TEST(PoolConfigTest, ShippedFileRendersTheOptionsIntoAHardenedService) {
  PoolConfig c = PoolConfig::FromOptions(
      OptionsBuilder().Str("project", "p1").Str("image", "crucible/python:3.11").Str("memory", "256m").Float("cpus", 0.5).Build());
  ASSERT_EQ(c.services.size(), 1u);
  EXPECT_EQ(c.services[0].name, "executor");
  EXPECT_EQ(c.services[0].image, "crucible/python:3.11");
  EXPECT_EQ(c.services[0].memory_bytes, 256ll << 20);
  EXPECT_EQ(c.services[0].cpu_millicores, 500);
  for (const char* needle : {"network_mode: none", "cap_drop: [ALL]", "no-new-privileges:true", "read_only: true",
                             "init: true", "pids_limit: 256", "org.crucible-engine.pool: \"p1\"", "/work:rw,exec,",
                             "uid=10001,gid=10001", "driver: json-file"}) {
    EXPECT_NE(c.compose_text.find(needle), std::string::npos) << needle << "\n" << c.compose_text;
  }
  std::string settings;  // the file without its comments
  std::istringstream lines(c.compose_text);
  for (std::string line; std::getline(lines, line);) {
    if (line.find_first_not_of(' ') != std::string::npos && line[line.find_first_not_of(' ')] != '#') settings += line + "\n";
  }
  EXPECT_EQ(settings.find("docker.sock"), std::string::npos) << settings;
  EXPECT_EQ(settings.find("volumes"), std::string::npos) << "no host mount: " << settings;
  EXPECT_EQ(settings.find("${CRUCIBLE_"), std::string::npos) << settings;
}

TEST(PoolConfigTest, ServiceForMatchesImagesWithTheirImplicitTag) {
  PoolConfig c = PoolConfig::FromOptions(OptionsBuilder().Str("image", "crucible/busybox").Build());
  EXPECT_NE(c.ServiceFor(""), nullptr);
  EXPECT_NE(c.ServiceFor("crucible/busybox:latest"), nullptr);
  EXPECT_NE(c.ServiceFor("crucible/busybox"), nullptr);
  EXPECT_EQ(c.ServiceFor("crucible/python:3.11"), nullptr);
}

TEST(PoolConfigTest, UserComposeFileWithSeveralServices) {
  std::string path = ::testing::TempDir() + "/crucible-user-compose.yaml";
  std::ofstream(path) << "services:\n"
                         "  small:\n    image: a/b:1\n    mem_limit: 128m\n"
                         "  big:\n    image: c/d\n    deploy:\n      resources:\n        limits:\n"
                         "          memory: 2g\n          cpus: '2'\n"
                         "  db:\n    image: postgres\n";
  PoolConfig c = PoolConfig::FromOptions(OptionsBuilder().Str("compose_file", path.c_str()).Build());
  ASSERT_EQ(c.services.size(), 3u);
  const ServiceInfo* big = c.ServiceFor("c/d:latest");
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(big->memory_bytes, 2ll << 30);
  EXPECT_EQ(big->cpu_millicores, 2000);
  EXPECT_FALSE(c.shipped_file);
  std::remove(path.c_str());
}

TEST(PoolConfigTest, TheStampFollowsTheRenderedConfigurationAndLabelsEveryExecutorService) {
  std::string stamp = PoolConfig::FromOptions(OptionsBuilder().Str("project", "p").Build()).stamp;
  EXPECT_EQ(PoolConfig::FromOptions(OptionsBuilder().Str("project", "p").Build()).stamp, stamp) << "deterministic";
  EXPECT_NE(PoolConfig::FromOptions(OptionsBuilder().Str("project", "p").Str("network", "bridge").Build()).stamp, stamp);
  EXPECT_NE(PoolConfig::FromOptions(OptionsBuilder().Str("project", "p").Str("image", "crucible/python:3.11").Build()).stamp,
            stamp);
  EXPECT_EQ(PoolConfig::FromOptions(OptionsBuilder().Str("project", "p").Int("replicas", 7).Build()).stamp, stamp)
      << "the number of executors is not their configuration";

  // Service names YAML would read as other types stay strings; the version is the main file's.
  std::string path = ::testing::TempDir() + "/crucible-stamp-compose.yaml";
  std::ofstream(path) << "version: \"2.4\"\nservices:\n  \"yes\":\n    image: a/b:1\n  \"1\":\n    image: c/d:2\n";
  PoolConfig c = PoolConfig::FromOptions(OptionsBuilder().Str("compose_file", path.c_str()).Build());
  YAML::Node stamp_file = YAML::Load(c.stamp_text);
  EXPECT_EQ(stamp_file["version"].as<std::string>(), "2.4");
  for (const char* service : {"yes", "1"}) {
    YAML::Node labels = stamp_file["services"][service]["labels"];
    ASSERT_TRUE(labels.IsMap()) << service << "\n" << c.stamp_text;
    EXPECT_EQ(labels[kStampLabel].as<std::string>(), c.stamp);
  }
  EXPECT_NE(c.stamp_text.find("\"yes\":"), std::string::npos) << c.stamp_text;
  std::remove(path.c_str());
}

TEST(PoolConfigTest, TheProjectComesFromTheWorkflowElseTheEnvironmentElseTheDefault) {
  ::unsetenv("CRUCIBLE_COMPOSE_PROJECT");
  EXPECT_EQ(PoolConfig::FromOptions(OptionsBuilder().Build()).project, "crucible-pool");
  ::setenv("CRUCIBLE_COMPOSE_PROJECT", "from-env", 1);
  EXPECT_EQ(PoolConfig::FromOptions(OptionsBuilder().Build()).project, "from-env");
  EXPECT_EQ(PoolConfig::FromOptions(OptionsBuilder().Str("project", "named").Build()).project, "named");
  ::setenv("CRUCIBLE_COMPOSE_PROJECT", "Not Valid", 1);
  EXPECT_THROW(PoolConfig::FromOptions(OptionsBuilder().Build()), std::runtime_error);
  ::unsetenv("CRUCIBLE_COMPOSE_PROJECT");
}

TEST(PoolConfigTest, BadOptionsAreRefusedWithAMessage) {
  EXPECT_THROW(PoolConfig::FromOptions(OptionsBuilder().Str("project", "Bad Name").Build()), std::runtime_error);
  EXPECT_THROW(PoolConfig::FromOptions(OptionsBuilder().Int("replicas", 0).Build()), std::runtime_error);
  EXPECT_THROW(PoolConfig::FromOptions(OptionsBuilder().Str("isolation", "none").Build()), std::runtime_error);
  EXPECT_THROW(PoolConfig::FromOptions(OptionsBuilder().Str("memory", "lots").Build()), std::runtime_error);
  EXPECT_THROW(PoolConfig::FromOptions(OptionsBuilder().Str("step_user", "nobody").Build()), std::runtime_error);
  EXPECT_THROW(PoolConfig::FromOptions(OptionsBuilder().Str("compose_file", "/nonexistent.yaml").Build()),
               std::runtime_error);
}

TEST(PoolConfigTest, ByteSizesAndImageNames) {
  EXPECT_EQ(ParseByteSize("512m"), 512ll << 20);
  EXPECT_EQ(ParseByteSize("1Gi"), 1ll << 30);
  EXPECT_EQ(ParseByteSize("100"), 100);
  EXPECT_EQ(ParseByteSize("1.5k"), 1536);
  EXPECT_EQ(ParseByteSize("x"), -1);
  EXPECT_EQ(NormaliseImage("busybox"), "busybox:latest");
  EXPECT_EQ(NormaliseImage("localhost:5000/a/b"), "localhost:5000/a/b:latest");
  EXPECT_EQ(NormaliseImage("a/b:1"), "a/b:1");
  EXPECT_EQ(NormaliseImage("a@sha256:00"), "a@sha256:00");
}

}  // namespace
}  // namespace crucible::plugins::compose

// IntegrationTest: a fixture with its own temporary directory (workflow files
// and a state directory inside it), removed afterwards.
#ifndef CRUCIBLE_TESTS_INTEGRATION_INTEGRATION_FIXTURE_H_
#define CRUCIBLE_TESTS_INTEGRATION_INTEGRATION_FIXTURE_H_

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine_process.h"

namespace crucible::testing {

class IntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "crucible-it-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    state_dir_ = dir_ + "/state";
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  /// Writes `text` to dir_/name and returns its path.
  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  /// The engine with --state-dir state_dir_ first.
  EngineResult Engine(std::vector<std::string> args) {
    args.insert(args.begin(), {"--state-dir", state_dir_});
    return RunEngine(args);
  }
  static nlohmann::json Json(const std::string& text) {
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << "not JSON: " << text;
    return j;
  }
  /// The first line of stderr (the run id of `run`).
  static std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }
  /// The step object of a status object, or null.
  static nlohmann::json StepOf(const nlohmann::json& status, const std::string& id) {
    if (!status.contains("steps")) return nullptr;
    for (const auto& s : status["steps"]) {
      if (s.value("id", "") == id) return s;
    }
    return nullptr;
  }

  std::string dir_;
  std::string state_dir_;
};

}  // namespace crucible::testing

#endif  // CRUCIBLE_TESTS_INTEGRATION_INTEGRATION_FIXTURE_H_

// Golden tests: every tests/fixtures/invalid/*.toml against its *.expected
// diagnostics, and every tests/fixtures/valid/*.toml loading cleanly.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "loader/loader.h"

namespace crucible::loader {
namespace {

namespace fs = std::filesystem;

/// Runs the test body with the current directory set to `dir`, restoring it after.
class ScopedChdir {
 public:
  explicit ScopedChdir(const fs::path& dir) : old_(fs::current_path()) { fs::current_path(dir); }
  ~ScopedChdir() { fs::current_path(old_); }

 private:
  fs::path old_;
};

std::vector<std::string> TomlFilesIn(const fs::path& dir) {
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".toml") names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

TEST(LoaderGoldenTest, EveryInvalidFixtureGivesItsExpectedDiagnostics) {
  fs::path dir = fs::path(CRUCIBLE_TEST_FIXTURES) / "invalid";
  ScopedChdir chdir(dir);
  bool update = std::getenv("CRUCIBLE_UPDATE_GOLDEN") != nullptr;
  std::vector<std::string> names = TomlFilesIn(dir);
  ASSERT_GE(names.size(), 15u);
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    Diagnostics diags(name);
    std::optional<WorkflowSpec> spec = LoadWorkflowFile(name, diags);
    EXPECT_FALSE(spec.has_value());
    EXPECT_TRUE(diags.has_errors());
    fs::path expected_path = fs::path(name).replace_extension(".expected");
    if (update) {
      std::ofstream(expected_path, std::ios::binary) << diags.Format();
      continue;
    }
    ASSERT_TRUE(fs::exists(expected_path)) << "missing " << expected_path;
    EXPECT_EQ(diags.Format(), ReadFile(expected_path));
  }
}

TEST(LoaderGoldenTest, EveryValidFixtureLoadsWithoutDiagnostics) {
  fs::path dir = fs::path(CRUCIBLE_TEST_FIXTURES) / "valid";
  std::vector<std::string> names = TomlFilesIn(dir);
  ASSERT_FALSE(names.empty());
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    std::string path = (dir / name).string();
    Diagnostics diags(path);
    std::optional<WorkflowSpec> spec = LoadWorkflowFile(path, diags);
    EXPECT_TRUE(spec.has_value());
    EXPECT_EQ(diags.Format(), "");
  }
}

}  // namespace
}  // namespace crucible::loader

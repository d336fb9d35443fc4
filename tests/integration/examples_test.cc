// Every example workflow in workflows/ validates and runs on localproc.
#include <algorithm>

#include "integration_fixture.h"

namespace crucible::testing {
namespace {

using ExamplesTest = IntegrationTest;

std::vector<std::string> ExampleWorkflows() {
  std::vector<std::string> files;
  std::error_code ec;
  std::filesystem::path root = std::filesystem::path(CRUCIBLE_SOURCE_DIR) / "workflows";
  for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file() && it->path().extension() == ".toml") files.push_back(it->path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

TEST_F(ExamplesTest, EveryExampleValidatesAndRunsOnLocalproc) {
  std::vector<std::string> files = ExampleWorkflows();
  if (files.empty()) GTEST_SKIP() << "no workflows/*.toml yet";
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    EngineResult v = Engine({"validate", file});
    EXPECT_EQ(v.exit_code, 0) << v.err;
    EngineResult g = Engine({"graph", file});
    EXPECT_EQ(g.exit_code, 0) << g.err;
    EngineResult r = Engine({"run", file, "--backend", "localproc", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    if (r.exit_code == 0) {
      EXPECT_EQ(Json(r.out)["state"], "succeeded");
    }
  }
}

}  // namespace
}  // namespace crucible::testing

// Every example workflow in workflows/ validates and runs on localproc.
#include "integration_fixture.h"
#include "shared_workflows.h"

namespace crucible::testing {
namespace {

using ExamplesTest = IntegrationTest;

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

// Every example workflow of workflows/ runs on the compose backend unchanged
// (`run --backend compose`) and ends as it ends on localproc.
#include "compose_fixture.h"
#include "shared_workflows.h"

namespace crucible::testing {
namespace {

using ComposeExamplesTest = ComposeTest;

TEST_F(ComposeExamplesTest, EveryExampleRunsOnComposeUnchangedAndEndsAsOnLocalproc) {
  std::vector<std::string> files = ExampleWorkflows();
  ASSERT_FALSE(files.empty());
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    EngineResult local = Engine({"run", file, "--backend", "localproc", "--json"});
    ASSERT_EQ(local.exit_code, 0) << local.err;
    // The examples name no project: the environment gives them this test's.
    EngineResult compose = RunEngine({"--state-dir", state_dir_, "run", file, "--backend", "compose", "--json"},
                                     {"CRUCIBLE_COMPOSE_PROJECT=" + project_});
    ASSERT_EQ(compose.exit_code, 0) << compose.err;
    nlohmann::json on_compose = Json(compose.out);
    EXPECT_EQ(on_compose["state"], "succeeded");
    nlohmann::json local_steps = Json(local.out)["steps"];
    ASSERT_EQ(on_compose["steps"].size(), local_steps.size());
    for (const auto& want : local_steps) {
      std::string id = want["id"];
      SCOPED_TRACE(id);
      nlohmann::json got = StepOf(on_compose, id);
      ASSERT_TRUE(got.is_object());
      EXPECT_EQ(got["backend"], "compose");
      for (const char* key : {"state", "attempts", "exit_code", "reason", "outputs"}) {
        EXPECT_EQ(got.value(key, nlohmann::json()), want.value(key, nlohmann::json())) << key;
      }
    }
    EXPECT_EQ(Containers(true), "") << "the example's pool was not taken down";
  }
}

}  // namespace
}  // namespace crucible::testing

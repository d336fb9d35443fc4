// `validate`, `graph` and the refusal of invalid workflows: exit codes,
// file:line:col diagnostics, nothing written.
#include <regex>

#include "integration_fixture.h"

namespace crucible::testing {
namespace {

using ValidateTest = IntegrationTest;

TEST_F(ValidateTest, ValidWorkflowExits0Silently) {
  std::string wf = Write("ok.toml", R"(
[workflow]
name = "ok"

[[steps]]
id = "a"
run = ["true"]
)");
  EngineResult r = Engine({"validate", wf});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_FALSE(std::filesystem::exists(state_dir_));
}

TEST_F(ValidateTest, InvalidWorkflowExits2WithPositionsAndWritesNothing) {
  std::string wf = Write("bad.toml", R"([workflow]
name = "bad"

[[steps]]
id = "a"
run = ["true"]
neds = ["b"]

[[steps]]
id = "c"
needs = ["aa"]
run = ["true"]
)");
  for (const char* verb : {"validate", "run", "graph"}) {
    EngineResult r = Engine({verb, wf});
    EXPECT_EQ(r.exit_code, 2) << verb << ": " << r.err;
    EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(bad\.toml:7:\d+: error: .*neds.*needs)"))) << r.err;
    EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(bad\.toml:\d+:\d+: error: )"))) << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_FALSE(std::filesystem::exists(state_dir_)) << verb << " wrote the state directory";
  }
}

TEST_F(ValidateTest, SchemaAndGraphErrorsAreReportedTogetherInFileOrder) {
  std::string wf = Write("both.toml", R"([workflow]
name = "both"

[[steps]]
id = "a"
run = ["true"]
neds = ["b"]
timeout = "5 minutes"

[[steps]]
id = "b"
needs = ["c", "a"]
run = ["echo", "{{params.x}}"]

[[steps]]
id = "c"
needs = ["b"]
shell = "echo hi"
resources = { memory = "lots" }
)");
  EngineResult r = Engine({"validate", wf});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err,
            wf + ":7:1: error: unknown key \"neds\" in step \"a\" (did you mean \"needs\"?)\n" +
            wf + ":8:11: error: \"timeout\" must be a duration like \"30s\", \"5m\" or \"1h30m\", got \"5 minutes\"\n" +
            wf + ":10:1: error: cycle: b -> c -> b\n" +
            wf + ":13:7: error: step \"b\": unknown placeholder {{params.x}}\n" +
            wf + ":19:24: error: \"memory\" must be a quantity like \"256Mi\", \"1Gi\" or \"500M\", got \"lots\"\n");
  EXPECT_FALSE(std::filesystem::exists(state_dir_));
}

TEST_F(ValidateTest, SyntaxErrorExits2WithPosition) {
  std::string wf = Write("syntax.toml", "[workflow]\nname = \"x\"\n[[steps]\n");
  EngineResult r = Engine({"run", wf});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(syntax\.toml:3:\d+: error: )"))) << r.err;
  EXPECT_FALSE(std::filesystem::exists(state_dir_));
}

TEST_F(ValidateTest, MissingFileExits2) {
  EngineResult r = Engine({"run", dir_ + "/nope.toml"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("nope.toml"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(state_dir_));
}

TEST_F(ValidateTest, UnknownBackendNamedByAStepExits3WithSuggestion) {
  std::string wf = Write("backend.toml", R"([workflow]
name = "backend"

[[steps]]
id = "a"
backend = "localprc"
run = ["true"]
)");
  for (const char* verb : {"validate", "run"}) {
    EngineResult r = Engine({verb, wf});
    EXPECT_EQ(r.exit_code, 3) << verb << ": " << r.err;
    EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(backend\.toml:6:\d+: error: .*localprc)"))) << r.err;
    EXPECT_NE(r.err.find("did you mean \"localproc\"?"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(state_dir_));
  }
}

TEST_F(ValidateTest, BackendFlagNamingAnUnknownPluginExits3) {
  std::string wf = Write("ok.toml", R"(
[workflow]
name = "ok"

[[steps]]
id = "a"
run = ["true"]
)");
  EngineResult r = Engine({"run", wf, "--backend", "nosuchbackend"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("nosuchbackend"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(state_dir_));
}

TEST_F(ValidateTest, UnusedUnknownBackendTableIsAPlainError) {
  std::string wf = Write("table.toml", R"([workflow]
name = "table"

[backends.nosuch]
x = 1

[[steps]]
id = "a"
run = ["true"]
)");
  EngineResult r = Engine({"validate", wf});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(table\.toml:4:\d+: error: .*nosuch)"))) << r.err;
}

TEST_F(ValidateTest, UnknownStepSubTableIsAnError) {
  std::string wf = Write("sub.toml", R"([workflow]
name = "sub"

[[steps]]
id = "a"
run = ["true"]
[steps.localprc]
x = 1
)");
  EngineResult r = Engine({"validate", wf});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("sub.toml:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("localprc"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("did you mean \"localproc\""), std::string::npos) << r.err;
}

TEST_F(ValidateTest, MisspeltResourcesTableSuggestsResources) {
  std::string wf = Write("res.toml", R"([workflow]
name = "res"

[[steps]]
id = "a"
run = ["true"]
[steps.resorces]
cpu = 1
)");
  EngineResult r = Engine({"validate", wf});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err, wf + ":7:1: error: unknown backend sub-table [steps.resorces] (did you mean \"resources\"?)\n");
}

TEST_F(ValidateTest, GraphPrintsDot) {
  std::string wf = Write("graph.toml", R"(
[workflow]
name = "graph"

[[steps]]
id = "first"
for_each = ["x", "y"]
run = ["true"]

[[steps]]
id = "second"
needs = ["first"]
run = ["true"]
)");
  EngineResult r = Engine({"graph", wf});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("digraph"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("first[x]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("second"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("->"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(state_dir_));
}

}  // namespace
}  // namespace crucible::testing

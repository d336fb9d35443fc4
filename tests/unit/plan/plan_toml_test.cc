// Plan::Build on workflows written as TOML, through the real loader.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "loader/loader.h"
#include "plan/plan.h"
#include "plan_test_util.h"

namespace crucible::plan {
namespace {

namespace fs = std::filesystem;
using testing::RenderOrDie;
using testing::TempDir;

/// Loads `toml` as `dir`/wf.toml and plans it; `*text` gets every diagnostic.
std::optional<Plan> PlanToml(const std::string& toml, std::string* text = nullptr, const PlanOptions& options = {},
                             const std::string& dir = "/tmp") {
  std::string path = dir + "/wf.toml";
  Diagnostics diags("wf.toml");
  std::optional<loader::WorkflowSpec> spec = loader::LoadWorkflowText(toml, path, diags);
  std::optional<Plan> plan;
  if (spec) {
    spec->file = "wf.toml";
    plan = Plan::Build(*spec, options, diags);
  }
  if (text) *text = diags.Format();
  return plan;
}

std::vector<std::string> Argv(const PlannedStep& s) {
  std::vector<std::string> out;
  for (const Template& t : s.argv) out.push_back(RenderOrDie(t));
  return out;
}

TEST(PlanTomlTest, DefaultsMergeIntoSteps) {
  std::string text;
  std::optional<Plan> plan = PlanToml(R"(
[workflow]
name = "merge"

[defaults]
shell = "echo default"
timeout = "2m"
env = { A = "defaults", B = "defaults" }
resources = { cpu = "500m", memory = "1Gi" }
retry_on = ["timeout", "exited"]

[defaults.kubernetes]
namespace = "from-defaults"
service_account = "default-sa"

[env]
GLOBAL = "1"

[[steps]]
id = "plain"

[[steps]]
id = "own"
run = ["echo", "own"]
env = { B = "step" }
resources = { memory = "256Mi" }
retry_on = [137]
timeout = "5s"

[steps.kubernetes]
service_account = "step-sa"
)",
                                      &text);
  ASSERT_TRUE(plan) << text;
  const PlannedStep& plain = plan->step(*plan->Find("plain"));
  const PlannedStep& own = plan->step(*plan->Find("own"));
  EXPECT_EQ(Argv(plain), (std::vector<std::string>{"/bin/sh", "-c", "echo default"}));
  EXPECT_EQ(Argv(own), (std::vector<std::string>{"echo", "own"}));
  EXPECT_EQ(plain.timeout_ms, 120000);
  EXPECT_EQ(own.timeout_ms, 5000);
  EXPECT_EQ(own.cpu_millicores, 500);
  EXPECT_EQ(own.memory_bytes, 256 * 1024 * 1024);
  EXPECT_EQ(plain.memory_bytes, 1024 * 1024 * 1024);
  ASSERT_EQ(own.retry_on.size(), 1u);
  EXPECT_EQ(own.retry_on[0].exit_code, 137);
  EXPECT_EQ(plain.retry_on.size(), 2u);
  std::vector<std::pair<std::string, std::string>> env;
  for (const auto& [k, v] : own.env) env.emplace_back(k, RenderOrDie(v));
  EXPECT_EQ(env, (std::vector<std::pair<std::string, std::string>>{{"GLOBAL", "1"}, {"A", "defaults"}, {"B", "step"}}));
  const loader::RawOptionTable& k = own.backend_options.at("kubernetes");
  ASSERT_EQ(k.options.size(), 2u);
  EXPECT_EQ(k.options[0].key, "namespace");
  EXPECT_EQ(k.options[0].value, "from-defaults");
  EXPECT_EQ(k.options[1].value, "step-sa");
}

TEST(PlanTomlTest, AxesAndParamsSubstitute) {
  PlanOptions options;
  options.params = {{"epochs", "3"}};
  std::string text;
  std::optional<Plan> plan = PlanToml(R"(
[workflow]
name = "grid"

[params]
epochs = 1

[[steps]]
id = "train"
for_each = { model = ["small", "large"], split = ["test", "train"] }
run = ["train", "--model", "{{ model }}", "--split={{split}}", "--epochs={{params.epochs}}"]
)",
                                      &text, options);
  ASSERT_TRUE(plan) << text;
  ASSERT_EQ(plan->step_count(), 4u);
  EXPECT_EQ(plan->step(2).id, "train[model=large,split=test]");
  EXPECT_EQ(Argv(plan->step(2)),
            (std::vector<std::string>{"train", "--model", "large", "--split=test", "--epochs=3"}));
}

TEST(PlanTomlTest, UnknownNeedAndCycleAreReportedTogether) {
  std::string text;
  EXPECT_FALSE(PlanToml(R"([workflow]
name = "bad"

[[steps]]
id = "prepare"
needs = ["evaluate"]
run = ["true"]

[[steps]]
id = "evaluate"
needs = ["prepare"]
run = ["true"]

[[steps]]
id = "score"
needs = ["evaluat"]
run = ["true"]
)",
                        &text));
  EXPECT_EQ(text,
            "wf.toml:16:10: error: step \"score\" needs unknown step \"evaluat\" (did you mean \"evaluate\"?)\n"
            "wf.toml:4:1: error: cycle: prepare -> evaluate -> prepare\n");
}

TEST(PlanTomlTest, TheDesignExamplePlans) {
  fs::path dir = fs::path(CRUCIBLE_TEST_FIXTURES) / "valid";
  std::string path = (dir / "grade-submissions.toml").string();
  Diagnostics diags(path);
  std::optional<loader::WorkflowSpec> spec = loader::LoadWorkflowFile(path, diags);
  ASSERT_TRUE(spec) << diags.Format();
  std::optional<Plan> plan = Plan::Build(*spec, {}, diags);
  ASSERT_TRUE(plan) << diags.Format();
  EXPECT_EQ(plan->ToDot(),
            "digraph \"grade-submissions\" {\n"
            "  \"prepare\";\n"
            "  \"evaluate[alice]\";\n"
            "  \"evaluate[bob]\";\n"
            "  \"evaluate[carol]\";\n"
            "  \"score\";\n"
            "  \"prepare\" -> \"evaluate[alice]\";\n"
            "  \"prepare\" -> \"evaluate[bob]\";\n"
            "  \"prepare\" -> \"evaluate[carol]\";\n"
            "  \"evaluate[alice]\" -> \"score\";\n"
            "  \"evaluate[bob]\" -> \"score\";\n"
            "  \"evaluate[carol]\" -> \"score\";\n"
            "}\n");
  const PlannedStep& bob = plan->step(*plan->Find("evaluate[bob]"));
  std::vector<std::string> dests;
  for (const Input& in : bob.inputs) dests.push_back(in.dest);
  EXPECT_EQ(dests, (std::vector<std::string>{"submissions/bob.py", "tests/test_add.py"}));
  EXPECT_EQ(bob.image, "crucible/python:3.11");
  EXPECT_EQ(bob.timeout_ms, 30000);
  EXPECT_EQ(bob.retries, 2);
  EXPECT_EQ(bob.cpu_millicores, 500);
  EXPECT_EQ(plan->max_parallel(), 8);
  const Template* expected = nullptr;
  for (const auto& [k, v] : bob.env) {
    if (k == "EXPECTED_TESTS") expected = &v;
  }
  ASSERT_NE(expected, nullptr);
  ASSERT_EQ(expected->parts.size(), 1u);
  EXPECT_EQ(expected->parts[0].kind, Template::Part::Kind::kOutput);
  EXPECT_EQ(expected->parts[0].task, *plan->Find("prepare"));
  EXPECT_EQ(plan->step(*plan->Find("score")).when, loader::When::kAlways);
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// Runs the test body with the current directory set to `dir`, restoring it after.
class ScopedChdir {
 public:
  explicit ScopedChdir(const fs::path& dir) : old_(fs::current_path()) { fs::current_path(dir); }
  ~ScopedChdir() { fs::current_path(old_); }

 private:
  fs::path old_;
};

/// `# --set NAME=VALUE` lines at the top of a fixture become PlanOptions::params.
PlanOptions OptionsOf(const std::string& text) {
  PlanOptions options;
  std::istringstream in(text);
  std::string line;
  const std::string prefix = "# --set ";
  while (std::getline(in, line) && line.rfind("#", 0) == 0) {
    if (line.rfind(prefix, 0) != 0) continue;
    std::string kv = line.substr(prefix.size());
    size_t eq = kv.find('=');
    options.params.emplace_back(kv.substr(0, eq), eq == std::string::npos ? "" : kv.substr(eq + 1));
  }
  return options;
}

TEST(PlanGoldenTest, EveryInvalidPlanFixtureGivesItsExpectedDiagnostics) {
  fs::path dir = fs::path(CRUCIBLE_TEST_FIXTURES) / "invalid-plan";
  ScopedChdir chdir(dir);
  bool update = std::getenv("CRUCIBLE_UPDATE_GOLDEN") != nullptr;
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".toml") names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  ASSERT_GE(names.size(), 10u);
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    Diagnostics diags(name);
    std::optional<loader::WorkflowSpec> spec = loader::LoadWorkflowFile(name, diags);
    if (!spec) {
      ADD_FAILURE() << "the loader refuses it:\n" << diags.Format();
      continue;
    }
    EXPECT_FALSE(Plan::Build(*spec, OptionsOf(ReadFile(name)), diags));
    fs::path expected_path = fs::path(name).replace_extension(".expected");
    if (update) {
      std::ofstream(expected_path, std::ios::binary) << diags.Format();
      continue;
    }
    ASSERT_TRUE(fs::exists(expected_path)) << "missing " << expected_path;
    EXPECT_EQ(diags.Format(), ReadFile(expected_path));
  }
}

}  // namespace
}  // namespace crucible::plan

#include "loader/loader.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "common/sha256.h"

namespace crucible::loader {
namespace {

namespace fs = std::filesystem;

constexpr char kHeader[] = "[workflow]\nname = \"wf\"\n";

/// Loads `text` as "t.toml"; the diagnostics are kept for assertions.
class LoaderTest : public ::testing::Test {
 protected:
  std::optional<WorkflowSpec> Load(const std::string& text, const std::string& path = "t.toml") {
    diags_ = Diagnostics(path);
    return LoadWorkflowText(text, path, diags_);
  }

  /// Loads a workflow made of the standard header and `steps`, which must be valid.
  WorkflowSpec LoadOk(const std::string& body) {
    std::optional<WorkflowSpec> spec = Load(kHeader + body);
    EXPECT_TRUE(spec.has_value()) << diags_.Format();
    EXPECT_EQ(diags_.Format(), "");
    return spec.value_or(WorkflowSpec{});
  }

  /// The diagnostics of a workflow made of the standard header and `body`, which must be invalid.
  std::string Errors(const std::string& body) {
    std::optional<WorkflowSpec> spec = Load(kHeader + body);
    EXPECT_FALSE(spec.has_value());
    return diags_.Format();
  }

  Diagnostics diags_{"t.toml"};
};

/// A fresh directory under /tmp, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "crucible-loader-XXXXXX").string();
    char* made = mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr);
    path_ = fs::canonical(pattern);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

TEST_F(LoaderTest, CompleteExampleLoadsWithEveryField) {
  std::string path = std::string(CRUCIBLE_TEST_FIXTURES) + "/valid/grade-submissions.toml";
  Diagnostics diags(path);
  std::optional<WorkflowSpec> spec = LoadWorkflowFile(path, diags);
  ASSERT_TRUE(spec.has_value()) << diags.Format();
  EXPECT_EQ(spec->file, path);
  EXPECT_EQ(spec->dir, fs::canonical(std::string(CRUCIBLE_TEST_FIXTURES) + "/valid").string());
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  EXPECT_EQ(spec->source_sha256, Sha256Hex(bytes.str()));

  EXPECT_EQ(spec->name.value, "grade-submissions");
  EXPECT_EQ(spec->name.pos.line, 3);
  EXPECT_EQ(spec->name.pos.column, 8);
  EXPECT_EQ(spec->backend.value, "localproc");
  ASSERT_TRUE(spec->max_parallel.has_value());
  EXPECT_EQ(spec->max_parallel->value, 8);
  EXPECT_FALSE(spec->fail_fast);
  EXPECT_EQ(spec->workflow_pos.line, 2);
  ASSERT_TRUE(spec->defaults.timeout_ms.has_value());
  EXPECT_EQ(spec->defaults.timeout_ms->value, 120000);
  EXPECT_EQ(spec->defaults.image->value, "crucible/python:3.11");
  EXPECT_EQ(spec->defaults.retries->value, 0);
  ASSERT_EQ(spec->env.size(), 1u);
  EXPECT_EQ(spec->env[0].first, "PYTHONDONTWRITEBYTECODE");
  ASSERT_EQ(spec->backends.size(), 2u);
  const RawOptionTable& compose = spec->backends.at("compose");
  ASSERT_EQ(compose.options.size(), 2u);
  EXPECT_EQ(compose.options[0].key, "compose_file");
  EXPECT_EQ(compose.options[0].value, "executors.compose.yaml");
  EXPECT_EQ(compose.options[0].pos.line, 18);
  EXPECT_EQ(spec->backends.at("kubernetes").options[0].value, "evals");

  ASSERT_EQ(spec->steps.size(), 3u);
  const StepSpec& prepare = spec->steps[0];
  EXPECT_EQ(prepare.id.value, "prepare");
  EXPECT_EQ(prepare.pos.line, 24);
  ASSERT_TRUE(prepare.inputs.has_value());
  ASSERT_EQ(prepare.inputs->value.size(), 2u);
  EXPECT_EQ(prepare.inputs->value[1].value, "prepare.py");
  EXPECT_EQ(prepare.run->value, (std::vector<std::string>{"python3", "prepare.py"}));

  const StepSpec& evaluate = spec->steps[1];
  ASSERT_EQ(evaluate.needs.size(), 1u);
  EXPECT_EQ(evaluate.needs[0].value, "prepare");
  EXPECT_EQ(evaluate.needs[0].pos.line, 31);
  EXPECT_EQ(evaluate.for_each.kind, ForEach::Kind::kList);
  EXPECT_EQ(evaluate.for_each.items, (std::vector<std::string>{"alice", "bob", "carol"}));
  ASSERT_EQ(evaluate.env.size(), 2u);
  EXPECT_EQ(evaluate.env[0].first, "SUBMISSION");  // file order, not sorted
  EXPECT_EQ(evaluate.env[1].first, "EXPECTED_TESTS");
  EXPECT_EQ(evaluate.timeout_ms->value, 30000);
  EXPECT_EQ(evaluate.retries->value, 2);
  ASSERT_EQ(evaluate.retry_on->value.size(), 2u);
  EXPECT_EQ(evaluate.retry_on->value[0].kind, RetryOn::Kind::kTimeout);
  EXPECT_EQ(evaluate.retry_on->value[1].kind, RetryOn::Kind::kOomKilled);
  EXPECT_EQ(evaluate.cpu_millicores->value, 500);
  EXPECT_EQ(evaluate.memory_bytes->value, 256 * 1024 * 1024);

  const StepSpec& score = spec->steps[2];
  EXPECT_EQ(score.when->value, When::kAlways);
  EXPECT_FALSE(score.shell.has_value());
}

TEST_F(LoaderTest, UnknownKeySuggestsNearest) {
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\"]\nneds = [\"b\"]\n"),
            "t.toml:6:1: error: unknown key \"neds\" in step \"a\" (did you mean \"needs\"?)\n");
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\"]\ntimeuot = \"5s\"\n"),
            "t.toml:6:1: error: unknown key \"timeuot\" in step \"a\" (did you mean \"timeout\"?)\n");
}

TEST_F(LoaderTest, UnknownKeysOfEveryTableAreReported) {
  std::optional<WorkflowSpec> spec = Load(
      "[workflow]\nname = \"wf\"\nfail_fats = true\n"
      "[workflw]\n"
      "[defaults]\nretires = 1\n"
      "[[steps]]\nid = \"a\"\nrun = [\"true\"]\nresources = { cpus = 1 }\n");
  EXPECT_FALSE(spec.has_value());
  EXPECT_EQ(diags_.Format(),
            "t.toml:3:1: error: unknown key \"fail_fats\" in [workflow] (did you mean \"fail_fast\"?)\n"
            "t.toml:4:2: error: unknown key \"workflw\" (did you mean \"workflow\"?)\n"
            "t.toml:6:1: error: unknown key \"retires\" in [defaults] (did you mean \"retries\"?)\n"
            "t.toml:10:15: error: unknown key \"cpus\" in \"resources\" (did you mean \"cpu\"?)\n");
}

TEST_F(LoaderTest, UnknownKeyOfAStepWithoutIdNamesItsIndex) {
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\"]\n[[steps]]\nrun = [\"true\"]\nneeds = []\nfoo = 1\n"),
            "t.toml:6:1: error: step 2 has no \"id\"\n"
            "t.toml:9:1: error: unknown key \"foo\" in step 2\n");
}

TEST_F(LoaderTest, WrongTypesAndRangesAreReported) {
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\"]\nretries = \"2\"\n"),
            "t.toml:6:11: error: \"retries\" must be an integer, got a string\n");
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\"]\nretries = -1\n"),
            "t.toml:6:11: error: \"retries\" must be >= 0, got -1\n");
  EXPECT_EQ(Errors("max_parallel = 0\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\n"),
            "t.toml:3:16: error: \"max_parallel\" must be >= 1, got 0\n");
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\", 1]\n"),
            "t.toml:5:16: error: \"run\" entries must be strings, got an integer\n");
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = []\n"), "t.toml:5:7: error: \"run\" must not be empty\n");
  EXPECT_EQ(Errors("[[steps]]\nid = 7\nrun = [\"true\"]\n"),
            "t.toml:4:6: error: \"id\" must be a string, got an integer\n");
}

TEST_F(LoaderTest, MalformedDurationNamesFieldAndValue) {
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\"]\ntimeout = \"5 minutes\"\n"),
            "t.toml:6:11: error: \"timeout\" must be a duration like \"30s\", \"5m\" or \"1h30m\", got \"5 minutes\"\n");
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\"]\ntimeout = 0\n"),
            "t.toml:6:11: error: \"timeout\" must be greater than zero\n");
}

TEST_F(LoaderTest, DurationsAcceptStringsAndIntegerSeconds) {
  WorkflowSpec spec = LoadOk(
      "timeout = \"1h30m\"\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\ntimeout = 90\nretry_delay = 0\n"
      "[[steps]]\nid = \"b\"\nrun = [\"true\"]\nretry_delay = \"250ms\"\n");
  EXPECT_EQ(spec.timeout_ms->value, 5400000);
  EXPECT_EQ(spec.steps[0].timeout_ms->value, 90000);
  EXPECT_EQ(spec.steps[0].timeout_ms->pos.line, 7);
  EXPECT_EQ(spec.steps[0].timeout_ms->pos.column, 11);
  EXPECT_EQ(spec.steps[0].retry_delay_ms->value, 0);  // a zero delay means retry at once
  EXPECT_EQ(spec.steps[1].retry_delay_ms->value, 250);
}

TEST_F(LoaderTest, ResourcesConvertToMillicoresAndBytes) {
  WorkflowSpec spec = LoadOk(
      "[[steps]]\nid = \"a\"\nrun = [\"true\"]\nresources = { cpu = \"250m\", memory = \"1Gi\" }\n"
      "[[steps]]\nid = \"b\"\nrun = [\"true\"]\nresources = { cpu = 2, memory = \"500M\" }\n"
      "[[steps]]\nid = \"c\"\nrun = [\"true\"]\nresources.cpu = \"0.5\"\n");
  EXPECT_EQ(spec.steps[0].cpu_millicores->value, 250);
  EXPECT_EQ(spec.steps[0].memory_bytes->value, 1LL << 30);
  EXPECT_EQ(spec.steps[1].cpu_millicores->value, 2000);
  EXPECT_EQ(spec.steps[1].memory_bytes->value, 500000000);
  EXPECT_EQ(spec.steps[2].cpu_millicores->value, 500);
  EXPECT_FALSE(spec.steps[2].memory_bytes.has_value());
}

TEST_F(LoaderTest, BadQuantitiesAreReported) {
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\"]\nresources = { memory = \"256MB\", cpu = \"x\" }\n"),
            "t.toml:6:24: error: \"memory\" must be a quantity like \"256Mi\", \"1Gi\" or \"500M\", got \"256MB\"\n"
            "t.toml:6:39: error: \"cpu\" must be a number of cores like 0.5 or millicores like \"500m\", got \"x\"\n");
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\"]\nresources = \"big\"\n"),
            "t.toml:6:13: error: \"resources\" must be a table like { cpu = 0.5, memory = \"256Mi\" }, got a string\n");
}

TEST_F(LoaderTest, RetryOnTakesReasonsAndExitCodes) {
  WorkflowSpec spec = LoadOk("[[steps]]\nid = \"a\"\nrun = [\"true\"]\nretry_on = [\"exited\", 137, 0, 255]\n");
  const auto& retry_on = spec.steps[0].retry_on->value;
  ASSERT_EQ(retry_on.size(), 4u);
  EXPECT_EQ(retry_on[0].kind, RetryOn::Kind::kExited);
  EXPECT_EQ(retry_on[1].kind, RetryOn::Kind::kExitCode);
  EXPECT_EQ(retry_on[1].exit_code, 137);
  EXPECT_EQ(retry_on[3].exit_code, 255);
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\"]\nretry_on = [\"oom_kiled\", 256]\n"),
            "t.toml:6:13: error: \"retry_on\" entries must be \"timeout\", \"oom_killed\", \"exited\" or an exit code "
            "0-255, got \"oom_kiled\" (did you mean \"oom_killed\"?)\n"
            "t.toml:6:26: error: \"retry_on\" entries must be \"timeout\", \"oom_killed\", \"exited\" or an exit code "
            "0-255, got 256\n");
}

TEST_F(LoaderTest, WhenTakesThreeValues) {
  WorkflowSpec spec = LoadOk(
      "[[steps]]\nid = \"a\"\nrun = [\"true\"]\nwhen = \"on_failure\"\n"
      "[[steps]]\nid = \"b\"\nrun = [\"true\"]\nwhen = \"on_success\"\n");
  EXPECT_EQ(spec.steps[0].when->value, When::kOnFailure);
  EXPECT_EQ(spec.steps[1].when->value, When::kOnSuccess);
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\"]\nwhen = \"on_falure\"\n"),
            "t.toml:6:8: error: \"when\" must be one of \"on_success\", \"on_failure\", \"always\", got \"on_falure\" "
            "(did you mean \"on_failure\"?)\n");
}

TEST_F(LoaderTest, WorkflowNameIsRequiredAndMustMatchThePattern) {
  std::optional<WorkflowSpec> spec = Load("[workflow]\ndescription = \"x\"\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\n");
  EXPECT_FALSE(spec.has_value());
  EXPECT_EQ(diags_.Format(), "t.toml:1:1: error: missing required key \"name\" in [workflow]\n");
  for (const char* bad : {"Upper", "-lead", "under_score", "", "has space"}) {
    spec = Load(std::string("[workflow]\nname = \"") + bad + "\"\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\n");
    EXPECT_FALSE(spec.has_value()) << bad;
  }
  spec = Load("[workflow]\nname = \"" + std::string(64, 'a') + "\"\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\n");
  EXPECT_FALSE(spec.has_value());
  spec = Load("[workflow]\nname = \"" + std::string(63, 'a') + "\"\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\n");
  EXPECT_TRUE(spec.has_value()) << diags_.Format();
  spec = Load("[workflow]\nname = \"0-ok-9\"\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\n");
  EXPECT_TRUE(spec.has_value()) << diags_.Format();
}

TEST_F(LoaderTest, StepIdsMustMatchThePatternAndBeUnique) {
  LoadOk("[[steps]]\nid = \"Step_1-x\"\nrun = [\"true\"]\n[[steps]]\nid = \"" + std::string(64, 'b') +
         "\"\nrun = [\"true\"]\n");
  EXPECT_EQ(Errors("[[steps]]\nid = \"a[1]\"\nrun = [\"true\"]\n"),
            "t.toml:4:6: error: step id \"a[1]\" must match [A-Za-z0-9][A-Za-z0-9_-]{0,63}\n");
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\"]\n[[steps]]\nid = \"b\"\nrun = [\"true\"]\n"
                   "[[steps]]\nid   =   \"a\"\nrun = [\"true\"]\n"),
            "t.toml:10:10: error: duplicate step id \"a\" (first defined at line 4)\n");
}

TEST_F(LoaderTest, RunAndShellTogetherInOneTableIsAnError) {
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nshell = \"true\"\nrun = [\"true\"]\n"),
            "t.toml:6:7: error: step \"a\" has both \"run\" and \"shell\" (give exactly one)\n");
}

TEST_F(LoaderTest, StepMayTakeItsCommandFromDefaults) {
  WorkflowSpec spec = LoadOk("[defaults]\nshell = \"make\"\n[[steps]]\nid = \"a\"\n[[steps]]\nid = \"b\"\nrun = [\"x\"]\n");
  EXPECT_EQ(spec.defaults.shell->value, "make");
  EXPECT_FALSE(spec.steps[0].run.has_value());
  EXPECT_FALSE(spec.steps[0].shell.has_value());
  EXPECT_TRUE(spec.steps[1].run.has_value());
}

TEST_F(LoaderTest, AtLeastOneStepIsRequired) {
  EXPECT_EQ(Errors(""), "t.toml: error: no steps: a workflow needs at least one [[steps]] table\n");
  EXPECT_FALSE(Load("steps = []\n[workflow]\nname = \"wf\"\n").has_value());
  EXPECT_EQ(diags_.Format(), "t.toml:1:9: error: no steps: a workflow needs at least one [[steps]] table\n");
  EXPECT_EQ(Errors("[steps]\nid = \"a\"\n"),
            "t.toml:3:1: error: \"steps\" must be an array of tables ([[steps]]), got a table\n");
}

TEST_F(LoaderTest, ForEachListConvertsScalarsToText) {
  WorkflowSpec spec = LoadOk("[[steps]]\nid = \"a\"\nrun = [\"true\"]\nfor_each = [\"x\", 3, 0.5, true]\n");
  EXPECT_EQ(spec.steps[0].for_each.kind, ForEach::Kind::kList);
  EXPECT_EQ(spec.steps[0].for_each.items, (std::vector<std::string>{"x", "3", "0.5", "true"}));
  EXPECT_EQ(spec.steps[0].for_each.pos.line, 6);
}

TEST_F(LoaderTest, ForEachTableKeepsAxesInFileOrder) {
  WorkflowSpec spec =
      LoadOk("[[steps]]\nid = \"a\"\nrun = [\"true\"]\nfor_each = { split = [\"test\"], model = [\"b\", \"a\"] }\n");
  const ForEach& fe = spec.steps[0].for_each;
  EXPECT_EQ(fe.kind, ForEach::Kind::kAxes);
  ASSERT_EQ(fe.axes.size(), 2u);
  EXPECT_EQ(fe.axes[0].first, "split");
  EXPECT_EQ(fe.axes[1].first, "model");
  EXPECT_EQ(fe.axes[1].second, (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\"]\nfor_each = []\n"),
            "t.toml:6:12: error: \"for_each\" must not be empty\n");
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\"]\nfor_each = { 1x = [\"a\"] }\n"),
            "t.toml:6:14: error: for_each axis \"1x\" must be an identifier ([A-Za-z_][A-Za-z0-9_]*)\n");
}

TEST_F(LoaderTest, DefaultsCannotSetIdNeedsOrForEach) {
  EXPECT_EQ(Errors("[defaults]\nneeds = []\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\n"),
            "t.toml:4:1: error: \"needs\" cannot be set in [defaults], only in a step\n");
}

TEST_F(LoaderTest, EnvValuesMustBeStringsAndKeepFileOrder) {
  WorkflowSpec spec = LoadOk("[env]\nZ = \"1\"\nA = \"2\"\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\nenv.Y = \"3\"\n");
  ASSERT_EQ(spec.env.size(), 2u);
  EXPECT_EQ(spec.env[0].first, "Z");
  EXPECT_EQ(spec.env[1].first, "A");
  EXPECT_EQ(spec.env[1].second.value, "2");
  EXPECT_EQ(spec.env[1].second.pos.line, 5);
  ASSERT_EQ(spec.steps[0].env.size(), 1u);
  EXPECT_EQ(spec.steps[0].env[0].second.value, "3");
  EXPECT_EQ(Errors("[env]\nPORT = 80\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\n"),
            "t.toml:4:8: error: env \"PORT\" must be a string, got an integer\n");
}

TEST_F(LoaderTest, ParamsAreStoredAsText) {
  WorkflowSpec spec =
      LoadOk("[params]\nmodel = \"small\"\nseed = 42\nratio = 0.25\nverbose = false\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\n");
  ASSERT_EQ(spec.params.size(), 4u);
  EXPECT_EQ(spec.params[0].first, "model");
  EXPECT_EQ(spec.params[1].second.value, "42");
  EXPECT_EQ(spec.params[2].second.value, "0.25");
  EXPECT_EQ(spec.params[3].second.value, "false");
  EXPECT_EQ(Errors("[params]\nlist = [1]\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\n"),
            "t.toml:4:8: error: param \"list\" must be a string, number or boolean, got an array\n");
}

TEST_F(LoaderTest, InputsLeavingTheDirectoryAreRejected) {
  EXPECT_EQ(Errors("[[steps]]\nid = \"a\"\nrun = [\"true\"]\ninputs = [\"ok/*.txt\", \"../secret.txt\", \"/etc/passwd\", "
                   "\"a/{{item}}/../../..\"]\n"),
            "t.toml:6:23: error: input \"../secret.txt\" leaves the workflow's directory\n"
            "t.toml:6:40: error: input \"/etc/passwd\" is an absolute path; inputs are relative to the workflow's "
            "directory\n"
            "t.toml:6:55: error: input \"a/{{item}}/../../..\" leaves the workflow's directory\n");
}

TEST_F(LoaderTest, SymlinkInputResolvingOutsideIsRejected) {
  TempDir tmp;
  fs::create_directory(tmp.path() / "wf");
  fs::create_directory(tmp.path() / "outside");
  fs::create_directory_symlink(tmp.path() / "outside", tmp.path() / "wf" / "out-dir");
  fs::create_symlink("data.txt", tmp.path() / "wf" / "in-link");
  std::ofstream(tmp.path() / "wf" / "data.txt") << "x";
  std::string path = (tmp.path() / "wf" / "w.toml").string();
  std::optional<WorkflowSpec> spec = Load(
      std::string(kHeader) + "[[steps]]\nid = \"a\"\nrun = [\"true\"]\ninputs = [\"in-link\", \"out-dir/file\", "
                             "\"out-dir/*.txt\", \"data.txt\"]\n",
      path);
  EXPECT_FALSE(spec.has_value());
  std::string outside = (tmp.path() / "outside").string();
  EXPECT_EQ(diags_.Format(),
            path + ":6:22: error: input \"out-dir/file\" leaves the workflow's directory (it resolves to \"" +
                outside + "/file\")\n" + path +
                ":6:38: error: input \"out-dir/*.txt\" leaves the workflow's directory (it resolves to \"" + outside +
                "\")\n");
}

TEST_F(LoaderTest, BackendSubTablesBecomeRawOptions) {
  WorkflowSpec spec = LoadOk(
      "[backends.kubernetes]\nnamespace = \"evals\"\nqps = 5\n"
      "[[steps]]\nid = \"a\"\nrun = [\"true\"]\n"
      "[steps.kubernetes]\nnode_selector = { \"nvidia.com/gpu.product\" = \"H100\" }\n"
      "limits = [1, 2.5, true]\n");
  const StepSpec& step = spec.steps[0];
  ASSERT_EQ(step.backend_options.count("kubernetes"), 1u);
  const RawOptionTable& table = step.backend_options.at("kubernetes");
  EXPECT_EQ(table.pos.line, 9);
  ASSERT_EQ(table.options.size(), 2u);
  EXPECT_EQ(table.options[0].key, "node_selector");
  EXPECT_EQ(table.options[0].value, nlohmann::json({{"nvidia.com/gpu.product", "H100"}}));
  EXPECT_EQ(table.options[0].pos.line, 10);
  EXPECT_EQ(table.options[1].value, nlohmann::json::parse("[1, 2.5, true]"));
  const RawOptionTable& backend = spec.backends.at("kubernetes");
  ASSERT_EQ(backend.options.size(), 2u);
  EXPECT_EQ(backend.options[1].key, "qps");
  EXPECT_EQ(backend.options[1].value, 5);
  EXPECT_EQ(Errors("[backends]\nlocalproc = 1\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\n"),
            "t.toml:4:13: error: \"backends.localproc\" must be a table, got an integer\n");
}

TEST_F(LoaderTest, DefaultsMayHoldBackendSubTables) {
  WorkflowSpec spec = LoadOk("[defaults.compose]\nservice = \"x\"\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\n");
  EXPECT_EQ(spec.defaults.backend_options.at("compose").options[0].value, "x");
}

TEST_F(LoaderTest, SyntaxErrorStopsAtTheFirst) {
  std::optional<WorkflowSpec> spec = Load("[workflow]\nname = \"x\"\nbad bad\nalso = = bad\n");
  EXPECT_FALSE(spec.has_value());
  ASSERT_EQ(diags_.all().size(), 1u);
  EXPECT_EQ(diags_.all()[0].pos.line, 3);
  EXPECT_EQ(diags_.Format().rfind("t.toml:3:", 0), 0u) << diags_.Format();
}

TEST_F(LoaderTest, EverySemanticErrorIsReportedInFileOrder) {
  std::optional<WorkflowSpec> spec = Load(
      "[workflow]\nname = \"BAD\"\n"
      "[[steps]]\nid = \"a\"\nrun = [\"true\"]\nretries = -1\n"
      "[[steps]]\nzzz = 1\nid = \"a\"\nrun = [\"true\"]\ntimeout = \"soon\"\n");
  EXPECT_FALSE(spec.has_value());
  EXPECT_EQ(diags_.all().size(), 5u) << diags_.Format();
  for (size_t i = 1; i < diags_.all().size(); ++i) {
    EXPECT_LE(diags_.all()[i - 1].pos.line, diags_.all()[i].pos.line);
  }
}

TEST_F(LoaderTest, DeepNestingIsRefusedBeforeParsing) {
  std::string text = std::string(kHeader) + "x = " + std::string(100, '[') + std::string(100, ']') + "\n";
  EXPECT_FALSE(Load(text).has_value());
  // [workflow] (1) + x (1) + 62 arrays make 64: the 63rd bracket, at column 5 + 62, is one too many.
  EXPECT_EQ(diags_.Format(),
            "t.toml:3:67: error: too deeply nested: more than 64 levels of arrays, inline tables, dotted keys or "
            "table headers\n");
}

TEST_F(LoaderTest, OversizeFileIsRefusedBeforeReading) {
  TempDir tmp;
  fs::path big = tmp.path() / "big.toml";
  std::ofstream(big).close();
  fs::resize_file(big, kMaxWorkflowBytes + 1);  // sparse: takes no disk space
  Diagnostics diags(big.string());
  EXPECT_FALSE(LoadWorkflowFile(big.string(), diags).has_value());
  EXPECT_EQ(diags.Format(), big.string() + ": error: file is too large: 268435457 bytes, the limit is 268435456 (256 MiB)\n");
}

TEST_F(LoaderTest, MissingFileIsADiagnostic) {
  Diagnostics diags("/nonexistent/w.toml");
  EXPECT_FALSE(LoadWorkflowFile("/nonexistent/w.toml", diags).has_value());
  EXPECT_TRUE(diags.has_errors());
}

TEST_F(LoaderTest, HostileTextGivesADiagnosticNotACrash) {
  std::string deep_key = "a";
  for (int i = 0; i < 50000; ++i) deep_key += ".a";
  std::string deep_inline;
  for (int i = 0; i < 50000; ++i) deep_inline += "{a=";
  const std::string hostile[] = {
      std::string(100000, '['),
      "a = " + std::string(100000, '['),
      deep_key + " = 1\n",
      "[" + deep_key + "]\n",
      "[[" + deep_key + "]]\n",
      "x = " + deep_inline,
      std::string(kHeader) + std::string(1 << 20, 'k') + " = 1\n[[steps]]\nid = \"a\"\nrun = [\"true\"]\n",
      std::string("[workflow]\nname = \"a\0b\"\n", 22),
      std::string(1000, '\0'),
      std::string(kHeader) + "[[steps]]\nid = \"" + std::string(100000, 'x') + "\"\nrun = [\"true\"]\n",
      "\"\"\"\n" + std::string(1000, '"'),
      "\xff\xfe\xfd",
  };
  for (const std::string& text : hostile) {
    EXPECT_FALSE(Load(text).has_value()) << text.substr(0, 40);
    EXPECT_TRUE(diags_.has_errors());
    EXPECT_LT(diags_.Format().size(), 10000u) << "messages must not echo huge input";
  }
}

TEST_F(LoaderTest, LoadsHundredThousandSteps) {
  constexpr int kSteps = 100000;
  std::string text = std::string(kHeader);
  text.reserve(kSteps * 60);
  for (int i = 0; i < kSteps; ++i) {
    text += "[[steps]]\nid = \"s" + std::to_string(i) + "\"\n";
    if (i > 0) text += "needs = [\"s" + std::to_string(i - 1) + "\"]\n";
    text += "run = [\"true\"]\n";
  }
  auto start = std::chrono::steady_clock::now();
  std::optional<WorkflowSpec> spec = Load(text);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(spec.has_value()) << diags_.Format().substr(0, 1000);
  EXPECT_EQ(spec->steps.size(), static_cast<size_t>(kSteps));
  EXPECT_EQ(spec->steps.back().needs[0].value, "s99998");
  std::printf("loaded %d steps (%zu bytes) in %lld ms\n", kSteps, text.size(), static_cast<long long>(ms));
}

}  // namespace
}  // namespace crucible::loader

// Tests of the plugin host: loading (one fixture plugin per failure), option
// checking, and the backend adapter through the real "echo" fixture plugin.
#include "host/plugin_host.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace crucible::host {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::string kPluginDir = CRUCIBLE_TEST_PLUGIN_DIR;

std::string Dir(const std::string& fixture_case) { return kPluginDir + "/" + fixture_case; }

/// Loads the good plugin's directory plus one failure case's directory.
struct CaseResult {
  PluginHost host;
  LoadFailure failure;
};

CaseResult LoadCase(const std::string& fixture_case) {
  PluginHost host = PluginHost::Load({Dir("good"), Dir(fixture_case)});
  LoadFailure failure;
  if (host.failures().size() == 1) failure = host.failures()[0];
  return CaseResult{std::move(host), failure};
}

void ExpectGoodPluginAlongside(const PluginHost& host, size_t failures) {
  ASSERT_EQ(host.plugins().size(), 1u);
  EXPECT_EQ(host.plugins()[0]->name(), "echo");
  EXPECT_EQ(host.failures().size(), failures);
}

TEST(PluginHostTest, LoadsTheGoodPlugin) {
  PluginHost host = PluginHost::Load({Dir("good")});
  EXPECT_TRUE(host.failures().empty());
  ASSERT_EQ(host.plugins().size(), 1u);
  const Plugin* echo = host.Find("echo");
  ASSERT_NE(echo, nullptr);
  EXPECT_EQ(echo->version(), "1.0.0");
  EXPECT_EQ(echo->abi(), "0.2");
  EXPECT_EQ(echo->path(), Dir("good") + "/libcrucible-backend-echo.so");
  EXPECT_EQ(echo->description(), "completes every attempt at once (test fixture)");
  EXPECT_EQ(echo->options().size(), 10u);
  EXPECT_EQ(echo->Describe(), "echo: completes every attempt at once; for tests");
  EXPECT_EQ(host.names(), std::vector<std::string>{"echo"});
  EXPECT_EQ(host.Find("echoo"), nullptr);
}

TEST(PluginHostTest, WrongAbiMajorNamesBothVersions) {
  CaseResult r = LoadCase("abi_major");
  ExpectGoodPluginAlongside(r.host, 1);
  EXPECT_EQ(r.failure.path, Dir("abi_major") + "/libcrucible-backend-future.so");
  EXPECT_EQ(r.failure.why, "ABI 1.0, this crucible-engine speaks ABI 0.2");
}

TEST(PluginHostTest, MissingEntrySymbolNamesTheExpectedSymbol) {
  CaseResult r = LoadCase("no_symbol");
  ExpectGoodPluginAlongside(r.host, 1);
  EXPECT_EQ(r.failure.path, Dir("no_symbol") + "/libcrucible-backend-nosym.so");
  EXPECT_EQ(r.failure.why, "no entry symbol crucible_backend_api_v0 (built for another ABI major?)");
}

TEST(PluginHostTest, EntryReturningNullIsRefused) {
  CaseResult r = LoadCase("null_entry");
  ExpectGoodPluginAlongside(r.host, 1);
  EXPECT_EQ(r.failure.why, "crucible_backend_api_v0() returned no table (NULL)");
}

TEST(PluginHostTest, TooSmallStructIsRefused) {
  CaseResult r = LoadCase("small_struct");
  ExpectGoodPluginAlongside(r.host, 1);
  EXPECT_EQ(r.failure.why, "table struct_size " + std::to_string(offsetof(crucible_backend_api, create)) +
                               " is too small: ABI 0.2 needs at least " +
                               std::to_string(offsetof(crucible_backend_api, cancel) + sizeof(void*)) +
                               " bytes (every member up to cancel)");
}

TEST(PluginHostTest, NullFunctionPointerIsRefused) {
  CaseResult r = LoadCase("null_function");
  ExpectGoodPluginAlongside(r.host, 1);
  EXPECT_EQ(r.failure.why, "plugin \"nullfn\": required function poll is NULL");
}

TEST(PluginHostTest, BadNameIsRefused) {
  CaseResult r = LoadCase("bad_name");
  ExpectGoodPluginAlongside(r.host, 1);
  EXPECT_EQ(r.failure.why, "invalid plugin name \"Bad Name\" (must match [a-z][a-z0-9_-]*)");
}

TEST(PluginHostTest, DuplicateNameNamesTheFirstPath) {
  CaseResult r = LoadCase("duplicate");
  ExpectGoodPluginAlongside(r.host, 1);
  EXPECT_EQ(r.host.plugins()[0]->path(), Dir("good") + "/libcrucible-backend-echo.so");
  EXPECT_EQ(r.failure.path, Dir("duplicate") + "/libcrucible-backend-echo2.so");
  EXPECT_EQ(r.failure.why,
            "a plugin named \"echo\" is already loaded from " + Dir("good") + "/libcrucible-backend-echo.so");
}

TEST(PluginHostTest, DuplicateOptionDeclarationIsRefused) {
  CaseResult r = LoadCase("bad_options");
  ExpectGoodPluginAlongside(r.host, 1);
  EXPECT_EQ(r.failure.why, "plugin \"badopts\": option \"region\" is declared twice");
}

TEST(PluginHostTest, TextFileIsNotASharedLibrary) {
  CaseResult r = LoadCase("junk");
  ExpectGoodPluginAlongside(r.host, 1);
  EXPECT_EQ(r.failure.path, Dir("junk") + "/libcrucible-backend-junk.so");
  EXPECT_THAT(r.failure.why, StartsWith("not a shared library ("));
}

TEST(PluginHostTest, MissingDependencyNamesTheLibrary) {
  CaseResult r = LoadCase("missing_dep");
  ExpectGoodPluginAlongside(r.host, 1);
  EXPECT_EQ(r.failure.why,
            "cannot be loaded: libcrucible-fixture-gone.so: cannot open shared object file: No such file or directory");
}

TEST(PluginHostTest, EveryBadPluginFailsAndTheGoodOneStillLoads) {
  std::vector<std::string> dirs = {Dir("abi_major"),   Dir("no_symbol"), Dir("null_entry"), Dir("small_struct"),
                                   Dir("good"),        Dir("bad_name"),  Dir("duplicate"),  Dir("null_function"),
                                   Dir("bad_options"), Dir("junk"),      Dir("missing_dep")};
  PluginHost host = PluginHost::Load(dirs);
  ASSERT_EQ(host.plugins().size(), 1u);
  EXPECT_EQ(host.plugins()[0]->name(), "echo");
  EXPECT_EQ(host.failures().size(), 10u);
  for (const LoadFailure& f : host.failures()) {
    std::printf("[ failure  ] %s: %s\n", std::filesystem::path(f.path).filename().c_str(), f.why.c_str());
  }
}

TEST(PluginHostTest, MissingDirectoryAndRepeatedDirectoryAreHarmless) {
  PluginHost host = PluginHost::Load({kPluginDir + "/does-not-exist", Dir("good"), Dir("good") + "/"});
  EXPECT_EQ(host.plugins().size(), 1u);
  EXPECT_TRUE(host.failures().empty());
}

TEST(PluginHostTest, DefaultSearchPathPutsEnvironmentFirstThenBuildTree) {
  const char* old = std::getenv("CRUCIBLE_PLUGIN_PATH");
  std::string saved = old ? old : "";
  setenv("CRUCIBLE_PLUGIN_PATH", "/opt/a::/opt/b", 1);
  std::vector<std::string> path = PluginHost::DefaultSearchPath();
  if (old) {
    setenv("CRUCIBLE_PLUGIN_PATH", saved.c_str(), 1);
  } else {
    unsetenv("CRUCIBLE_PLUGIN_PATH");
  }
  // This test binary runs from the build tree.
  EXPECT_EQ(path, (std::vector<std::string>{"/opt/a", "/opt/b", CRUCIBLE_BUILD_PLUGIN_DIR}));
}

// --- CheckOptions ------------------------------------------------------------

loader::RawOption Raw(const std::string& key, nlohmann::json value, int line) {
  return loader::RawOption{key, std::move(value), SourcePos{line, 1}};
}

class CheckOptionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    host_ = std::make_unique<PluginHost>(PluginHost::Load({Dir("good")}));
    echo_ = host_->Find("echo");
    ASSERT_NE(echo_, nullptr);
  }
  std::vector<OptionValue> Check(std::vector<loader::RawOption> options,
                                 crucible_option_scope scope = CRUCIBLE_SCOPE_BACKEND) {
    loader::RawOptionTable table{std::move(options), SourcePos{3, 1}};
    return echo_->CheckOptions(table, scope, scope == CRUCIBLE_SCOPE_BACKEND ? "backends.echo" : "steps.echo", diags_);
  }
  const OptionValue* Find(const std::vector<OptionValue>& values, const std::string& name) {
    for (const OptionValue& v : values) {
      if (v.name == name) return &v;
    }
    return nullptr;
  }

  std::unique_ptr<PluginHost> host_;
  const Plugin* echo_ = nullptr;
  Diagnostics diags_{"wf.toml"};
};

TEST_F(CheckOptionsTest, UnknownKeySuggestsNearest) {
  auto values = Check({Raw("namspace", "evals", 5)});
  EXPECT_TRUE(values.empty());
  ASSERT_EQ(diags_.all().size(), 1u);
  EXPECT_EQ(diags_.all()[0].pos.line, 5);
  EXPECT_EQ(diags_.all()[0].message, "unknown option \"namspace\" for backend \"echo\" (did you mean \"namespace\"?)");
}

TEST_F(CheckOptionsTest, UnknownKeyWithNothingNearHasNoSuggestion) {
  Check({Raw("zzzzzzzz", 1, 5)});
  ASSERT_EQ(diags_.all().size(), 1u);
  EXPECT_EQ(diags_.all()[0].message, "unknown option \"zzzzzzzz\" for backend \"echo\"");
}

TEST_F(CheckOptionsTest, EveryTypeConvertsToTypedValues) {
  auto values = Check({Raw("namespace", "evals", 4), Raw("max_parallel", 8, 5), Raw("verbose", true, 6),
                       Raw("ratio", 2, 7), Raw("delay", "1m30s", 8), Raw("tags", {"a", "b"}, 9),
                       Raw("labels", {{"team", "ml"}}, 10)});
  EXPECT_FALSE(diags_.has_errors()) << diags_.Format();
  ASSERT_EQ(values.size(), 7u);
  EXPECT_EQ(Find(values, "namespace")->string_value, "evals");
  EXPECT_EQ(Find(values, "namespace")->type, CRUCIBLE_OPTION_STRING);
  EXPECT_EQ(Find(values, "max_parallel")->int_value, 8);
  EXPECT_EQ(Find(values, "verbose")->int_value, 1);
  EXPECT_DOUBLE_EQ(Find(values, "ratio")->float_value, 2.0);  // FLOAT accepts an integer
  EXPECT_EQ(Find(values, "delay")->int_value, 90000);
  EXPECT_EQ(Find(values, "tags")->list, (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(Find(values, "labels")->map.size(), 1u);
  EXPECT_EQ(Find(values, "labels")->map[0], (std::pair<std::string, std::string>{"team", "ml"}));
}

TEST_F(CheckOptionsTest, DurationAsIntegerSecondsIsMilliseconds) {
  auto values = Check({Raw("delay", 5, 4)});
  ASSERT_EQ(values.size(), 1u);
  EXPECT_EQ(values[0].int_value, 5000);
}

TEST_F(CheckOptionsTest, WrongTypesNameTheExpectedType) {
  auto values = Check({Raw("max_parallel", "8", 4), Raw("verbose", 1, 5), Raw("delay", "soon", 6),
                       Raw("tags", {"a", 1}, 7), Raw("labels", {{"team", 3}}, 8), Raw("namespace", 2.5, 9)});
  EXPECT_TRUE(values.empty());
  ASSERT_EQ(diags_.all().size(), 6u);
  EXPECT_EQ(diags_.all()[0].message, "option \"max_parallel\" for backend \"echo\": expected an integer, got a string");
  EXPECT_EQ(diags_.all()[1].message, "option \"verbose\" for backend \"echo\": expected a boolean, got an integer");
  EXPECT_THAT(diags_.all()[2].message, HasSubstr("invalid duration \"soon\""));
  EXPECT_EQ(diags_.all()[3].message,
            "option \"tags\" for backend \"echo\": expected a list of strings, got an item that is an integer");
  EXPECT_EQ(diags_.all()[4].message,
            "option \"labels\" for backend \"echo\": expected a table of strings, but \"team\" is an integer");
  EXPECT_EQ(diags_.all()[5].message, "option \"namespace\" for backend \"echo\": expected a string, got a float");
  EXPECT_EQ(diags_.all()[5].pos.line, 9);
}

TEST_F(CheckOptionsTest, StepScopeSeesOnlyStepOptions) {
  auto values = Check({Raw("priority", 3, 4), Raw("namespace", "x", 5)}, CRUCIBLE_SCOPE_STEP);
  ASSERT_EQ(values.size(), 1u);
  EXPECT_EQ(values[0].name, "priority");
  ASSERT_EQ(diags_.all().size(), 1u);
  EXPECT_EQ(diags_.all()[0].message, "unknown per-step option \"namespace\" for backend \"echo\" in [steps.echo]");
}

/// A plugin with declared options only, to test required options.
class DeclOnlyPlugin : public Plugin {
 public:
  DeclOnlyPlugin() {
    options_.push_back(crucible_option_decl{sizeof(crucible_option_decl), "namespace", CRUCIBLE_OPTION_STRING,
                                            CRUCIBLE_SCOPE_BACKEND, 1, nullptr});
    options_.push_back(crucible_option_decl{sizeof(crucible_option_decl), "context", CRUCIBLE_OPTION_STRING,
                                            CRUCIBLE_SCOPE_BACKEND, 0, nullptr});
  }
  const std::string& name() const override { return name_; }
  const std::string& version() const override { return name_; }
  const std::string& path() const override { return name_; }
  std::string abi() const override { return "0.2"; }
  const std::string& description() const override { return name_; }
  const std::vector<crucible_option_decl>& options() const override { return options_; }
  std::string Describe() const override { return ""; }
  std::vector<StepFinding> CheckStep(const std::string&, const std::string&, int64_t, int64_t, int64_t,
                                     const std::vector<OptionValue>&, const std::vector<OptionValue>&) const override {
    return {};
  }
  Result<std::unique_ptr<Backend>> Create(const std::vector<OptionValue>&, const std::string&, const std::string&,
                                          WakeFn, int) const override {
    return MakeError(ErrorCode::kUnavailable, "not a real plugin");
  }

 private:
  std::string name_ = "kubernetes";
  std::vector<crucible_option_decl> options_;
};

TEST(CheckOptionsRequiredTest, MissingRequiredIsReportedAtTheTable) {
  DeclOnlyPlugin plugin;
  Diagnostics diags("wf.toml");
  loader::RawOptionTable table{{loader::RawOption{"context", "prod", SourcePos{8, 1}}}, SourcePos{7, 1}};
  auto values = plugin.CheckOptions(table, CRUCIBLE_SCOPE_BACKEND, "backends.kubernetes", diags);
  EXPECT_EQ(values.size(), 1u);
  ASSERT_EQ(diags.all().size(), 1u);
  EXPECT_EQ(diags.all()[0].pos.line, 7);
  EXPECT_EQ(diags.Format(),
            "wf.toml:7:1: error: [backends.kubernetes] is missing required option \"namespace\" (a string) of "
            "backend \"kubernetes\"\n");
}

// --- The backend adapter, through the echo plugin ----------------------------

class EchoBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "crucible-host-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    tmp_ = tmpl;
    host_ = std::make_unique<PluginHost>(PluginHost::Load({Dir("good")}));
    echo_ = host_->Find("echo");
    ASSERT_NE(echo_, nullptr);
  }
  void TearDown() override { std::filesystem::remove_all(tmp_); }

  std::unique_ptr<Backend> Create(std::vector<OptionValue> options = {}) {
    auto b = echo_->Create(options, tmp_, "r1", [this] { ++wakes_; });
    EXPECT_TRUE(b.ok()) << (b.ok() ? "" : b.error().message);
    return b.ok() ? std::move(b.value()) : nullptr;
  }

  LaunchSpec Launch(uint64_t key, std::vector<std::string> argv) {
    LaunchSpec l;
    l.attempt_key = key;
    l.run_id = "r1";
    l.step_id = "s" + std::to_string(key);
    l.argv = std::move(argv);
    l.env = {{"A", "1"}};
    l.log_path = tmp_ + "/s" + std::to_string(key) + ".log";
    l.work_dir = tmp_ + "/work";
    return l;
  }

  std::string tmp_;
  std::unique_ptr<PluginHost> host_;
  const Plugin* echo_ = nullptr;
  std::atomic<int> wakes_{0};
};

TEST_F(EchoBackendTest, StartPollRoundTrip) {
  OptionValue max;
  max.name = "max_parallel";
  max.type = CRUCIBLE_OPTION_INT;
  max.int_value = 4;
  auto backend = Create({max});
  ASSERT_TRUE(backend);
  EXPECT_EQ(backend->name(), "echo");
  EXPECT_EQ(backend->Capacity(), 4);
  auto handle = backend->Start(Launch(7, {"3", "extra arg"}));
  ASSERT_TRUE(handle.ok()) << handle.error().message;
  EXPECT_EQ(*handle, "echo:r1:s7:1");
  EXPECT_EQ(wakes_.load(), 1);
  EXPECT_EQ(backend->Capacity(), 3);
  ASSERT_TRUE(backend->Start(Launch(8, {"0"})).ok());

  std::vector<AttemptResult> out;
  ASSERT_TRUE(backend->Poll(0, out).ok());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].attempt_key, 7u);
  EXPECT_EQ(out[0].outcome, CRUCIBLE_OUTCOME_FAILED);
  EXPECT_EQ(out[0].reason, CRUCIBLE_REASON_EXITED);
  EXPECT_EQ(out[0].exit_code, 3);
  EXPECT_EQ(out[0].outputs_text, std::optional<std::string>("k=v"));
  EXPECT_EQ(out[0].log_bytes_kept, std::string("3 extra arg\n").size());
  EXPECT_GT(out[0].ended_at_ms, 0);
  EXPECT_EQ(out[1].outcome, CRUCIBLE_OUTCOME_SUCCEEDED);
  EXPECT_EQ(out[1].reason, CRUCIBLE_REASON_NONE);
  EXPECT_EQ(out[1].exit_code, 0);
  std::ifstream log(tmp_ + "/s7.log");
  std::stringstream text;
  text << log.rdbuf();
  EXPECT_EQ(text.str(), "3 extra arg\n");

  out.clear();
  ASSERT_TRUE(backend->Poll(0, out).ok());
  EXPECT_TRUE(out.empty());
}

TEST_F(EchoBackendTest, CancelledAttemptArrivesThroughPoll) {
  auto backend = Create();
  ASSERT_TRUE(backend);
  ASSERT_TRUE(backend->Start(Launch(1, {"hang"})).ok());
  std::vector<AttemptResult> out;
  ASSERT_TRUE(backend->Poll(0, out).ok());
  EXPECT_TRUE(out.empty());
  backend->Cancel(1, 100);
  EXPECT_EQ(wakes_.load(), 1);
  ASSERT_TRUE(backend->Poll(0, out).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].outcome, CRUCIBLE_OUTCOME_CANCELLED);
  EXPECT_EQ(out[0].reason, CRUCIBLE_REASON_CANCELLED);
  EXPECT_EQ(out[0].message, "cancelled by the engine");
}

TEST_F(EchoBackendTest, ExceptionInStartComesBackAsAnError) {
  auto backend = Create();
  ASSERT_TRUE(backend);
  auto handle = backend->Start(Launch(1, {"throw"}));
  ASSERT_FALSE(handle.ok());
  EXPECT_EQ(handle.error().code, ErrorCode::kInternal);
  EXPECT_EQ(handle.error().message, "backend \"echo\" failed to start s1: echo: asked to throw");
  // The instance still works.
  EXPECT_TRUE(backend->Start(Launch(2, {"0"})).ok());
}

TEST_F(EchoBackendTest, UnavailableIsAnInfrastructureError) {
  auto backend = Create();
  ASSERT_TRUE(backend);
  auto handle = backend->Start(Launch(1, {"unavailable"}));
  ASSERT_FALSE(handle.ok());
  EXPECT_EQ(handle.error().code, ErrorCode::kUnavailable);
  EXPECT_THAT(handle.error().message, HasSubstr("echo: substrate unreachable (asked to be)"));
}

TEST_F(EchoBackendTest, ResultWithoutOutcomeIsABackendErrorNeverSuccess) {
  auto backend = Create();
  ASSERT_TRUE(backend);
  ASSERT_TRUE(backend->Start(Launch(1, {"unset"})).ok());
  std::vector<AttemptResult> out;
  ASSERT_TRUE(backend->Poll(0, out).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].outcome, CRUCIBLE_OUTCOME_FAILED);
  EXPECT_EQ(out[0].reason, CRUCIBLE_REASON_BACKEND_ERROR);
  EXPECT_EQ(out[0].message, "plugin returned an attempt result without an outcome");
}

TEST_F(EchoBackendTest, CreateFailureCarriesThePluginMessage) {
  OptionValue fail;
  fail.name = "fail_create";
  fail.type = CRUCIBLE_OPTION_BOOL;
  fail.int_value = 1;
  auto b = echo_->Create({fail}, tmp_, "r1", nullptr);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(b.error().message, "backend \"echo\": echo: asked to fail in create");
}

TEST_F(EchoBackendTest, BackendKeepsTheLibraryLoadedAfterTheHostIsGone) {
  auto backend = Create();
  ASSERT_TRUE(backend);
  host_.reset();
  echo_ = nullptr;
  ASSERT_TRUE(backend->Start(Launch(1, {"0"})).ok());
  std::vector<AttemptResult> out;
  ASSERT_TRUE(backend->Poll(0, out).ok());
  EXPECT_EQ(out.size(), 1u);
}

TEST_F(EchoBackendTest, CheckStepReportsFindings) {
  auto findings = echo_->CheckStep("s", "forbidden", 0, int64_t{2} << 30, 0, {}, {});
  ASSERT_EQ(findings.size(), 2u);
  EXPECT_EQ(findings[0].severity, CRUCIBLE_SEVERITY_ERROR);
  EXPECT_EQ(findings[0].field, "image");
  EXPECT_EQ(findings[0].message, "echo cannot run image \"forbidden\"");
  EXPECT_EQ(findings[1].severity, CRUCIBLE_SEVERITY_WARNING);
  EXPECT_EQ(findings[1].field, "resources.memory");
  EXPECT_TRUE(echo_->CheckStep("s", "ok", 0, 0, 0, {}, {}).empty());
}

}  // namespace
}  // namespace crucible::host

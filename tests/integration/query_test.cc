// The query verbs (runs, logs, plugins) and usage errors.
#include <regex>

#include "integration_fixture.h"

namespace crucible::testing {
namespace {

using QueryTest = IntegrationTest;

std::string Workflow(const std::string& name, const std::string& body) {
  return "[workflow]\nname = \"" + name + "\"\n\n" + body;
}

TEST_F(QueryTest, RunsListsRunsNewestFirst) {
  std::string one = Write("one.toml", Workflow("first", "[[steps]]\nid = \"a\"\nrun = [\"true\"]\n"));
  std::string two = Write("two.toml", Workflow("second", "[[steps]]\nid = \"a\"\nrun = [\"false\"]\n"));
  EngineResult r1 = Engine({"run", one});
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  EngineResult r2 = Engine({"run", two});
  ASSERT_EQ(r2.exit_code, 1) << r2.err;

  EngineResult runs = Engine({"runs", "--json"});
  ASSERT_EQ(runs.exit_code, 0) << runs.err;
  nlohmann::json list = Json(runs.out);
  ASSERT_EQ(list.size(), 2u) << runs.out;
  EXPECT_EQ(list[0]["run_id"], FirstLine(r2.err));
  EXPECT_EQ(list[0]["workflow"], "second");
  EXPECT_EQ(list[0]["state"], "failed");
  EXPECT_EQ(list[1]["workflow"], "first");
  EXPECT_EQ(list[1]["state"], "succeeded");

  EngineResult limited = Engine({"runs", "--json", "--limit", "1"});
  ASSERT_EQ(limited.exit_code, 0) << limited.err;
  EXPECT_EQ(Json(limited.out).size(), 1u);

  EngineResult text = Engine({"runs"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  size_t second_at = text.out.find("second");
  size_t first_at = text.out.find("first");
  ASSERT_NE(second_at, std::string::npos) << text.out;
  ASSERT_NE(first_at, std::string::npos) << text.out;
  EXPECT_LT(second_at, first_at) << text.out;
}

TEST_F(QueryTest, RunsOnAnEmptyStateDirListsNothingAndCreatesNothing) {
  EngineResult r = Engine({"runs", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json(r.out).size(), 0u);
  EXPECT_FALSE(std::filesystem::exists(state_dir_));
}

TEST_F(QueryTest, LogsPrintsTheStepOutput) {
  std::string wf = Write("logs.toml", Workflow("logs", R"([[steps]]
id = "speak"
shell = "echo hello from the step; echo and stderr >&2"

[[steps]]
id = "quiet"
needs = ["speak"]
run = ["echo", "second"]
)"));
  EngineResult r = Engine({"run", wf});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string run_id = FirstLine(r.err);

  EngineResult one = Engine({"logs", run_id, "speak"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_NE(one.out.find("hello from the step\n"), std::string::npos) << one.out;
  EXPECT_NE(one.out.find("and stderr\n"), std::string::npos) << one.out;

  EngineResult all = Engine({"logs", run_id});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_NE(all.out.find("==> speak (attempt 1) <==\n"), std::string::npos) << all.out;
  EXPECT_NE(all.out.find("==> quiet (attempt 1) <==\nsecond\n"), std::string::npos) << all.out;

  EngineResult prefix = Engine({"logs", run_id.substr(0, run_id.size() - 1), "quiet"});
  EXPECT_EQ(prefix.exit_code, 0) << prefix.err;
  EXPECT_EQ(prefix.out, "second\n");

  EngineResult follow = Engine({"logs", run_id, "quiet", "--follow"});
  EXPECT_EQ(follow.exit_code, 0) << follow.err;
  EXPECT_EQ(follow.out, "second\n");

  EngineResult typo = Engine({"logs", run_id, "speek"});
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_NE(typo.err.find("did you mean \"speak\"?"), std::string::npos) << typo.err;
}

TEST_F(QueryTest, SilentStepHasNoLogFileAndLogsPrintsNothing) {
  std::string wf = Write("silent.toml", Workflow("silent", R"([[steps]]
id = "silent"
run = ["true"]
)"));
  EngineResult r = Engine({"run", wf});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string run_id = FirstLine(r.err);
  // Nothing was written, so no file was made for it.
  std::vector<std::string> logs;
  for (const auto& e : std::filesystem::recursive_directory_iterator(state_dir_ + "/logs")) {
    if (e.is_regular_file()) logs.push_back(e.path().string());
  }
  EXPECT_TRUE(logs.empty()) << logs.front();

  EngineResult one = Engine({"logs", run_id, "silent"});
  EXPECT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(one.out, "");
  EngineResult all = Engine({"logs", run_id});
  EXPECT_EQ(all.exit_code, 0) << all.err;
  EXPECT_EQ(all.out, "==> silent (attempt 1) <==\n");
}

TEST_F(QueryTest, LogsFollowPrintsWhileTheStepRunsAndEndsWithIt) {
  std::string marker = dir_ + "/started";
  std::string go = dir_ + "/go";
  std::string wf = Write("follow.toml", Workflow("follow", R"([[steps]]
id = "slow"
shell = "echo one; touch )" + marker + R"(; while [ ! -e )" + go + R"( ]; do sleep 0.01; done; echo two"
)"));
  std::unique_ptr<EngineProcess> run = EngineProcess::Start({"--state-dir", state_dir_, "run", wf});
  ASSERT_NE(run, nullptr);
  ASSERT_TRUE(run->WaitForStderr([](const std::string& e) { return e.find('\n') != std::string::npos; },
                                 std::chrono::seconds(30)));
  std::string run_id = FirstLine(run->err());
  ASSERT_TRUE(WaitUntil([&] { return std::filesystem::exists(marker); }, std::chrono::seconds(30)));

  std::unique_ptr<EngineProcess> follow =
      EngineProcess::Start({"--state-dir", state_dir_, "logs", run_id, "slow", "--follow"});
  ASSERT_NE(follow, nullptr);
  // It prints what is there and keeps going while the step runs.
  ASSERT_TRUE(follow->WaitForStdout([](const std::string& o) { return o == "one\n"; }, std::chrono::seconds(30)))
      << follow->out();
  Write("go", "");
  EngineResult f = follow->Wait(std::chrono::seconds(30));
  EXPECT_EQ(f.exit_code, 0) << f.err;
  EXPECT_EQ(f.out, "one\ntwo\n");
  EXPECT_EQ(run->Wait().exit_code, 0);
}

TEST_F(QueryTest, LogsPassesTerminalEscapesThroughWhenNotATerminal) {
  std::string wf = Write("esc.toml", Workflow("esc", "[[steps]]\nid = \"color\"\nshell = \"printf '\\\\033[31mred\\\\n'\"\n"));
  EngineResult r = Engine({"run", wf});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EngineResult logs = Engine({"logs", FirstLine(r.err), "color"});
  ASSERT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_EQ(logs.out, "\x1b[31mred\n");
}

TEST_F(QueryTest, UnknownRunIsAnError) {
  std::string wf = Write("one.toml", Workflow("first", "[[steps]]\nid = \"a\"\nrun = [\"true\"]\n"));
  ASSERT_EQ(Engine({"run", wf}).exit_code, 0);
  EngineResult r = Engine({"status", "19990101-000000-zzzz"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("19990101-000000-zzzz"), std::string::npos) << r.err;
}

TEST_F(QueryTest, PluginsListsLocalprocWithItsPathAndAbi) {
  EngineResult r = Engine({"plugins", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = Json(r.out);
  const nlohmann::json* localproc = nullptr;
  for (const auto& p : j["plugins"]) {
    if (p["name"] == "localproc") localproc = &p;
  }
  ASSERT_NE(localproc, nullptr) << r.out;
  std::string path = (*localproc)["path"];
  EXPECT_TRUE(std::regex_search(path, std::regex(R"(libcrucible-backend-localproc\.so$)"))) << path;
  EXPECT_TRUE(std::filesystem::exists(path)) << path;
  EXPECT_TRUE(std::regex_match(std::string((*localproc)["abi"]), std::regex(R"(0\.\d+)"))) << r.out;
  EXPECT_FALSE(std::string((*localproc)["version"]).empty());

  EngineResult text = Engine({"plugins"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("localproc"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(path), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("ABI 0."), std::string::npos) << text.out;
}

TEST_F(QueryTest, PluginsReportsAFileThatFailedToLoadAndStillExits0) {
  std::string plugdir = dir_ + "/plugins";
  Write("plugins/libcrucible-backend-broken.so", "this is not an ELF file");
  EngineResult r = RunEngine({"plugins", "--json"}, {"CRUCIBLE_PLUGIN_PATH=" + plugdir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = Json(r.out);
  ASSERT_FALSE(j["failures"].empty()) << r.out;
  EXPECT_NE(std::string(j["failures"][0]["path"]).find("libcrucible-backend-broken.so"), std::string::npos);
  EXPECT_FALSE(std::string(j["failures"][0]["why"]).empty());
}

TEST_F(QueryTest, UsageErrorsExit2) {
  EXPECT_EQ(Engine({}).exit_code, 2);
  EXPECT_EQ(Engine({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(Engine({"run"}).exit_code, 2);
  EXPECT_EQ(Engine({"run", "x.toml", "--set", "noequals"}).exit_code, 2);
  EXPECT_EQ(Engine({"run", "x.toml", "--max-parallel", "zero"}).exit_code, 2);
  EXPECT_EQ(Engine({"status"}).exit_code, 2);
  EXPECT_FALSE(std::filesystem::exists(state_dir_));
}

TEST_F(QueryTest, VersionAndHelpExit0) {
  EngineResult v = Engine({"--version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_TRUE(std::regex_search(v.out, std::regex(R"(\d+\.\d+\.\d+)"))) << v.out;
  EngineResult h = Engine({"--help"});
  EXPECT_EQ(h.exit_code, 0);
  for (const char* verb : {"run", "validate", "graph", "runs", "status", "logs", "results", "plugins"}) {
    EXPECT_NE(h.out.find(verb), std::string::npos) << verb << " missing from help:\n" << h.out;
  }
}

}  // namespace
}  // namespace crucible::testing

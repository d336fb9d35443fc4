// Workflow pieces that run unchanged on every backend's integration tests
// (tests/integration on localproc, tests/docker on compose), with the checks
// of what they must produce.
#ifndef CRUCIBLE_TESTS_INTEGRATION_SHARED_WORKFLOWS_H_
#define CRUCIBLE_TESTS_INTEGRATION_SHARED_WORKFLOWS_H_

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "engine_process.h"

namespace crucible::testing {

/// A fan-out of three squares gathered by a fan-in reading CRUCIBLE_UPSTREAM (needs python3).
inline constexpr const char* kFanOutFanInSteps = R"(
[[steps]]
id = "square"
for_each = ["1", "2", "3"]
shell = "echo v=$(( {{item}} * {{item}} )) >> \"$CRUCIBLE_OUTPUT\""

[[steps]]
id = "total"
needs = ["square"]
run = ["python3", "-c", """
import json, os
steps = json.load(open(os.environ['CRUCIBLE_UPSTREAM']))['steps']
total = sum(int(s['outputs']['v']) for s in steps)
ok = all(s['state'] == 'succeeded' for s in steps)
open(os.environ['CRUCIBLE_OUTPUT'], 'a').write('n=%d\\ntotal=%d\\nok=%s\\n' % (len(steps), total, ok))
"""]
)";

/// What kFanOutFanInSteps leaves in the status object of its run.
inline void ExpectFanOutFanIn(const nlohmann::json& square2, const nlohmann::json& total) {
  EXPECT_EQ(square2["outputs"]["v"], "4");
  EXPECT_EQ(total["outputs"]["n"], "3");
  EXPECT_EQ(total["outputs"]["total"], "14");
  EXPECT_EQ(total["outputs"]["ok"], "True");
}

/// A workflow that runs unchanged on every backend, with what it must produce.
struct PortableWorkflow {
  const char* name;   ///< the test's name
  std::string steps;  ///< everything after the header: [params], [[steps]]
  int exit_code = 0;
  std::vector<std::string> extra_args;  ///< after `run FILE --json`
  struct File {
    std::string path;  ///< relative to the workflow's directory
    std::string text;
    bool executable = false;
  };
  std::vector<File> files;
  bool needs_python = false;  ///< a container backend runs it on an image with python3
  /// Checks the status object; logs(step, attempt) is `crucible-engine logs` (attempt 0: the last).
  std::function<void(const nlohmann::json& status, const std::function<std::string(const std::string&, int)>& logs)>
      check;
};

inline const std::string kHostileBytes =
    "a b\t'q' \"dq\" $(touch pwned) `id` ;|&<> * ~ \\ \x01\x1b[31m\nline2 \xc3\xa9 \xff\xfe";

/// The workflows of the integration tests that every backend runs: `when`,
/// outputs and fan-out, inputs, retries, timeouts, hostile argv bytes, floods.
inline std::vector<PortableWorkflow> PortableWorkflows() {
  auto step = [](const nlohmann::json& status, const std::string& id) {
    for (const auto& s : status.value("steps", nlohmann::json::array())) {
      if (s.value("id", "") == id) return s;
    }
    ADD_FAILURE() << "no step " << id;
    return nlohmann::json::object();
  };
  std::vector<PortableWorkflow> all;
  all.push_back({"AFailingStepSkipsItsDependentAndAnAlwaysStepStillRuns", R"(
[[steps]]
id = "greet"
run = ["echo", "hello"]

[[steps]]
id = "broken"
shell = "echo about to fail; exit 3"

[[steps]]
id = "dependent"
needs = ["broken"]
run = ["true"]

[[steps]]
id = "cleanup"
needs = ["broken"]
when = "always"
shell = "echo cleaning"
)",
                 1, {}, {}, false, [step](const nlohmann::json& status, const auto& logs) {
                   EXPECT_EQ(status["state"], "failed");
                   EXPECT_EQ(step(status, "greet")["state"], "succeeded");
                   EXPECT_EQ(logs("greet", 0), "hello\n");
                   nlohmann::json broken = step(status, "broken");
                   EXPECT_EQ(broken["state"], "failed");
                   EXPECT_EQ(broken["exit_code"], 3);
                   EXPECT_EQ(broken["reason"], "exited");
                   EXPECT_EQ(logs("broken", 0), "about to fail\n");
                   EXPECT_EQ(step(status, "dependent")["state"], "skipped");
                   EXPECT_EQ(step(status, "dependent")["reason"], "upstream_failed");
                   EXPECT_EQ(step(status, "cleanup")["state"], "succeeded");
                   EXPECT_EQ(logs("cleanup", 0), "cleaning\n");
                 }});
  all.push_back({"OutputsFlowDownstreamAndAFanOutIsGatheredByItsFanIn", std::string(R"(
[[steps]]
id = "a"
shell = "echo x=42 >> \"$CRUCIBLE_OUTPUT\""

[[steps]]
id = "b"
needs = ["a"]
shell = "test {{steps.a.outputs.x}} = 42 && echo y={{steps.a.outputs.x}}1 >> \"$CRUCIBLE_OUTPUT\""
)") + kFanOutFanInSteps,
                 0, {}, {}, true, [step](const nlohmann::json& status, const auto&) {
                   EXPECT_EQ(step(status, "b")["outputs"]["y"], "421");
                   ExpectFanOutFanIn(step(status, "square[2]"), step(status, "total"));
                 }});
  all.push_back({"InputsArriveInAFreshWorkingDirectoryAndAScriptThereRuns", R"(
[[steps]]
id = "use"
inputs = ["data/run.sh", "data/sub/data.txt"]
run = ["./data/run.sh"]
)",
                 0, {},
                 {{"data/run.sh", "#!/bin/sh\ntest ! -e data/unlisted.txt || echo unlisted file copied\n"
                  "echo \"ran with $(cat data/sub/data.txt) and $(ls -A | wc -l) entries\"\n", true},
                  {"data/sub/data.txt", "payload", false},
                  {"data/unlisted.txt", "not an input", false}},
                 false, [](const nlohmann::json&, const auto& logs) {
                   // data/ (and nothing else of the step's own) in the working directory.
                   EXPECT_EQ(logs("use", 0), "ran with payload and 1 entries\n");
                 }});
  all.push_back({"FailedAttemptsAreRetriedAndEachIsRecorded", R"(
[[steps]]
id = "flaky"
retries = 3
retry_delay = "10ms"
shell = "echo attempt $CRUCIBLE_ATTEMPT; [ $CRUCIBLE_ATTEMPT -ge 3 ]"
)",
                 0, {}, {}, false, [step](const nlohmann::json& status, const auto& logs) {
                   nlohmann::json flaky = step(status, "flaky");
                   EXPECT_EQ(flaky["state"], "succeeded");
                   EXPECT_EQ(flaky["attempts"], 3);
                   EXPECT_EQ(logs("flaky", 2), "attempt 2\n");
                   EXPECT_EQ(logs("flaky", 0), "attempt 3\n");
                 }});
  all.push_back({"ATimeoutFailsTheStepWithReasonTimeout", R"(
[[steps]]
id = "sleepy"
timeout = "300ms"
run = ["sleep", "30"]
)",
                 1, {}, {}, false, [step](const nlohmann::json& status, const auto&) {
                   nlohmann::json sleepy = step(status, "sleepy");
                   EXPECT_EQ(sleepy["state"], "failed");
                   EXPECT_EQ(sleepy["reason"], "timeout");
                 }});
  all.push_back({"HostileArgvAndEnvBytesArriveIntact", R"(
[params]
v = ""

[[steps]]
id = "echo"
env = { HOSTILE = "{{params.v}}" }
run = ["/bin/sh", "-c", "printf '%s|%s' \"$1\" \"$HOSTILE\"; test ! -e pwned", "sh", "{{params.v}}"]
)",
                 0, {"--set", "v=" + kHostileBytes}, {}, false, [](const nlohmann::json&, const auto& logs) {
                   EXPECT_EQ(logs("echo", 0), kHostileBytes + "|" + kHostileBytes);
                 }});
  all.push_back({"ManyLinesOfOutputArriveWhole", R"(
[[steps]]
id = "flood"
shell = "i=0; while [ $i -lt 2000 ]; do echo 0123456789abcdef0123456789abcdef; i=$((i+1)); done"
)",
                 0, {}, {}, false, [](const nlohmann::json&, const auto& logs) {
                   EXPECT_EQ(logs("flood", 0).size(), 2000u * 33u) << "within the cap the log is the output exactly";
                 }});
  return all;
}

/// The portable workflow of that name (a copy).
inline PortableWorkflow PortableWorkflowNamed(const std::string& name) {
  for (auto& w : PortableWorkflows()) {
    if (name == w.name) return w;
  }
  ADD_FAILURE() << "no portable workflow " << name;
  return {};
}

/// Runs w with `--backend backend`: header (its [workflow] and any backend
/// tables) + w.steps written by write(name, text) -> path; engine(args) runs
/// crucible-engine on the test's state directory.
inline void RunPortableWorkflow(const PortableWorkflow& w, const std::string& header, const std::string& backend,
                                const std::function<std::string(const std::string&, const std::string&)>& write,
                                const std::function<EngineResult(std::vector<std::string>)>& engine) {
  for (const auto& f : w.files) {
    std::string path = write(f.path, f.text);
    if (f.executable) std::filesystem::permissions(path, std::filesystem::perms::owner_all, std::filesystem::perm_options::add);
  }
  std::string file = write("portable.toml", header + w.steps);
  std::vector<std::string> args = {"run", file, "--backend", backend, "--json"};
  args.insert(args.end(), w.extra_args.begin(), w.extra_args.end());
  EngineResult r = engine(args);
  ASSERT_EQ(r.exit_code, w.exit_code) << r.err;
  nlohmann::json status = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(status.is_object()) << r.out;
  for (const auto& s : status["steps"]) EXPECT_EQ(s["backend"], backend) << s;
  std::string run_id = r.err.substr(0, r.err.find('\n'));
  w.check(status, [&](const std::string& id, int attempt) {
    std::vector<std::string> args = {"logs", run_id, id};
    if (attempt > 0) args.insert(args.end(), {"--attempt", std::to_string(attempt)});
    EngineResult l = engine(args);
    EXPECT_EQ(l.exit_code, 0) << l.err;
    return l.out;
  });
}

/// How gtest prints a PortableWorkflow (its name, not its bytes).
inline void PrintTo(const PortableWorkflow& w, std::ostream* os) { *os << w.name; }

/// Names a PortableWorkflow's test.
struct PortableWorkflowName {
  std::string operator()(const ::testing::TestParamInfo<PortableWorkflow>& info) const { return info.param.name; }
};

/// The example workflows of workflows/ (every .toml below it), sorted.
inline std::vector<std::string> ExampleWorkflows() {
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

}  // namespace crucible::testing

#endif  // CRUCIBLE_TESTS_INTEGRATION_SHARED_WORKFLOWS_H_

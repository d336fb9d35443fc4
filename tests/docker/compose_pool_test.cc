// The pool itself: validation against what it runs, its hardening (docker
// inspect and an escape probe against an unhardened control container), and
// isolation between steps that share an executor.
#include <gmock/gmock.h>

#include <algorithm>
#include <regex>

#include "compose_fixture.h"

namespace crucible::testing {
namespace {

using ComposePoolTest = ComposeTest;

// Tries to escape: prints the name of every attempt that worked.
constexpr char kEscapeProbe[] =
    "r=''; "
    "touch /probe-root 2>/dev/null && r=\"$r write-root\"; "
    "gw=$(ip route 2>/dev/null | awk '/^default/ {print $3}'); "
    "[ -n \"$gw\" ] && ping -c 1 -W 3 \"$gw\" >/dev/null 2>&1 && r=\"$r network\"; "
    "for s in /var/run/docker.sock /run/docker.sock; do [ -S $s ] && r=\"$r docker-sock\"; done; "
    "caps=$(awk '/^CapEff/ {print $2}' /proc/self/status); "
    "[ \"$caps\" != 0000000000000000 ] && r=\"$r capabilities\"; "
    "echo \"escaped:$r\"";

TEST_F(ComposePoolTest, ValidateRefusesAnImageNoServiceRunsAndResourcesOverTheExecutorLimits) {
  std::string wf = Write("static.toml", Header("static", "memory = \"256m\"\ncpus = 0.5") + R"(
[[steps]]
id = "fits"
image = "crucible/busybox"
resources = { cpu = "500m", memory = "128Mi" }
run = ["true"]

[[steps]]
id = "elsewhere"
image = "nope/none:1"
run = ["true"]

[[steps]]
id = "greedy"
resources = { cpu = 2, memory = "1Gi" }
run = ["true"]
)");
  EngineResult r = Engine({"validate", wf});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(static\.toml:\d+:\d+: error: .*image "nope/none:1" is not run by any service of compose pool .*crucible/busybox:latest)")))
      << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(static\.toml:\d+:\d+: error: .*memory 1024Mi exceeds the limit of executor service executor \(256Mi\))")))
      << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(static\.toml:\d+:\d+: error: .*cpu 2000m exceeds the limit of executor service executor \(500m\))")))
      << r.err;
  EXPECT_EQ(r.err.find("\"fits\""), std::string::npos) << r.err;
  EXPECT_EQ(Containers(true), "") << "validate contacts nothing";
}

TEST_F(ComposePoolTest, ExecutorsAreHardenedAndTheEscapeProbeFailsThereButNotInAControlContainer) {
  std::string probe;  // as a TOML basic string
  for (char c : std::string(kEscapeProbe)) {
    if (c == '"' || c == '\\') probe += '\\';
    probe += c;
  }
  std::string wf = Write("probe.toml", Header("probe", "replicas = 2\nkeep_warm = true") +
                                           "[[steps]]\nid = \"probe\"\nshell = \"" + probe + "\"\n");
  EngineResult r = Engine({"run", wf});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Engine({"logs", FirstLine(r.err), "probe"}).out, "escaped:\n");

  int rc = -1;
  std::string control =
      Shell("docker run --rm -v /var/run/docker.sock:/var/run/docker.sock crucible/busybox:latest sh -c " +
                std::string("'") + std::regex_replace(std::string(kEscapeProbe), std::regex("'"), "'\\''") + "'",
            &rc);
  EXPECT_EQ(rc, 0) << control;
  EXPECT_EQ(control, "escaped: write-root network docker-sock capabilities\n")
      << "the probe must be able to succeed, or its failure in the pool proves nothing";

  std::string ids = Containers();
  ASSERT_FALSE(ids.empty());
  std::string inspect = Shell("docker inspect " + Flatten(ids));
  nlohmann::json all = Json(inspect);
  ASSERT_EQ(all.size(), 2u);
  for (const auto& c : all) {
    const auto& h = c["HostConfig"];
    EXPECT_EQ(h["NetworkMode"], "none");
    EXPECT_THAT(h["CapDrop"].get<std::vector<std::string>>(), ::testing::Contains("ALL"));
    EXPECT_THAT(h["SecurityOpt"].get<std::vector<std::string>>(), ::testing::Contains("no-new-privileges:true"));
    EXPECT_EQ(h["ReadonlyRootfs"], true);
    EXPECT_EQ(h["Privileged"], false);
    EXPECT_GT(h["PidsLimit"].get<int64_t>(), 0);
    EXPECT_GT(h["Memory"].get<int64_t>(), 0);
    EXPECT_GT(h["NanoCpus"].get<int64_t>(), 0);
    EXPECT_EQ(h["Init"], true);
    EXPECT_EQ(h["LogConfig"]["Type"], "json-file");
    EXPECT_TRUE(h["LogConfig"]["Config"].contains("max-size"));
    ASSERT_TRUE(h["Tmpfs"].contains("/tmp"));
    ASSERT_TRUE(h["Tmpfs"].contains("/work"));
    EXPECT_NE(h["Tmpfs"]["/work"].get<std::string>().find("exec"), std::string::npos);
    EXPECT_TRUE(h["Binds"].is_null() || h["Binds"].empty()) << h["Binds"].dump();
    EXPECT_TRUE(c["Mounts"].empty()) << c["Mounts"].dump();
    std::string user = c["Config"]["User"];
    EXPECT_FALSE(user.empty() || user == "0" || user.rfind("0:", 0) == 0 || user == "root") << user;
    EXPECT_EQ(c["Config"]["Labels"]["org.crucible-engine.pool"], project_);
  }
}

TEST_F(ComposePoolTest, AStepSeesNothingAnEarlierHostileStepLeftInItsExecutor) {
  std::string wf = Write("hostile.toml", Header("isolation", "replicas = 1") + R"toml(
[[steps]]
id = "hostile"
shell = """
exec 2>/dev/null
setsid sleep 1000 >/dev/null 2>&1 </dev/null &
nohup sleep 999 >/dev/null 2>&1 </dev/null &
echo junk > /tmp/junk; mkdir /tmp/.hidden; echo junk > /dev/shm/junk; echo junk > /work/junk
echo 'export PATH=/evil' > "$HOME/.profile" 2>/dev/null
echo 'export PATH=/evil' > /etc/profile 2>/dev/null
echo left
"""

[[steps]]
id = "victim"
needs = ["hostile"]
shell = """
bad=0
[ -z "$(ls -A /tmp)" ] || { echo "tmp: $(ls -A /tmp)"; bad=1; }
[ -z "$(ls -A /dev/shm)" ] || { echo "shm: $(ls -A /dev/shm)"; bad=1; }
ls -A /work | grep -q junk && { echo "work: $(ls -A /work)"; bad=1; }
cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\000' ' ' | grep -q 'slee[p] 99' && { echo "a process survived"; bad=1; }
grep -qs evil /etc/profile "$HOME/.profile" && { echo "profile changed"; bad=1; }
[ "$PATH" != /evil ] || { echo "PATH changed"; bad=1; }
[ $bad = 0 ] && echo clean
exit $bad
"""
)toml");
  EngineResult r = Engine({"run", wf, "--json"});
  std::string run_id = FirstLine(r.err);
  EXPECT_EQ(Engine({"logs", run_id, "hostile"}).out, "left\n");
  EXPECT_EQ(Engine({"logs", run_id, "victim"}).out, "clean\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(ComposePoolTest, AUserComposeFileWithTwoServicesRunsEachStepOnTheServiceOfItsImage) {
  Write("pool.yaml", R"(version: "2.4"
services:
  small:
    image: crucible/busybox:latest
    command: ["sleep", "2147483647"]
    init: true
    user: "65534:65534"
    network_mode: none
    read_only: true
    tmpfs:
      - /tmp:mode=1777
      - ${CRUCIBLE_WORK_ROOT}:exec,mode=0700,uid=${CRUCIBLE_STEP_UID},gid=${CRUCIBLE_STEP_GID}
    mem_limit: 64m
    labels:
      org.crucible-engine.pool: "${CRUCIBLE_POOL}"
  python:
    image: crucible/python:3.11
    command: ["sleep", "2147483647"]
    init: true
    user: "65534:65534"
    network_mode: none
    read_only: true
    tmpfs:
      - /tmp:mode=1777
      - ${CRUCIBLE_WORK_ROOT}:exec,mode=0700,uid=${CRUCIBLE_STEP_UID},gid=${CRUCIBLE_STEP_GID}
    mem_limit: 256m
    labels:
      org.crucible-engine.pool: "${CRUCIBLE_POOL}"
)");
  std::string wf = Write("two.toml", Header("two", "replicas = 1\ncompose_file = \"" + dir_ + "/pool.yaml\"") + R"toml(
[[steps]]
id = "py"
image = "crucible/python:3.11"
resources = { memory = "200Mi" }
run = ["python3", "-c", "import sys; print(sys.version_info[:2])"]

[[steps]]
id = "bb"
image = "crucible/busybox"
shell = "busybox | head -c 7; echo"

[[steps]]
id = "too-big-for-small"
image = "crucible/busybox"
resources = { memory = "200Mi" }
run = ["true"]
)toml");
  EngineResult v = Engine({"validate", wf});
  EXPECT_EQ(v.exit_code, 2) << v.err;
  EXPECT_NE(v.err.find("exceeds the limit of executor service small (64Mi)"), std::string::npos) << v.err;
  std::string text = Read(wf);
  Write("two.toml", text.substr(0, text.find("[[steps]]\nid = \"too-big")));
  EngineResult r = Engine({"run", wf});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string run_id = FirstLine(r.err);
  EXPECT_EQ(Engine({"logs", run_id, "py"}).out, "(3, 11)\n");
  EXPECT_EQ(Engine({"logs", run_id, "bb"}).out, "BusyBox\n");
}

TEST_F(ComposePoolTest, NetworkIsOptIn) {
  std::string wf = Write("net.toml", Header("net", "replicas = 1\nnetwork = \"bridge\"") + R"(
[[steps]]
id = "route"
shell = "ip route | grep -c ^default"
)");
  EngineResult r = Engine({"run", wf});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Engine({"logs", FirstLine(r.err), "route"}).out, "1\n");
}

TEST_F(ComposePoolTest, AWarmPoolMadeFromAnotherConfigurationIsRecreatedNotReused) {
  const std::string step = R"(
[[steps]]
id = "where"
shell = "echo net=$(ls /sys/class/net) >> \"$CRUCIBLE_OUTPUT\"; if command -v python3 >/dev/null; then echo python=yes; else echo python=no; fi >> \"$CRUCIBLE_OUTPUT\""
)";
  auto run = [&](const std::string& name, const std::string& options) {
    EngineResult r = Engine({"run", Write(name + ".toml", Header(name, "replicas = 2\n" + options) + step), "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? StepOf(Json(r.out), "where")["outputs"] : nlohmann::json();
  };
  nlohmann::json bridged = run("bridged", "keep_warm = true\nnetwork = \"bridge\"");
  EXPECT_THAT(bridged.value("net", ""), ::testing::HasSubstr("eth0"));
  std::string warm = Containers();
  ASSERT_EQ(std::count(warm.begin(), warm.end(), '\n'), 2) << warm;

  // The same project without the network opt-in: the bridged executors are not reused.
  nlohmann::json isolated = run("isolated", "keep_warm = true");
  EXPECT_EQ(isolated.value("net", ""), "lo") << "a step ran in an executor of the earlier, bridged pool";
  EXPECT_EQ(isolated.value("python", ""), "no");
  // Another image: the busybox executors are not reused either.
  nlohmann::json python = run("python", "image = \"crucible/python:3.11\"");
  EXPECT_EQ(python.value("python", ""), "yes");
  EXPECT_EQ(python.value("net", ""), "lo");
  EXPECT_EQ(Containers(true), "") << "the last run took the pool down";
}

TEST_F(ComposePoolTest, RecycleIsolationRestartsTheExecutorBetweenSteps) {
  std::string wf = Write("recycle.toml", Header("recycle", "replicas = 1\nisolation = \"recycle\"") + R"(
[[steps]]
id = "first"
shell = "echo start=$(cut -d' ' -f22 /proc/1/stat) >> \"$CRUCIBLE_OUTPUT\""

[[steps]]
id = "second"
needs = ["first"]
shell = "echo start=$(cut -d' ' -f22 /proc/1/stat) >> \"$CRUCIBLE_OUTPUT\""
)");
  EngineResult r = Engine({"run", wf, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json status = Json(r.out);
  std::string first = StepOf(status, "first")["outputs"]["start"];
  std::string second = StepOf(status, "second")["outputs"]["start"];
  EXPECT_NE(first, second) << "the executor's init was started again between the steps";
}

}  // namespace
}  // namespace crucible::testing

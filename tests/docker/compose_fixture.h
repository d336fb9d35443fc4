// ComposeTest: an IntegrationTest whose workflows run on the compose backend,
// each test with its own Compose project (so tests may run in parallel), and
// a check that the project left no container behind.
#ifndef CRUCIBLE_TESTS_DOCKER_COMPOSE_FIXTURE_H_
#define CRUCIBLE_TESTS_DOCKER_COMPOSE_FIXTURE_H_

#include <unistd.h>

#include <sys/wait.h>

#include <cctype>
#include <cstdio>
#include <sstream>
#include <string>

#include "integration_fixture.h"

namespace crucible::testing {

/// Runs a shell command; its stdout (stderr joins it when `with_stderr`), and the exit status in *status.
inline std::string Shell(const std::string& command, int* status = nullptr) {
  std::string out;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = ::pclose(p);
  if (status) *status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return out;
}

/// What `docker top` lists in the containers `ids` (one a line).
inline std::string TopOf(const std::string& ids) {
  std::string out;
  std::istringstream in(ids);
  std::string id;
  while (std::getline(in, id)) {
    if (!id.empty()) out += Shell("docker top " + id + " -o pid,args");
  }
  return out;
}

class ComposeTest : public IntegrationTest {
 protected:
  void SetUp() override {
    IntegrationTest::SetUp();
    int rc = -1;
    std::string info = Shell("docker info --format '{{.ServerVersion}}'", &rc);
    ASSERT_EQ(rc, 0) << "the docker tests need a running dockerd (./dev test starts one): " << info;
    for (const char* image : {"crucible/busybox:latest", "crucible/python:3.11"}) {
      int found = Status("docker image inspect " + std::string(image) + " >/dev/null");
      ASSERT_EQ(found, 0) << image << " is missing: run plugins/compose/images/build-images.sh";
    }
    const ::testing::TestInfo* t = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = t->name();
    std::string slug;
    for (char c : name) {
      if (std::isalnum(static_cast<unsigned char>(c))) {
        slug += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
      if (slug.size() >= 24) break;
    }
    project_ = "crucible-t" + std::to_string(::getpid()) + "-" + slug;
  }

  void TearDown() override {
    std::string left = Containers(true);
    if (!keep_warm_) {
      EXPECT_EQ(left, "") << "containers of pool " << project_ << " left behind";
    }
    if (!left.empty()) Shell("docker rm -f -v " + Flatten(left) + " >/dev/null");
    Shell("docker network rm " + project_ + "_default >/dev/null 2>&1");
    IntegrationTest::TearDown();
  }

  static int Status(const std::string& command) {
    int rc = -1;
    Shell(command, &rc);
    return rc;
  }
  static std::string Flatten(std::string s) {
    for (auto& c : s) {
      if (c == '\n') c = ' ';
    }
    return s;
  }

  /// Ids of the project's containers (all states when `all`), one a line.
  std::string Containers(bool all = false) const {
    return Shell("docker ps -q --no-trunc " + std::string(all ? "-a " : "") +
                 "--filter label=com.docker.compose.project=" + project_);
  }

  /// The [workflow] and [backends.compose] tables of a workflow on this test's pool.
  std::string Header(const std::string& name, const std::string& options = "") {
    if (options.find("keep_warm = true") != std::string::npos) keep_warm_ = true;
    return "[workflow]\nname = \"" + name + "\"\nbackend = \"compose\"\n\n[backends.compose]\nproject = \"" +
           project_ + "\"\n" + options + "\n";
  }

  std::string project_;
  bool keep_warm_ = false;
};

}  // namespace crucible::testing

#endif  // CRUCIBLE_TESTS_DOCKER_COMPOSE_FIXTURE_H_

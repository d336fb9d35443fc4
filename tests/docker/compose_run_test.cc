// The workflows every backend runs (shared_workflows.h: `when`, outputs and
// fan-out, inputs, retries, timeouts, hostile argv bytes, floods), on the
// compose backend, with the same checks as on localproc: on the shipped
// busybox executors, on a Python one where the workflow needs python3.
#include "compose_fixture.h"
#include "shared_workflows.h"

namespace crucible::testing {
namespace {

class ComposePortableTest : public ComposeTest, public ::testing::WithParamInterface<PortableWorkflow> {};

TEST_P(ComposePortableTest, Runs) {
  RunPortableWorkflow(
      GetParam(),
      Header("portable", GetParam().needs_python ? "replicas = 3\nimage = \"crucible/python:3.11\"" : "replicas = 3"),
      "compose",
      [this](const std::string& name, const std::string& text) { return Write(name, text); },
      [this](std::vector<std::string> args) { return Engine(std::move(args)); });
}

INSTANTIATE_TEST_SUITE_P(Workflows, ComposePortableTest, ::testing::ValuesIn(PortableWorkflows()),
                         PortableWorkflowName());

}  // namespace
}  // namespace crucible::testing

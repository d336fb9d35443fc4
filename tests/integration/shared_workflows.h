// Workflow pieces that run unchanged on every backend's integration tests
// (tests/integration on localproc, tests/docker on compose), with the checks
// of what they must produce.
#ifndef CRUCIBLE_TESTS_INTEGRATION_SHARED_WORKFLOWS_H_
#define CRUCIBLE_TESTS_INTEGRATION_SHARED_WORKFLOWS_H_

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

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

}  // namespace crucible::testing

#endif  // CRUCIBLE_TESTS_INTEGRATION_SHARED_WORKFLOWS_H_

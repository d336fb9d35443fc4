// Helpers for planner tests: WorkflowSpec values built in C++, temp directories.
#ifndef CRUCIBLE_TESTS_UNIT_PLAN_PLAN_TEST_UTIL_H_
#define CRUCIBLE_TESTS_UNIT_PLAN_PLAN_TEST_UTIL_H_

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "loader/workflow_spec.h"
#include "plan/plan.h"

namespace crucible::plan::testing {

/// A located value at line `line`, column 1.
template <typename T>
loader::Located<T> At(T value, int line = 0, int column = 1) {
  return loader::Located<T>{std::move(value), SourcePos{line, line > 0 ? column : 0}};
}

/// A step running `argv`, declared at `line`, needing `needs`.
inline loader::StepSpec MakeStep(const std::string& id, std::vector<std::string> argv,
                                 std::vector<std::string> needs = {}, int line = 0) {
  loader::StepSpec s;
  s.id = At(id, line);
  s.pos = SourcePos{line, line > 0 ? 1 : 0};
  s.run = At(std::move(argv), line);
  for (std::string& n : needs) s.needs.push_back(At(std::move(n), line));
  return s;
}

/// A workflow named `name` in directory `dir`, read from "wf.toml".
inline loader::WorkflowSpec MakeSpec(std::vector<loader::StepSpec> steps, const std::string& name = "wf",
                                     const std::string& dir = "/tmp") {
  loader::WorkflowSpec spec;
  spec.file = "wf.toml";
  spec.dir = dir;
  spec.name = At(name);
  spec.steps = std::move(steps);
  return spec;
}

/// Builds with fresh diagnostics; `*text` gets them formatted.
inline std::optional<Plan> BuildPlan(const loader::WorkflowSpec& spec, std::string* text = nullptr,
                                     const PlanOptions& options = {}) {
  Diagnostics diags(spec.file);
  std::optional<Plan> plan = Plan::Build(spec, options, diags);
  if (text) *text = diags.Format();
  return plan;
}

/// Renders a template with fixed context values.
inline std::string RenderOrDie(const Template& t, const Template::Context& ctx = {}) {
  std::string missing;
  std::optional<std::string> out = t.Render(ctx, &missing);
  return out ? *out : "<missing: " + missing + ">";
}

/// A temporary directory removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "crucible-plan-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
    path_ = std::filesystem::canonical(path_).string();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  /// Writes `text` to `rel`, creating parent directories.
  void Write(const std::string& rel, const std::string& text = "x") const {
    std::filesystem::path p = std::filesystem::path(path_) / rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }

 private:
  std::string path_;
};

}  // namespace crucible::plan::testing

#endif  // CRUCIBLE_TESTS_UNIT_PLAN_PLAN_TEST_UTIL_H_

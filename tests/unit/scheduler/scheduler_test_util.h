// A fixture that runs inline TOML through the loader, the planner, a real
// Store in a temp dir and a FakeBackend.
#ifndef CRUCIBLE_TESTS_UNIT_SCHEDULER_SCHEDULER_TEST_UTIL_H_
#define CRUCIBLE_TESTS_UNIT_SCHEDULER_SCHEDULER_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "loader/loader.h"
#include "plan/plan.h"
#include "scheduler/scheduler.h"
#include "store/store.h"
#include "support/fake_backend.h"

namespace crucible::scheduler {

/// Records observer events.
class RecordingObserver : public Observer {
 public:
  void OnStepMessage(plan::TaskId task, const std::string& message) override {
    messages.emplace_back(task, message);
  }
  void OnRunFinished(store::RunState state, ExitCode code) override {
    finished_state = state;
    finished_code = code;
  }
  std::vector<std::pair<plan::TaskId, std::string>> messages;
  std::optional<store::RunState> finished_state;
  std::optional<ExitCode> finished_code;
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/crucible-sched-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto store = store::Store::Open(dir_ + "/state");
    ASSERT_TRUE(store.ok()) << store.error().message;
    store_ = std::move(store.value());
  }
  void TearDown() override {
    scheduler_.reset();
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  /// Loads and plans `body` under a [workflow] header.
  plan::Plan MakePlan(const std::string& body, const std::string& workflow_extra = "") {
    text_ = "[workflow]\nname = \"t\"\n" + workflow_extra + "\n" + body;
    std::string path = dir_ + "/wf.toml";
    Diagnostics diags(path);
    auto spec = loader::LoadWorkflowText(text_, path, diags);
    if (!spec) {
      ADD_FAILURE() << diags.Format();
      std::abort();
    }
    auto plan = plan::Plan::Build(*spec, {}, diags);
    if (!plan) {
      ADD_FAILURE() << diags.Format();
      std::abort();
    }
    return std::move(*plan);
  }

  RunSummary RunPlan(const plan::Plan& plan, RunOptions options = {}) {
    options.run_id = run_id_;
    options.workflow_file = "wf.toml";
    options.source_text = text_;
    options.source_sha256 = "0";
    scheduler_ = std::make_unique<Scheduler>(plan, *store_, std::map<std::string, host::Backend*>{{"localproc", &backend_}},
                                             clock_, waker_, &observer_, options);
    auto result = scheduler_->Run();
    if (!result.ok()) {
      ADD_FAILURE() << "Run failed: " << result.error().message;
      return {};
    }
    return result.value();
  }

  store::StepRow Step(const std::string& id) {
    auto steps = store_->GetSteps(run_id_);
    EXPECT_TRUE(steps.ok());
    for (const auto& s : steps.value()) {
      if (s.step_id == id) return s;
    }
    ADD_FAILURE() << "no step row " << id;
    return {};
  }
  std::vector<store::AttemptRow> Attempts(const plan::Plan& plan, const std::string& id) {
    auto idx = plan.Find(id);
    EXPECT_TRUE(idx.has_value()) << id;
    auto rows = store_->GetAttempts(run_id_, static_cast<int>(idx.value_or(0)));
    EXPECT_TRUE(rows.ok());
    return rows.ok() ? rows.value() : std::vector<store::AttemptRow>{};
  }

  std::string dir_;
  std::string text_;
  std::string run_id_ = "20250101-000000-abcd";
  std::unique_ptr<store::Store> store_;
  fake::FakeClock clock_;
  Waker waker_;
  fake::FakeBackend backend_{"localproc", clock_, waker_};
  RecordingObserver observer_;
  std::unique_ptr<Scheduler> scheduler_;
  RunOptions options_for_next_run_;
};

}  // namespace crucible::scheduler

#endif  // CRUCIBLE_TESTS_UNIT_SCHEDULER_SCHEDULER_TEST_UTIL_H_

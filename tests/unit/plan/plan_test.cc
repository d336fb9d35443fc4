// Plan::Build on WorkflowSpec values built in C++ (the loader has its own tests).
#include "plan/plan.h"

#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "plan_test_util.h"

namespace crucible::plan {
namespace {

using loader::ForEach;
using loader::RawOption;
using loader::RawOptionTable;
using loader::RetryOn;
using loader::StepSpec;
using loader::WorkflowSpec;
using testing::At;
using testing::BuildPlan;
using testing::MakeSpec;
using testing::MakeStep;
using testing::RenderOrDie;
using testing::TempDir;

std::vector<std::string> Argv(const PlannedStep& s, const Template::Context& ctx = {}) {
  std::vector<std::string> out;
  for (const Template& t : s.argv) out.push_back(RenderOrDie(t, ctx));
  return out;
}

std::vector<std::string> Ids(const Plan& plan, const std::vector<TaskId>& tasks) {
  std::vector<std::string> out;
  for (TaskId t : tasks) out.push_back(plan.step(t).id);
  return out;
}

ForEach List(std::vector<std::string> items, int line = 0) {
  ForEach f;
  f.kind = ForEach::Kind::kList;
  f.items = std::move(items);
  f.pos = SourcePos{line, line > 0 ? 1 : 0};
  return f;
}

std::string EnvValue(const PlannedStep& s, const std::string& key) {
  for (const auto& [k, v] : s.env) {
    if (k == key) return RenderOrDie(v);
  }
  return "<unset>";
}

TEST(PlanTest, SingleStepGetsDefaults) {
  std::optional<Plan> plan = BuildPlan(MakeSpec({MakeStep("hello", {"echo", "hi"})}));
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->step_count(), 1u);
  const PlannedStep& s = plan->step(0);
  EXPECT_EQ(s.id, "hello");
  EXPECT_EQ(Argv(s), (std::vector<std::string>{"echo", "hi"}));
  EXPECT_EQ(s.retries, 0);
  EXPECT_EQ(s.retry_delay_ms, 1000);
  EXPECT_EQ(s.timeout_ms, 0);
  EXPECT_EQ(s.when, loader::When::kOnSuccess);
  EXPECT_EQ(s.backend, "localproc");
  EXPECT_EQ(plan->max_parallel(), std::max(1, static_cast<int>(std::thread::hardware_concurrency())));
  EXPECT_EQ(plan->workflow_name(), "wf");
}

TEST(PlanTest, DefaultsMergeTablesKeyByKeyAndReplaceLists) {
  WorkflowSpec spec = MakeSpec({MakeStep("a", {"true"}), MakeStep("b", {"true"})});
  spec.env = {{"GLOBAL", At(std::string("g"))}, {"SHARED", At(std::string("global"))}};
  spec.defaults.env = {{"A", At(std::string("1"))}, {"B", At(std::string("1"))}};
  spec.defaults.cpu_millicores = At<int64_t>(500);
  spec.defaults.memory_bytes = At<int64_t>(1 << 20);
  spec.defaults.timeout_ms = At<int64_t>(120000);
  spec.defaults.retry_on = At(std::vector<RetryOn>{{RetryOn::Kind::kTimeout, 0}, {RetryOn::Kind::kExited, 0}});
  spec.defaults.backend_options["kubernetes"] =
      RawOptionTable{{RawOption{"a", 1, {}}, RawOption{"b", 2, {}}}, {}};
  StepSpec& b = spec.steps[1];
  b.env = {{"B", At(std::string("2"))}, {"SHARED", At(std::string("step"))}};
  b.memory_bytes = At<int64_t>(2 << 20);
  b.retry_on = At(std::vector<RetryOn>{{RetryOn::Kind::kOomKilled, 0}});
  b.backend_options["kubernetes"] = RawOptionTable{{RawOption{"b", 3, {}}, RawOption{"c", 4, {}}}, {}};

  std::optional<Plan> plan = BuildPlan(spec);
  ASSERT_TRUE(plan);
  const PlannedStep& pa = plan->step(0);
  const PlannedStep& pb = plan->step(1);
  EXPECT_EQ(EnvValue(pa, "A"), "1");
  EXPECT_EQ(EnvValue(pa, "B"), "1");
  EXPECT_EQ(EnvValue(pb, "A"), "1");
  EXPECT_EQ(EnvValue(pb, "B"), "2");
  EXPECT_EQ(EnvValue(pb, "GLOBAL"), "g");
  EXPECT_EQ(EnvValue(pb, "SHARED"), "step");
  EXPECT_EQ(pa.cpu_millicores, 500);
  EXPECT_EQ(pb.cpu_millicores, 500);
  EXPECT_EQ(pa.memory_bytes, 1 << 20);
  EXPECT_EQ(pb.memory_bytes, 2 << 20);
  EXPECT_EQ(pb.timeout_ms, 120000);
  EXPECT_EQ(pa.retry_on.size(), 2u);
  ASSERT_EQ(pb.retry_on.size(), 1u);
  EXPECT_EQ(pb.retry_on[0].kind, RetryOn::Kind::kOomKilled);
  const RawOptionTable& k = pb.backend_options.at("kubernetes");
  ASSERT_EQ(k.options.size(), 3u);
  EXPECT_EQ(k.options[0].key, "a");
  EXPECT_EQ(k.options[0].value, 1);
  EXPECT_EQ(k.options[1].key, "b");
  EXPECT_EQ(k.options[1].value, 3);
  EXPECT_EQ(k.options[2].key, "c");
  EXPECT_EQ(pa.backend_options.at("kubernetes").options.size(), 2u);
}

TEST(PlanTest, DefaultCommandIsUsedOnlyWhenTheStepHasNone) {
  StepSpec a = MakeStep("a", {});
  a.run.reset();
  StepSpec b = MakeStep("b", {});
  b.run.reset();
  b.shell = At(std::string("echo own"));
  WorkflowSpec spec = MakeSpec({a, b});
  spec.defaults.run = At(std::vector<std::string>{"echo", "default"});
  std::optional<Plan> plan = BuildPlan(spec);
  ASSERT_TRUE(plan);
  EXPECT_EQ(Argv(plan->step(0)), (std::vector<std::string>{"echo", "default"}));
  EXPECT_EQ(Argv(plan->step(1)), (std::vector<std::string>{"/bin/sh", "-c", "echo own"}));
}

TEST(PlanTest, RunAndShellTogetherIsAnError) {
  StepSpec a = MakeStep("a", {"true"}, {}, 4);
  a.shell = At(std::string("true"), 6);
  StepSpec b = MakeStep("b", {}, {}, 9);
  b.run.reset();
  std::string text;
  EXPECT_FALSE(BuildPlan(MakeSpec({a, b}), &text));
  EXPECT_EQ(text,
            "wf.toml:4:1: error: step \"a\" has both \"run\" and \"shell\" (give exactly one)\n"
            "wf.toml:9:1: error: step \"b\" has neither \"run\" nor \"shell\" (give exactly one)\n");
}

TEST(PlanTest, ParamsTakeDefaultsAndSetOverridesThem) {
  WorkflowSpec spec = MakeSpec({MakeStep("a", {"train", "--model={{params.model}}", "--lr={{ params.lr }}"})});
  spec.params = {{"model", At(std::string("small"))}, {"lr", At(std::string("0.1"))}};
  std::optional<Plan> plan = BuildPlan(spec);
  ASSERT_TRUE(plan);
  EXPECT_EQ(Argv(plan->step(0)), (std::vector<std::string>{"train", "--model=small", "--lr=0.1"}));

  PlanOptions options;
  options.params = {{"model", "large"}};
  plan = BuildPlan(spec, nullptr, options);
  ASSERT_TRUE(plan);
  EXPECT_EQ(Argv(plan->step(0)), (std::vector<std::string>{"train", "--model=large", "--lr=0.1"}));
  EXPECT_EQ(plan->params(), (std::vector<std::pair<std::string, std::string>>{{"model", "large"}, {"lr", "0.1"}}));
}

TEST(PlanTest, UnknownSetNameIsAnErrorWithSuggestion) {
  WorkflowSpec spec = MakeSpec({MakeStep("a", {"echo", "{{params.model}}"})});
  spec.params = {{"model", At(std::string("small"))}};
  PlanOptions options;
  options.params = {{"modle", "large"}};
  std::string text;
  EXPECT_FALSE(BuildPlan(spec, &text, options));
  EXPECT_EQ(text, "wf.toml: error: --set: unknown parameter \"modle\" (did you mean \"model\"?)\n");
}

TEST(PlanTest, ForEachListMakesOneInstancePerItem) {
  StepSpec e = MakeStep("evaluate", {"grade", "submissions/{{item}}.py"});
  e.for_each = List({"alice", "bob", "carol"});
  e.env = {{"WHO", At(std::string("{{item}}"))}};
  std::optional<Plan> plan = BuildPlan(MakeSpec({e}));
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->step_count(), 3u);
  EXPECT_EQ(plan->step(1).id, "evaluate[bob]");
  EXPECT_EQ(plan->step(1).step_id, "evaluate");
  EXPECT_EQ(Argv(plan->step(1)), (std::vector<std::string>{"grade", "submissions/bob.py"}));
  EXPECT_EQ(EnvValue(plan->step(2), "WHO"), "carol");
  EXPECT_EQ(plan->Find("evaluate[carol]"), TaskId{2});
  EXPECT_EQ(plan->Find("evaluate"), std::nullopt);
}

TEST(PlanTest, ForEachAxesMakeTheCartesianProductInFileOrder) {
  StepSpec e = MakeStep("evaluate", {"eval", "{{model}}", "{{ split }}", "{{workflow.name}}"});
  e.for_each.kind = ForEach::Kind::kAxes;
  e.for_each.axes = {{"model", {"a", "b", "c"}}, {"split", {"test", "train"}}};
  std::optional<Plan> plan = BuildPlan(MakeSpec({e}, "grid"));
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->step_count(), 6u);
  std::vector<std::string> ids;
  for (const PlannedStep& s : plan->steps()) ids.push_back(s.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"evaluate[model=a,split=test]", "evaluate[model=a,split=train]",
                                           "evaluate[model=b,split=test]", "evaluate[model=b,split=train]",
                                           "evaluate[model=c,split=test]", "evaluate[model=c,split=train]"}));
  EXPECT_EQ(Argv(plan->step(3)), (std::vector<std::string>{"eval", "b", "train", "grid"}));
}

TEST(PlanTest, DuplicateItemsAreAnError) {
  StepSpec e = MakeStep("evaluate", {"true"});
  e.for_each = List({"alice", "alice"}, 5);
  std::string text;
  EXPECT_FALSE(BuildPlan(MakeSpec({e}), &text));
  EXPECT_EQ(text, "wf.toml:5:1: error: step \"evaluate\": for_each gives the instance \"evaluate[alice]\" twice\n");
}

TEST(PlanTest, ShellQuotesSubstitutedValues) {
  StepSpec e = MakeStep("evaluate", {});
  e.run.reset();
  e.shell = At(std::string("printf '%s|' {{item}} {{params.p}}"));
  e.for_each = List({"'; rm -rf / #", "two words", "a\"b'c", "new\nline"});
  WorkflowSpec spec = MakeSpec({e});
  spec.params = {{"p", At(std::string("$(id)"))}};
  std::optional<Plan> plan = BuildPlan(spec);
  ASSERT_TRUE(plan);
  EXPECT_EQ(RenderOrDie(plan->step(0).argv[2]), "printf '%s|' ''\\''; rm -rf / #' '$(id)'");
  for (TaskId t = 0; t < plan->step_count(); ++t) {
    std::vector<std::string> argv = Argv(plan->step(t));
    ASSERT_EQ(argv.size(), 3u);
    EXPECT_EQ(argv[0], "/bin/sh");
    std::string cmd = "/bin/sh -c " + ShellQuote(argv[2]);
    FILE* f = popen(cmd.c_str(), "r");
    std::string out;
    char buf[256];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    pclose(f);
    const std::string& item = e.for_each.items[t];
    EXPECT_EQ(out, item + "|$(id)|");
  }
}

TEST(PlanTest, ArgvElementsStayWholeWithSpaces) {
  StepSpec e = MakeStep("evaluate", {"echo", "{{item}}", "x {{item}} y"});
  e.for_each = List({"two words; rm -rf /"});
  std::optional<Plan> plan = BuildPlan(MakeSpec({e}));
  ASSERT_TRUE(plan);
  EXPECT_EQ(Argv(plan->step(0)),
            (std::vector<std::string>{"echo", "two words; rm -rf /", "x two words; rm -rf / y"}));
}

TEST(PlanTest, LiteralBracesAreWrittenQuoted) {
  std::optional<Plan> plan = BuildPlan(MakeSpec({MakeStep("a", {"echo", "{{'{{'}}item}}", "a }} b"})}));
  ASSERT_TRUE(plan);
  EXPECT_EQ(Argv(plan->step(0)), (std::vector<std::string>{"echo", "{{item}}", "a }} b"}));
  EXPECT_TRUE(plan->step(0).argv[1].is_literal());
}

TEST(PlanTest, UnknownPlaceholderIsAnErrorWithSuggestion) {
  StepSpec e = MakeStep("evaluate", {"echo", "{{itme}}"}, {}, 3);
  e.for_each = List({"a", "b"});
  StepSpec p = MakeStep("p", {"echo", "{{params.modle}}", "{{item}}", "{{nothing.like.it}}"}, {}, 8);
  WorkflowSpec spec = MakeSpec({e, p});
  spec.params = {{"model", At(std::string("m"))}};
  std::string text;
  EXPECT_FALSE(BuildPlan(spec, &text));
  EXPECT_EQ(text,
            "wf.toml:3:1: error: step \"evaluate\": unknown placeholder {{itme}} (did you mean \"item\"?)\n"
            "wf.toml:8:1: error: step \"p\": unknown placeholder {{params.modle}} (did you mean \"params.model\"?)\n"
            "wf.toml:8:1: error: step \"p\": unknown placeholder {{item}} (the step has no for_each list)\n"
            "wf.toml:8:1: error: step \"p\": unknown placeholder {{nothing.like.it}}\n");
}

TEST(PlanTest, UnterminatedPlaceholderIsAnError) {
  std::string text;
  EXPECT_FALSE(BuildPlan(MakeSpec({MakeStep("a", {"echo", "{{item"}, {}, 2)}), &text));
  EXPECT_EQ(text,
            "wf.toml:2:1: error: step \"a\": unterminated placeholder in \"{{item\" (a literal \"{{\" is written "
            "{{'{{'}})\n");
}

TEST(PlanTest, OutputPlaceholderOfTransitiveNeedBecomesATemplatePart) {
  WorkflowSpec spec = MakeSpec({MakeStep("prepare", {"true"}), MakeStep("middle", {"true"}, {"prepare"}),
                                MakeStep("score", {"echo", "n={{ steps.prepare.outputs.tests }}", "{{run.id}}"},
                                         {"middle"})});
  spec.steps[2].env = {{"TOKEN", At(std::string("{{env.API_TOKEN}}"))}};
  std::optional<Plan> plan = BuildPlan(spec);
  ASSERT_TRUE(plan);
  const PlannedStep& score = plan->step(2);
  const Template& arg = score.argv[1];
  ASSERT_EQ(arg.parts.size(), 2u);
  EXPECT_EQ(arg.parts[1].kind, Template::Part::Kind::kOutput);
  EXPECT_EQ(arg.parts[1].task, TaskId{0});
  EXPECT_EQ(arg.parts[1].key, "tests");
  EXPECT_TRUE(score.env[0].second.uses_env());
  Template::Context ctx;
  ctx.run_id = "r1";
  ctx.output = [](TaskId t, const std::string& k) -> std::optional<std::string> {
    if (t == 0 && k == "tests") return "12";
    return std::nullopt;
  };
  EXPECT_EQ(Argv(score, ctx), (std::vector<std::string>{"echo", "n=12", "r1"}));
}

TEST(PlanTest, OutputPlaceholderOfANonNeedIsRejected) {
  WorkflowSpec spec = MakeSpec({MakeStep("prepare", {"true"}), MakeStep("other", {"true"}),
                                MakeStep("score", {"echo", "{{steps.other.outputs.x}}", "{{steps.score.outputs.y}}",
                                                   "{{steps.prepre.outputs.z}}", "{{steps.prepare.outputs}}"},
                                         {"prepare"}, 7)});
  std::string text;
  EXPECT_FALSE(BuildPlan(spec, &text));
  EXPECT_EQ(text,
            "wf.toml:7:1: error: step \"score\": {{steps.other.outputs.x}} names step \"other\", which is not among "
            "its needs (directly or further up)\n"
            "wf.toml:7:1: error: step \"score\": {{steps.score.outputs.y}} names step \"score\", which is not among "
            "its needs (directly or further up)\n"
            "wf.toml:7:1: error: step \"score\": {{steps.prepre.outputs.z}} names unknown step \"prepre\" (did you "
            "mean \"prepare\"?)\n"
            "wf.toml:7:1: error: step \"score\": malformed placeholder {{steps.prepare.outputs}}: expected "
            "{{steps.ID.outputs.KEY}}\n");
}

TEST(PlanTest, OutputOfAFanOutStepNeedsAnInstance) {
  StepSpec e = MakeStep("evaluate", {"true"});
  e.for_each = List({"alice", "bob"});
  StepSpec bad = MakeStep("bad", {"echo", "{{steps.evaluate.outputs.passed}}"}, {"evaluate"}, 6);
  StepSpec good = MakeStep("good", {"echo", "{{steps.evaluate[bob].outputs.passed}}"}, {"evaluate"}, 9);
  StepSpec typo = MakeStep("typo", {"echo", "{{steps.evaluate[bobb].outputs.passed}}"}, {"evaluate"}, 12);
  std::string text;
  EXPECT_FALSE(BuildPlan(MakeSpec({e, bad, good, typo}), &text));
  EXPECT_EQ(text,
            "wf.toml:6:1: error: step \"bad\": {{steps.evaluate.outputs.passed}} names the fan-out step \"evaluate\": "
            "name one instance (like {{steps.evaluate[alice].outputs.passed}}) or read $CRUCIBLE_UPSTREAM\n"
            "wf.toml:12:1: error: step \"typo\": {{steps.evaluate[bobb].outputs.passed}} names unknown instance "
            "\"evaluate[bobb]\" (did you mean \"evaluate[bob]\"?)\n");
  std::optional<Plan> plan = BuildPlan(MakeSpec({e, good}));
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->step(2).argv[1].parts[0].task, TaskId{1});
  EXPECT_EQ(plan->step(2).argv[1].parts[0].text, "evaluate[bob]");
}

TEST(PlanTest, OutputOfAnInstanceWhoseItemHasDotsAndBrackets) {
  StepSpec e = MakeStep("evaluate", {"true"});
  e.for_each = List({"gpt-4.1", "odd].item"});
  StepSpec score = MakeStep("score", {"echo", "{{steps.evaluate[gpt-4.1].outputs.a.b}}",
                                      "{{steps.evaluate[odd].item].outputs.k}}"},
                            {"evaluate"});
  std::string text;
  std::optional<Plan> plan = BuildPlan(MakeSpec({e, score}), &text);
  ASSERT_TRUE(plan) << text;
  const PlannedStep& s = plan->step(2);
  EXPECT_EQ(s.argv[1].parts[0].text, "evaluate[gpt-4.1]");
  EXPECT_EQ(s.argv[1].parts[0].key, "a.b");
  EXPECT_EQ(s.argv[2].parts[0].text, "evaluate[odd].item]");
  EXPECT_EQ(s.argv[2].parts[0].key, "k");
}

TEST(PlanTest, SharedValueErrorIsReportedOnce) {
  StepSpec e = MakeStep("e", {"true"});
  e.for_each = List({"a", "b", "c"});
  WorkflowSpec spec = MakeSpec({e, MakeStep("f", {"true"}), MakeStep("g", {"true"})});
  spec.env = {{"X", At(std::string("{{bogus}}"), 5, 5)}};
  std::string text;
  EXPECT_FALSE(BuildPlan(spec, &text));
  EXPECT_EQ(text, "wf.toml:5:5: error: step \"e\": unknown placeholder {{bogus}}\n");
}

TEST(PlanTest, ItemInAnAxesStepSuggestsNothingMisleading) {
  StepSpec e = MakeStep("e", {"echo", "{{item}}"}, {}, 2);
  e.for_each.kind = ForEach::Kind::kAxes;
  e.for_each.axes = {{"model", {"a"}}};
  std::string text;
  EXPECT_FALSE(BuildPlan(MakeSpec({e}), &text));
  EXPECT_EQ(text, "wf.toml:2:1: error: step \"e\": unknown placeholder {{item}}\n");
}

TEST(PlanTest, DispatchPlaceholdersAreRejectedInImageAndInputs) {
  StepSpec a = MakeStep("a", {"true"});
  StepSpec b = MakeStep("b", {"true"}, {"a"}, 5);
  b.image = At(std::string("repo/img:{{run.id}}"), 6);
  b.inputs = At(std::vector<loader::Located<std::string>>{At(std::string("{{steps.a.outputs.f}}"), 7),
                                                           At(std::string("{{env.HOME}}/x"), 7, 20)});
  std::string text;
  EXPECT_FALSE(BuildPlan(MakeSpec({a, b}), &text));
  EXPECT_EQ(text,
            "wf.toml:7:1: error: step \"b\": {{steps.a.outputs.f}} cannot be used in inputs: its value is known only "
            "when the step starts\n"
            "wf.toml:7:20: error: step \"b\": {{env.HOME}} cannot be used in inputs: its value is known only when "
            "the step starts\n"
            "wf.toml:6:1: error: step \"b\": {{run.id}} cannot be used in image: its value is known only when the "
            "step starts\n");
}

TEST(PlanTest, ImageIsSubstituted) {
  StepSpec e = MakeStep("e", {"true"});
  e.for_each = List({"3.11"});
  e.image = At(std::string("python:{{item}}"));
  std::optional<Plan> plan = BuildPlan(MakeSpec({e}));
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->step(0).image, "python:3.11");
}

TEST(PlanTest, NeedOnAFanOutExpandsToEveryInstance) {
  StepSpec e = MakeStep("evaluate", {"true"}, {"prepare"});
  e.for_each = List({"alice", "bob", "carol"});
  std::optional<Plan> plan =
      BuildPlan(MakeSpec({MakeStep("prepare", {"true"}), e, MakeStep("score", {"true"}, {"evaluate"})}));
  ASSERT_TRUE(plan);
  TaskId score = *plan->Find("score");
  EXPECT_EQ(Ids(*plan, plan->step(score).needs),
            (std::vector<std::string>{"evaluate[alice]", "evaluate[bob]", "evaluate[carol]"}));
  EXPECT_EQ(Ids(*plan, plan->step(*plan->Find("evaluate[bob]")).needs), (std::vector<std::string>{"prepare"}));
  EXPECT_EQ(Ids(*plan, plan->dependents(0)),
            (std::vector<std::string>{"evaluate[alice]", "evaluate[bob]", "evaluate[carol]"}));
  EXPECT_EQ(Ids(*plan, plan->dependents(*plan->Find("evaluate[carol]"))), (std::vector<std::string>{"score"}));
}

TEST(PlanTest, UnknownNeedSuggestsTheNearestStep) {
  StepSpec score = MakeStep("score", {"true"}, {}, 25);
  score.needs = {At(std::string("evaluat"), 27, 9)};
  std::string text;
  EXPECT_FALSE(BuildPlan(MakeSpec({MakeStep("evaluate", {"true"}), score}), &text));
  EXPECT_EQ(text, "wf.toml:27:9: error: step \"score\" needs unknown step \"evaluat\" (did you mean \"evaluate\"?)\n");
}

TEST(PlanTest, CyclesAreReportedAsPaths) {
  std::string text;
  EXPECT_FALSE(BuildPlan(MakeSpec({MakeStep("prepare", {"true"}, {"evaluate"}, 3),
                                   MakeStep("evaluate", {"true"}, {"prepare"}, 8)}),
                         &text));
  EXPECT_EQ(text, "wf.toml:3:1: error: cycle: prepare -> evaluate -> prepare\n");

  EXPECT_FALSE(BuildPlan(MakeSpec({MakeStep("ok", {"true"}, {}, 1), MakeStep("a", {"true"}, {"c", "ok"}, 2),
                                   MakeStep("b", {"true"}, {"a"}, 3), MakeStep("c", {"true"}, {"b"}, 4),
                                   MakeStep("after", {"true"}, {"c"}, 5)}),
                         &text));
  EXPECT_EQ(text, "wf.toml:2:1: error: cycle: a -> b -> c -> a\n");

  EXPECT_FALSE(BuildPlan(MakeSpec({MakeStep("self", {"true"}, {"self"}, 4)}), &text));
  EXPECT_EQ(text, "wf.toml:4:1: error: cycle: self -> self\n");
}

TEST(PlanTest, TwoCyclesAreEachReportedOnce) {
  std::string text;
  EXPECT_FALSE(BuildPlan(MakeSpec({MakeStep("a", {"true"}, {"b"}, 1), MakeStep("b", {"true"}, {"a"}, 2),
                                   MakeStep("c", {"true"}, {"d"}, 3), MakeStep("d", {"true"}, {"c", "a"}, 4)}),
                         &text));
  EXPECT_EQ(text,
            "wf.toml:1:1: error: cycle: a -> b -> a\n"
            "wf.toml:3:1: error: cycle: c -> d -> c\n");
}

TEST(PlanTest, HundredThousandStepChainBuilds) {
  constexpr int kN = 100000;
  std::vector<StepSpec> steps;
  steps.reserve(kN);
  steps.push_back(MakeStep("s0", {"true"}));
  for (int i = 1; i < kN; ++i) {
    steps.push_back(MakeStep("s" + std::to_string(i), {"echo", "{{steps.s0.outputs.k}}"}, {"s" + std::to_string(i - 1)}));
  }
  steps[kN - 1].run->value = {"echo", "{{steps.s0.outputs.k}}"};
  auto start = std::chrono::steady_clock::now();
  std::optional<Plan> plan = BuildPlan(MakeSpec(std::move(steps)));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->topological_order().size(), static_cast<size_t>(kN));
  for (int i = 0; i < kN; ++i) EXPECT_EQ(plan->topological_order()[i], static_cast<TaskId>(i));
  std::printf("[ info ] 100,000-step chain planned in %.2f s\n", secs);
}

TEST(PlanTest, ChainClosedIntoACycleIsReportedWithoutDeepRecursion) {
  constexpr int kN = 100000;
  std::vector<StepSpec> steps;
  steps.reserve(kN);
  for (int i = 0; i < kN; ++i) {
    steps.push_back(MakeStep("s" + std::to_string(i), {"true"}, {"s" + std::to_string((i + kN - 1) % kN)}, i + 1));
  }
  Diagnostics diags("wf.toml");
  EXPECT_FALSE(Plan::Build(MakeSpec(std::move(steps)), {}, diags));
  ASSERT_EQ(diags.all().size(), 1u);
  EXPECT_EQ(diags.all()[0].message.substr(0, 25), "cycle: s0 -> s1 -> s2 -> ");
}

/// Peak resident set of this process, in MiB.
double PeakRssMib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

void ExpectValidOrder(const Plan& plan) {
  const std::vector<TaskId>& order = plan.topological_order();
  ASSERT_EQ(order.size(), plan.step_count());
  std::vector<size_t> at(plan.step_count(), SIZE_MAX);
  for (size_t i = 0; i < order.size(); ++i) at[order[i]] = i;
  for (TaskId t = 0; t < plan.step_count(); ++t) {
    ASSERT_NE(at[t], SIZE_MAX);
    for (TaskId n : plan.step(t).needs) ASSERT_LT(at[n], at[t]);
  }
}

TEST(PlanTest, HundredLayersOfHundredFullyConnectedBuild) {
  // Written out step by step: 10,000 steps, 990,000 needs.
  constexpr int kLayers = 100, kWidth = 100;
  std::vector<StepSpec> steps;
  steps.reserve(kLayers * kWidth);
  // Declared last layer first, so the file order is not already a topological order.
  for (int l = kLayers - 1; l >= 0; --l) {
    for (int w = 0; w < kWidth; ++w) {
      std::vector<std::string> needs;
      if (l > 0) {
        for (int p = 0; p < kWidth; ++p) needs.push_back("l" + std::to_string(l - 1) + "n" + std::to_string(p));
      }
      steps.push_back(MakeStep("l" + std::to_string(l) + "n" + std::to_string(w), {"true"}, std::move(needs)));
    }
  }
  WorkflowSpec spec = MakeSpec(std::move(steps));
  double before = PeakRssMib();
  auto start = std::chrono::steady_clock::now();
  std::optional<Plan> plan = BuildPlan(spec);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(plan);
  size_t edges = 0;
  for (const PlannedStep& s : plan->steps()) edges += s.needs.size();
  EXPECT_EQ(edges, 990000u);
  ExpectValidOrder(*plan);
  std::printf("[ info ] 100x100 layered (%zu edges, explicit needs) planned in %.2f s, peak RSS %.0f MiB -> %.0f MiB\n",
              edges, secs, before, PeakRssMib());
}

TEST(PlanTest, HundredLayersOfFanOutsBuild) {
  // The same graph written as 100 fan-out steps of 100 instances each.
  std::vector<StepSpec> steps;
  std::vector<std::string> items;
  for (int w = 0; w < 100; ++w) items.push_back(std::to_string(w));
  for (int l = 0; l < 100; ++l) {
    StepSpec s = MakeStep("l" + std::to_string(l), {"run", "{{item}}"},
                          l > 0 ? std::vector<std::string>{"l" + std::to_string(l - 1)} : std::vector<std::string>{});
    s.for_each = List(items);
    steps.push_back(std::move(s));
  }
  auto start = std::chrono::steady_clock::now();
  std::optional<Plan> plan = BuildPlan(MakeSpec(std::move(steps)));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->step_count(), 10000u);
  EXPECT_EQ(plan->dependents(0).size(), 100u);
  ExpectValidOrder(*plan);
  std::printf("[ info ] 100x100 layered (fan-out) planned in %.2f s, peak RSS %.0f MiB\n", secs, PeakRssMib());
}

TEST(PlanTest, TenThousandIndependentStepsMakeASmallPlan) {
  std::vector<StepSpec> steps;
  for (int i = 0; i < 10000; ++i) {
    steps.push_back(MakeStep("step-" + std::to_string(i), {"python3", "-c", "print({{workflow.name}})"}));
  }
  WorkflowSpec spec = MakeSpec(std::move(steps));
  size_t before = mallinfo2().uordblks;
  std::optional<Plan> plan = BuildPlan(spec);
  ASSERT_TRUE(plan);
  size_t after = mallinfo2().uordblks;
  double mib = (after - before) / (1024.0 * 1024.0);
  std::printf("[ info ] plan of 10,000 independent steps holds %.1f MiB\n", mib);
  EXPECT_LT(mib, 16.0);  // about 0.9 KiB a step with its argv, index and edges
}

TEST(PlanTest, BackendComesFromStepThenOptionThenWorkflow) {
  StepSpec own = MakeStep("own", {"true"});
  own.backend = At(std::string("kubernetes"));
  WorkflowSpec spec = MakeSpec({own, MakeStep("plain", {"true"})});
  spec.backend = At(std::string("compose"));
  spec.max_parallel = At<int64_t>(3);
  spec.timeout_ms = At<int64_t>(60000);
  spec.fail_fast = true;
  std::optional<Plan> plan = BuildPlan(spec);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->step(0).backend, "kubernetes");
  EXPECT_EQ(plan->step(1).backend, "compose");
  EXPECT_EQ(plan->backend_names(), (std::vector<std::string>{"compose", "kubernetes"}));
  EXPECT_EQ(plan->max_parallel(), 3);
  EXPECT_EQ(plan->timeout_ms(), 60000);
  EXPECT_TRUE(plan->fail_fast());
  PlanOptions options;
  options.backend = "localproc";
  plan = BuildPlan(spec, nullptr, options);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->step(0).backend, "kubernetes");
  EXPECT_EQ(plan->step(1).backend, "localproc");
}

TEST(PlanTest, DotListsInstancesAndEdges) {
  StepSpec e = MakeStep("evaluate", {"true"}, {"prepare"});
  e.for_each = List({"alice", "b\"ob"});
  std::optional<Plan> plan =
      BuildPlan(MakeSpec({MakeStep("prepare", {"true"}), e, MakeStep("score", {"true"}, {"evaluate"})}, "grade"));
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->ToDot(),
            "digraph \"grade\" {\n"
            "  \"prepare\";\n"
            "  \"evaluate[alice]\";\n"
            "  \"evaluate[b\\\"ob]\";\n"
            "  \"score\";\n"
            "  \"prepare\" -> \"evaluate[alice]\";\n"
            "  \"prepare\" -> \"evaluate[b\\\"ob]\";\n"
            "  \"evaluate[alice]\" -> \"score\";\n"
            "  \"evaluate[b\\\"ob]\" -> \"score\";\n"
            "}\n");
}

TEST(PlanTest, InputsExpandGlobsAndDirectories) {
  TempDir dir;
  dir.Write("prepare.py");
  dir.Write("tests/test_a.py");
  dir.Write("tests/sub/test_b.py");
  dir.Write("tests/.hidden");
  dir.Write("submissions/alice.py");
  dir.Write("submissions/bob.py");
  dir.Write("data/x/deep/one.csv");
  dir.Write("data/two.csv");
  dir.Write("data/skip.txt");
  StepSpec e = MakeStep("evaluate", {"true"});
  e.for_each = List({"alice"});
  e.inputs = At(std::vector<loader::Located<std::string>>{
      At(std::string("tests/")), At(std::string("./prepare.py")), At(std::string("submissions/{{item}}.py")),
      At(std::string("data/**/*.csv")), At(std::string("sub*/b?b.py"))});
  std::optional<Plan> plan = BuildPlan(MakeSpec({e}, "wf", dir.path()));
  ASSERT_TRUE(plan);
  std::vector<std::string> dests;
  for (const Input& in : plan->step(0).inputs) {
    dests.push_back(in.dest);
    EXPECT_EQ(in.source, dir.path() + "/" + in.dest);
  }
  EXPECT_EQ(dests, (std::vector<std::string>{"tests/.hidden", "tests/sub/test_b.py", "tests/test_a.py", "prepare.py",
                                             "submissions/alice.py", "data/two.csv", "data/x/deep/one.csv",
                                             "submissions/bob.py"}));
}

TEST(PlanTest, InputsMatchingNothingOrLeavingTheDirectoryAreErrors) {
  TempDir dir;
  TempDir outside;
  outside.Write("secret.txt");
  dir.Write("ok.txt");
  std::filesystem::create_symlink(outside.path() + "/secret.txt", dir.path() + "/link.txt");
  std::filesystem::create_symlink(outside.path(), dir.path() + "/linkdir");
  dir.Write("tree/fine.txt");
  std::filesystem::create_symlink(outside.path() + "/secret.txt", dir.path() + "/tree/escape.txt");
  StepSpec e = MakeStep("e", {"true"}, {}, 1);
  e.for_each = List({"../x"});
  e.inputs = At(std::vector<loader::Located<std::string>>{
      At(std::string("missing/*.py"), 2), At(std::string("link.txt"), 3), At(std::string("linkdir/secret.txt"), 4),
      At(std::string("tree"), 5), At(std::string("{{item}}"), 6), At(std::string("ok.txt"), 7)});
  std::string text;
  EXPECT_FALSE(BuildPlan(MakeSpec({e}, "wf", dir.path()), &text));
  const std::string real_outside = std::filesystem::canonical(outside.path()).string();
  EXPECT_EQ(text,
            "wf.toml:2:1: error: step \"e\": input \"missing/*.py\" matches no file\n"
            "wf.toml:3:1: error: step \"e\": input \"link.txt\" leaves the workflow's directory "
            "(it resolves to \"" + real_outside + "/secret.txt\")\n"
            "wf.toml:4:1: error: step \"e\": input \"linkdir/secret.txt\" leaves the "
            "workflow's directory (it resolves to \"" + real_outside + "/secret.txt\")\n"
            "wf.toml:5:1: error: step \"e\": input \"tree\" reaches \"tree/escape.txt\", which leaves the "
            "workflow's directory (it resolves to \"" + real_outside + "/secret.txt\")\n"
            "wf.toml:6:1: error: step \"e\": input \"../x\" leaves the workflow's directory\n");
}

}  // namespace
}  // namespace crucible::plan

#include <sys/wait.h>

#include <cstdio>
#include <string>

#include <gtest/gtest.h>

#include "plan/plan.h"
#include "plan_test_util.h"

namespace crucible::plan {
namespace {

using testing::RenderOrDie;

/// Runs `script` with /bin/sh -c and returns what it printed.
std::string RunShell(const std::string& script) {
  std::string cmd = "/bin/sh -c " + ShellQuote(script);
  FILE* f = popen(cmd.c_str(), "r");
  std::string out;
  char buf[256];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  pclose(f);
  return out;
}

Template::Part Lit(std::string text) { return Template::Part{Template::Part::Kind::kLiteral, std::move(text), 0, {}}; }

TEST(ShellQuoteTest, LeavesPlainWordsAlone) {
  EXPECT_EQ(ShellQuote("alice"), "alice");
  EXPECT_EQ(ShellQuote("a/b-c_d.py"), "a/b-c_d.py");
}

TEST(ShellQuoteTest, QuotesHostileValues) {
  EXPECT_EQ(ShellQuote(""), "''");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  EXPECT_EQ(ShellQuote("'; rm -rf / #"), "''\\''; rm -rf / #'");
}

TEST(ShellQuoteTest, ShellSeesHostileValuesVerbatim) {
  for (const std::string value :
       {"'; rm -rf / #", "two words", "\"double\" and 'single'", "line\nbreak", "$(echo no) `echo no` $HOME", "\\",
        "*", ""}) {
    EXPECT_EQ(RunShell("printf %s " + ShellQuote(value)), value);
  }
}

TEST(TemplateTest, LiteralRendersAsIs) {
  Template t{{Lit("hello")}, false};
  EXPECT_TRUE(t.is_literal());
  EXPECT_EQ(t.literal(), "hello");
  EXPECT_EQ(RenderOrDie(t), "hello");
  EXPECT_FALSE(t.uses_env());
}

TEST(TemplateTest, RendersRunIdOutputsAndEnv) {
  Template t{{Lit("run="), Template::Part{Template::Part::Kind::kRunId, "", 0, {}}, Lit(" tests="),
              Template::Part{Template::Part::Kind::kOutput, "prepare", 3, "tests"}, Lit(" token="),
              Template::Part{Template::Part::Kind::kEnv, "", 0, "TOKEN"}},
             false};
  EXPECT_FALSE(t.is_literal());
  EXPECT_TRUE(t.uses_env());
  Template::Context ctx;
  ctx.run_id = "r7f3";
  ctx.output = [](TaskId task, const std::string& key) -> std::optional<std::string> {
    if (task == 3 && key == "tests") return "12";
    return std::nullopt;
  };
  ctx.env = [](const std::string& name) -> std::optional<std::string> {
    if (name == "TOKEN") return "s3cret";
    return std::nullopt;
  };
  EXPECT_EQ(RenderOrDie(t, ctx), "run=r7f3 tests=12 token=s3cret");
}

TEST(TemplateTest, MissingOutputKeyNamesStepAndKey) {
  Template t{{Template::Part{Template::Part::Kind::kOutput, "prepare", 0, "tests"}}, false};
  Template::Context ctx;
  ctx.output = [](TaskId, const std::string&) -> std::optional<std::string> { return std::nullopt; };
  std::string missing;
  EXPECT_FALSE(t.Render(ctx, &missing));
  EXPECT_EQ(missing, "step \"prepare\" did not write output \"tests\"");
}

TEST(TemplateTest, UnsetEnvIsMissing) {
  Template t{{Template::Part{Template::Part::Kind::kEnv, "", 0, "NOPE"}}, false};
  Template::Context ctx;
  ctx.env = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  std::string missing;
  EXPECT_FALSE(t.Render(ctx, &missing));
  EXPECT_NE(missing.find("NOPE"), std::string::npos);
}

TEST(TemplateTest, ShellTemplateQuotesDynamicValues) {
  Template t{{Lit("echo "), Template::Part{Template::Part::Kind::kOutput, "prepare", 0, "msg"}}, true};
  Template::Context ctx;
  ctx.output = [](TaskId, const std::string&) -> std::optional<std::string> { return "'; rm -rf / #"; };
  std::string script = RenderOrDie(t, ctx);
  EXPECT_EQ(script, "echo ''\\''; rm -rf / #'");
  EXPECT_EQ(RunShell(script), "'; rm -rf / #\n");
}

}  // namespace
}  // namespace crucible::plan

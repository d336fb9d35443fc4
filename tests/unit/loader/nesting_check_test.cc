#include "loader/nesting_check.h"

#include <gtest/gtest.h>

#include <string>

namespace crucible::loader {
namespace {

std::string Nested(int depth) { return "a = " + std::string(depth, '[') + std::string(depth, ']') + "\n"; }

std::string DottedKey(int segments) {
  std::string key = "a";
  for (int i = 1; i < segments; ++i) key += ".a";
  return key;
}

TEST(NestingCheckTest, AcceptsNestingUpToTheLimit) {
  // The key is one level, so 63 arrays make 64.
  EXPECT_EQ(FindExcessiveNesting(Nested(63), 64), std::nullopt);
  EXPECT_EQ(FindExcessiveNesting(DottedKey(64) + " = 1\n", 64), std::nullopt);
  EXPECT_EQ(FindExcessiveNesting("[" + DottedKey(64) + "]\n", 64), std::nullopt);
}

TEST(NestingCheckTest, RefusesArraysBeyondTheLimitAtTheFirstTooDeepBracket) {
  std::optional<SourcePos> pos = FindExcessiveNesting("x = 1\n" + Nested(64), 64);
  ASSERT_TRUE(pos.has_value());
  EXPECT_EQ(pos->line, 2);
  EXPECT_EQ(pos->column, 5 + 63);
}

TEST(NestingCheckTest, RefusesDottedKeysAndHeadersBeyondTheLimit) {
  EXPECT_TRUE(FindExcessiveNesting(DottedKey(65) + " = 1\n", 64).has_value());
  EXPECT_TRUE(FindExcessiveNesting("[" + DottedKey(65) + "]\n", 64).has_value());
  EXPECT_TRUE(FindExcessiveNesting("[[" + DottedKey(65) + "]]\n", 64).has_value());
}

TEST(NestingCheckTest, LevelsOfKeysTablesAndArraysAddUp) {
  // header (2) + key (2) + array (1) + inline table (1) + key (2) = 8
  std::string text = "[a.b]\nc.d = [{e.f = 1}]\n";
  EXPECT_EQ(FindExcessiveNesting(text, 8), std::nullopt);
  EXPECT_TRUE(FindExcessiveNesting(text, 7).has_value());
}

TEST(NestingCheckTest, IgnoresBracketsAndDotsInStringsAndComments) {
  std::string text =
      "a = \"[[[[[[[[[[\"\n"
      "b = '{{{{{{{{{{'\n"
      "\"c.c.c.c.c.c.c\" = \"\"\"\n[[[[[[[[[[\n\"\"\"\n"
      "d = '''[[[[[[[[[[.'''\n"
      "# [[[[[[[[[[ e.e.e.e.e.e.e\n"
      "f = \"\\\"[[[[[[[[[[\"\n";
  EXPECT_EQ(FindExcessiveNesting(text, 3), std::nullopt);
}

TEST(NestingCheckTest, SurvivesMalformedText) {
  for (const char* text : {"]]]]]}}}}", "\"unterminated", "'''unterminated", "a = [\n", "[", "a = {b = [}",
                           "\"\"\"", "\\"}) {
    EXPECT_EQ(FindExcessiveNesting(text, 64), std::nullopt) << text;
  }
}

}  // namespace
}  // namespace crucible::loader

#include "scheduler/step_io.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "scheduler/scheduler.h"

namespace crucible::scheduler {
namespace {

using ::testing::HasSubstr;

TEST(StepIoTest, ParsesKeyValueLinesIgnoringBlanks) {
  auto out = ParseOutputs("a=1\n\n  \nb.c-d_e=x=y\r\nempty=\nlast=no newline", 4096);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out.value(), (Outputs{{"a", "1"}, {"b.c-d_e", "x=y"}, {"empty", ""}, {"last", "no newline"}}));
}

TEST(StepIoTest, LaterValueOfAKeyWins) {
  auto out = ParseOutputs("a=1\na=2\n", 4096);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out.value(), (Outputs{{"a", "2"}}));
}

TEST(StepIoTest, LineWithoutEqualsFails) {
  auto out = ParseOutputs("a=1\njust text\n", 4096);
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.error().message, HasSubstr("line 2"));
}

TEST(StepIoTest, BadKeyFails) {
  EXPECT_FALSE(ParseOutputs("1a=1\n", 4096).ok());
  EXPECT_FALSE(ParseOutputs("=1\n", 4096).ok());
  EXPECT_FALSE(ParseOutputs("a b=1\n", 4096).ok());
  EXPECT_TRUE(ParseOutputs("_a=1\n", 4096).ok());
}

TEST(StepIoTest, OverCapFailsWithMessage) {
  std::string text(4097, 'x');
  auto out = ParseOutputs(text, 4096);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.error().message, "outputs exceed 4 KiB");
  EXPECT_TRUE(ParseOutputs("a=" + std::string(4094, 'x'), 4096).ok());
}

TEST(StepIoTest, SafeNameIsReadableAndInjective) {
  EXPECT_EQ(SafeName("prepare"), "prepare");
  EXPECT_EQ(SafeName("eval[model=a,split=test]"), "eval%5Bmodel=a,split=test%5D");
  EXPECT_EQ(SafeName("a/b"), "a%2Fb");
  EXPECT_NE(SafeName("a%2Fb"), SafeName("a/b"));
  EXPECT_EQ(SafeName(".."), "%..");
  std::string long_a = "s[" + std::string(300, 'a') + "]";
  std::string long_b = "s[" + std::string(299, 'a') + "b]";
  EXPECT_LE(SafeName(long_a).size(), 160u);
  EXPECT_NE(SafeName(long_a), SafeName(long_b));
}

TEST(StepIoTest, MaskReplacesSecretsOfFourOrMoreBytes) {
  std::string path = std::filesystem::temp_directory_path() / ("crucible-mask-" + std::to_string(getpid()));
  std::ofstream(path) << "tok=hunter22 pw=abc tok2=hunter22hunter22\n";
  ASSERT_TRUE(MaskSecretsInFile(path, {"hunter22", "abc", "hunter22hunter22"}).ok());
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "tok=*** pw=abc tok2=***\n");
  std::filesystem::remove(path);
  EXPECT_TRUE(MaskSecretsInFile(path, {"hunter22"}).ok());  // missing file: nothing to do
}

TEST(WakerTest, WakeFromAnotherThreadEndsWait) {
  Waker waker;
  EXPECT_FALSE(waker.Wait(0));
  std::thread t([&] { waker.Wake(); });
  EXPECT_TRUE(waker.Wait(10000));
  t.join();
  EXPECT_FALSE(waker.Wait(0));  // the wake was consumed
  waker.Wake();
  waker.Wake();
  EXPECT_TRUE(waker.Wait(0));
  EXPECT_FALSE(waker.Wait(0));
}

TEST(RunIdTest, HasTimestampAndRandomSuffix) {
  std::string id = NewRunId();
  EXPECT_TRUE(std::regex_match(id, std::regex("[0-9]{8}-[0-9]{6}-[0-9a-f]{4}"))) << id;
  std::set<std::string> ids;
  for (int i = 0; i < 20; ++i) ids.insert(NewRunId());
  EXPECT_GT(ids.size(), 1u);
}

}  // namespace
}  // namespace crucible::scheduler

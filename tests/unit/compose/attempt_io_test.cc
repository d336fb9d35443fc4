// The launch script, the tar, the exec stream's frames, the control channel and the capped log.
#include "attempt_io.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace crucible::plugins::compose {
namespace {

std::string Frame(int stream, const std::string& payload) {
  std::string h(8, '\0');
  h[0] = static_cast<char>(stream);
  uint32_t n = static_cast<uint32_t>(payload.size());
  h[4] = static_cast<char>(n >> 24);
  h[5] = static_cast<char>(n >> 16);
  h[6] = static_cast<char>(n >> 8);
  h[7] = static_cast<char>(n);
  return h + payload;
}

TEST(AttemptIoTest, ShellQuoteKeepsEveryByteThroughSh) {
  const std::string hostile = "a b'c\"d $(x) `y` \\ \n\xff";
  std::string script = "printf '%s' " + ShellQuote(hostile);
  std::string cmd = "sh -c " + ShellQuote(script) + " > quoted.out";
  char tmpl[] = "/tmp/crucible-quote-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  ASSERT_EQ(std::system(("cd " + dir + " && " + cmd).c_str()), 0);
  std::ifstream in(dir + "/quoted.out", std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  EXPECT_EQ(s.str(), hostile);
  std::filesystem::remove_all(dir);
}

TEST(AttemptIoTest, LaunchScriptSetsTimesCapArgvAndEnv) {
  std::string s = BuildLaunchScript(1500, 5000, 4097, {"echo", "it's"}, {{"A", "x y"}});
  EXPECT_EQ(s, "_t=1.500\n_g=5.000\n_c=4097\nset -- 'echo' 'it'\\''s'\n_launch() {\nexport A='x y'\n:\n}\n");
  EXPECT_NE(BuildLaunchScript(0, 0, 1, {"true"}, {}).find("_t=0\n"), std::string::npos);
  EXPECT_THROW(BuildLaunchScript(0, 0, 1, {"true"}, {{"NOT-A-NAME", "v"}}), std::invalid_argument);
}

TEST(AttemptIoTest, TarHoldsTheEntriesWithTheirParentsAndModes) {
  char tmpl[] = "/tmp/crucible-tar-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  std::ofstream(dir + "/src.sh") << "#!/bin/sh\n";
  std::filesystem::permissions(dir + "/src.sh", std::filesystem::perms(0755));
  std::string tar = BuildTar({{"a1/deep/run.sh", dir + "/src.sh", "", 0644}, {"a1.launch", std::nullopt, "x=1\n", 0600}});
  std::ofstream(dir + "/t.tar", std::ios::binary) << tar;
  ASSERT_EQ(std::system(("mkdir " + dir + "/out && tar -x -C " + dir + "/out -f " + dir + "/t.tar").c_str()), 0);
  EXPECT_TRUE(std::filesystem::is_directory(dir + "/out/a1/deep"));
  auto perms = std::filesystem::status(dir + "/out/a1/deep/run.sh").permissions();
  EXPECT_EQ(static_cast<int>(perms) & 0777, 0755);
  std::ifstream in(dir + "/out/a1.launch");
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "x=1");
  std::filesystem::remove_all(dir);
}

TEST(AttemptIoTest, DemuxSplitsFramesCutAnywhere) {
  std::string stream = Frame(1, "hello ") + Frame(2, "crucible-pid 7 9\n") + Frame(1, "world");
  std::string out, err;
  FrameDemux d([&](int s, const char* p, size_t n) { (s == 1 ? out : err).append(p, n); });
  for (char c : stream) d.Feed(&c, 1);
  EXPECT_EQ(out, "hello world");
  EXPECT_EQ(err, "crucible-pid 7 9\n");
}

TEST(AttemptIoTest, ControlParserReadsPidExitScrubAndTheOutputToTheEnd) {
  ControlParser p(12);
  std::string text =
      "crucible-of crucible:r1/s#2\ncrucible-pid 12 34\ncrucible-exit 137 0 timeout 1 2\ncrucible-scrub dirty\n"
      "crucible-output\nk=v\nno-nl\ncrucible-exit 0 0 none 0 0\n";
  p.Feed(text.data(), 10);
  EXPECT_FALSE(p.has_pid());
  p.Feed(text.data() + 10, text.size() - 10);
  const ControlReport& r = p.report();
  EXPECT_EQ(r.label, "crucible:r1/s#2");
  EXPECT_EQ(r.supervisor_pid, 12);
  EXPECT_EQ(r.step_pid, 34);
  EXPECT_TRUE(r.exited);
  EXPECT_EQ(r.rc, 137) << "an exit code above 128 is a code";
  EXPECT_EQ(r.signal, 0);
  EXPECT_EQ(r.why, "timeout");
  EXPECT_EQ(r.oom_before, 1);
  EXPECT_EQ(r.oom_after, 2);
  ASSERT_TRUE(r.output.has_value());
  EXPECT_EQ(*r.output, "k=v\nno-nl\ncr") << "the output runs to the end of the stream, cut at the cap; lines in it are bytes";
  ASSERT_TRUE(r.scrub_ok.has_value());
  EXPECT_FALSE(*r.scrub_ok);
}

TEST(AttemptIoTest, ControlParserReadsASignalAndASupervisorFoundAlive) {
  ControlParser p;
  std::string text = "crucible-pid 5 6\ncrucible-alive\ncrucible-exit -1 9 none 0 0\n";
  p.Feed(text.data(), text.size());
  EXPECT_TRUE(p.report().alive);
  EXPECT_EQ(p.report().rc, -1);
  EXPECT_EQ(p.report().signal, 9);
  EXPECT_FALSE(p.report().output.has_value());
}

TEST(AttemptIoTest, CappedLogKeepsTheHeadAndTheTailAndMarksWhatItDropped) {
  char tmpl[] = "/tmp/crucible-log-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  {
    CappedLog silent(dir + "/silent.log", 10);
    silent.Finish();
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/silent.log")) << "a silent step has no log file";
  CappedLog log(dir + "/a.log", 10);
  log.Write("0123456", 7);
  log.Write("789abc", 6);
  log.Finish();
  EXPECT_EQ(log.kept(), 10u);
  EXPECT_EQ(log.dropped(), 3u);
  std::ifstream in(dir + "/a.log");
  std::stringstream s;
  s << in.rdbuf();
  EXPECT_EQ(s.str(), "01234\n[crucible-engine: 3 bytes dropped]\n89abc");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace crucible::plugins::compose

namespace crucible::plugins::compose {
namespace {

TEST(AttemptIoTest, Utf8CheckAcceptsTextAndRefusesStrayBytes) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
}

}  // namespace
}  // namespace crucible::plugins::compose

#include "common/units.h"

#include <gtest/gtest.h>

namespace crucible {
namespace {

TEST(UnitsTest, DurationsParseToMilliseconds) {
  EXPECT_EQ(ParseDuration("250ms"), 250);
  EXPECT_EQ(ParseDuration("30s"), 30000);
  EXPECT_EQ(ParseDuration("5m"), 300000);
  EXPECT_EQ(ParseDuration("1h30m"), 5400000);
  EXPECT_EQ(ParseDuration("2d"), 172800000);
  EXPECT_EQ(ParseDuration("1m30s500ms"), 90500);
  EXPECT_EQ(ParseDuration("1.5s"), 1500);
  EXPECT_EQ(ParseDuration("0"), 0);
  EXPECT_EQ(ParseDuration("0s"), 0);
}

TEST(UnitsTest, MalformedDurationsAreRefused) {
  for (const char* bad : {"", "5", "5 minutes", "5 m", "m", "-5s", "1.s", "5x", "30m1h", "5m5m", "1h 30m",
                          "99999999999999999999d", "s5"}) {
    EXPECT_EQ(ParseDuration(bad), std::nullopt) << bad;
  }
}

TEST(UnitsTest, MemoryQuantitiesParseToBytes) {
  EXPECT_EQ(ParseMemory("256Mi"), 256LL * 1024 * 1024);
  EXPECT_EQ(ParseMemory("1Gi"), 1024LL * 1024 * 1024);
  EXPECT_EQ(ParseMemory("500M"), 500000000);
  EXPECT_EQ(ParseMemory("1024"), 1024);
  EXPECT_EQ(ParseMemory("2k"), 2000);
  EXPECT_EQ(ParseMemory("1Ki"), 1024);
  EXPECT_EQ(ParseMemory("1.5Gi"), 1610612736);
  EXPECT_EQ(ParseMemory("0.1k"), 100);
}

TEST(UnitsTest, MalformedMemoryIsRefused) {
  for (const char* bad : {"", "256MB", "1 Gi", "Gi", "-1Gi", "1gi", "1K", "lots", "9999999999Pi"}) {
    EXPECT_EQ(ParseMemory(bad), std::nullopt) << bad;
  }
}

TEST(UnitsTest, CpuParsesToMillicores) {
  EXPECT_EQ(ParseCpuMillicores("500m"), 500);
  EXPECT_EQ(ParseCpuMillicores("0.5"), 500);
  EXPECT_EQ(ParseCpuMillicores("2"), 2000);
  EXPECT_EQ(ParseCpuMillicores("1.25"), 1250);
  for (const char* bad : {"", "lots", "500 m", "-1", "1c", "m"}) {
    EXPECT_EQ(ParseCpuMillicores(bad), std::nullopt) << bad;
  }
}

TEST(UnitsTest, DurationsFormatCompactly) {
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(250), "250ms");
  EXPECT_EQ(FormatDuration(1500), "1.5s");
  EXPECT_EQ(FormatDuration(90000), "1m30s");
  EXPECT_EQ(FormatDuration(5400000), "1h30m");
  EXPECT_EQ(FormatDuration(172800000), "2d");
  EXPECT_EQ(FormatDuration(-1500), "-1.5s");
  EXPECT_EQ(ParseDuration(FormatDuration(93784005)), 93784005);
}

}  // namespace
}  // namespace crucible

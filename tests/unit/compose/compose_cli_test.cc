// Compose command lines (v2 and v1) and the rendering of the pool's compose file.
#include "compose_cli.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace crucible::plugins::compose {
namespace {

using ::testing::ElementsAre;

const ComposeCli kV2{ComposeFlavor::kV2, {"docker", "compose"}};
const ComposeCli kV1{ComposeFlavor::kV1, {"docker-compose"}};

TEST(ComposeCliTest, V2UpScalesEachServiceOfTheProject) {
  EXPECT_THAT(UpCommand(kV2, "pool", {"/s/pool.yaml", "/s/stamp.yaml"}, {{"executor", 8}, {"python", 2}}),
              ElementsAre("docker", "compose", "--project-name", "pool", "--file", "/s/pool.yaml", "--file",
                          "/s/stamp.yaml", "up", "--detach",
                          "--no-color", "--quiet-pull", "--scale", "executor=8", "--scale", "python=2", "executor",
                          "python"));
}

TEST(ComposeCliTest, V1UpHasNoQuietPull) {
  EXPECT_THAT(UpCommand(kV1, "pool", {"f.yaml"}, {{"executor", 3}}),
              ElementsAre("docker-compose", "--project-name", "pool", "--file", "f.yaml", "up", "--detach",
                          "--no-color", "--scale", "executor=3", "executor"));
}

TEST(ComposeCliTest, V2DownRemovesVolumesAndOrphansWithoutAGrace) {
  EXPECT_THAT(DownCommand(kV2, "pool", {"f.yaml"}),
              ElementsAre("docker", "compose", "--project-name", "pool", "--file", "f.yaml", "down", "--volumes",
                          "--remove-orphans", "--timeout", "0"));
}

TEST(ComposeCliTest, RenderReplacesOnlyTheGivenNamesAndKeepsOthersForCompose) {
  std::map<std::string, std::string> vars = {{"CRUCIBLE_IMAGE", "img:1"}, {"CRUCIBLE_EMPTY", ""}};
  EXPECT_EQ(RenderTemplate("image: ${CRUCIBLE_IMAGE:-x}", vars), "image: img:1");
  EXPECT_EQ(RenderTemplate("a: ${CRUCIBLE_IMAGE}", vars), "a: img:1");
  EXPECT_EQ(RenderTemplate("m: ${CRUCIBLE_EMPTY:-512m}", vars), "m: 512m");
  EXPECT_EQ(RenderTemplate("h: ${HOME:-/root} ${CRUCIBLE_OTHER:-d}", vars), "h: ${HOME:-/root} ${CRUCIBLE_OTHER:-d}");
  EXPECT_EQ(RenderTemplate("unclosed ${CRUCIBLE_IMAGE", vars), "unclosed ${CRUCIBLE_IMAGE");
}

TEST(ComposeCliTest, RunCommandReturnsTheStatusAndOutput) {
  std::string out;
  EXPECT_EQ(RunCommand({"sh", "-c", "echo out; echo err >&2; exit 3"}, &out), 3);
  EXPECT_EQ(out, "out\nerr\n");
  EXPECT_EQ(RunCommand({"/nonexistent/compose"}, &out), -1);
}

}  // namespace
}  // namespace crucible::plugins::compose

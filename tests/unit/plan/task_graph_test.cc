#include "plan/task_graph.h"

#include <vector>

#include <gtest/gtest.h>

namespace crucible::plan {
namespace {

using Cycle = std::vector<TaskGraph::Id>;

TEST(TaskGraphTest, TopologicalOrderPutsNeedsFirst) {
  TaskGraph g(4, {{2, 1}, {1, 0}, {3, 0}});
  std::vector<TaskGraph::Id> order = g.TopologicalOrder();
  ASSERT_EQ(order.size(), 4u);
  std::vector<size_t> at(4);
  for (size_t i = 0; i < order.size(); ++i) at[order[i]] = i;
  EXPECT_LT(at[2], at[1]);
  EXPECT_LT(at[1], at[0]);
  EXPECT_LT(at[3], at[0]);
  EXPECT_EQ(g.edge_count(), 3u);
  EXPECT_TRUE(g.Cycles().empty());
}

TEST(TaskGraphTest, CyclesComeAsPathsFromTheirLowestTask) {
  // 2 -> 3 -> 4 -> 2, a self-edge on 5, and 4 -> 0 -> 1 leading out of the cycle.
  TaskGraph g(6, {{0, 1}, {2, 3}, {3, 4}, {4, 2}, {5, 5}, {4, 0}});
  EXPECT_EQ(g.TopologicalOrder().size(), 0u);
  EXPECT_EQ(g.Cycles(), (std::vector<Cycle>{{2, 3, 4}, {5}}));
}

TEST(TaskGraphTest, LongChainNeedsNoDeepStack) {
  constexpr TaskGraph::Id kN = 200000;
  std::vector<TaskGraph::Edge> edges;
  for (TaskGraph::Id i = 1; i < kN; ++i) edges.emplace_back(i - 1, i);
  EXPECT_EQ(TaskGraph(kN, edges).TopologicalOrder().size(), kN);
  edges.emplace_back(kN - 1, 0);
  TaskGraph g(kN, edges);
  EXPECT_TRUE(g.TopologicalOrder().empty());
  std::vector<Cycle> cycles = g.Cycles();
  ASSERT_EQ(cycles.size(), 1u);
  EXPECT_EQ(cycles[0].size(), kN);
  EXPECT_EQ(cycles[0].front(), 0u);
}

}  // namespace
}  // namespace crucible::plan

// TaskGraph: a directed graph of tasks numbered 0..n-1, for ordering and cycle paths.
//
// Boost.Graph stores it (a compressed sparse row graph: about 4 bytes an edge,
// where an adjacency_list allocates a property per edge); only integers cross
// this header. Every
// algorithm here is iterative (Kahn's algorithm, an explicit-stack DFS), so a
// 100,000-task chain never deepens the call stack.
//
// Thread-safety: immutable once built; const methods may run concurrently.
#ifndef CRUCIBLE_PLAN_TASK_GRAPH_H_
#define CRUCIBLE_PLAN_TASK_GRAPH_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace crucible::plan {

/// A directed graph whose edges run from a task to the tasks that wait for it.
class TaskGraph {
 public:
  using Id = uint32_t;

  /// An edge (from, to): `to` waits for `from`. A self-edge is a cycle of one.
  using Edge = std::pair<Id, Id>;

  /// Takes the edges in any order; duplicates are kept (and harmless).
  TaskGraph(size_t task_count, const std::vector<Edge>& edges);
  ~TaskGraph();
  TaskGraph(TaskGraph&&) noexcept;
  TaskGraph& operator=(TaskGraph&&) noexcept;

  size_t task_count() const;
  size_t edge_count() const;

  /// Kahn's order, lowest ids first among ready tasks; tasks on a cycle, or
  /// behind one, are missing (the result is shorter than task_count()).
  std::vector<Id> TopologicalOrder() const;

  /// The cycles, each once, as the tasks along it in edge order (the first is
  /// not repeated at the end), rotated to start at its lowest id, sorted.
  /// At most `limit` cycles.
  std::vector<std::vector<Id>> Cycles(size_t limit = 100) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace crucible::plan

#endif  // CRUCIBLE_PLAN_TASK_GRAPH_H_

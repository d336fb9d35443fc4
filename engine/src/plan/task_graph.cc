#include "plan/task_graph.h"

#include <algorithm>
#include <deque>
#include <set>
#include <utility>

#include <boost/graph/compressed_sparse_row_graph.hpp>

namespace crucible::plan {

struct TaskGraph::Impl {
  using Graph = boost::compressed_sparse_row_graph<boost::directedS, boost::no_property, boost::no_property,
                                                   boost::no_property, Id, Id>;
  Impl(size_t n, const std::vector<Edge>& edges)
      : graph(boost::edges_are_unsorted_multi_pass, edges.begin(), edges.end(), n), edge_count(edges.size()) {}
  Graph graph;
  size_t edge_count;
};

TaskGraph::TaskGraph(size_t task_count, const std::vector<Edge>& edges)
    : impl_(std::make_unique<Impl>(task_count, edges)) {}

TaskGraph::~TaskGraph() = default;
TaskGraph::TaskGraph(TaskGraph&&) noexcept = default;
TaskGraph& TaskGraph::operator=(TaskGraph&&) noexcept = default;

size_t TaskGraph::task_count() const { return boost::num_vertices(impl_->graph); }

size_t TaskGraph::edge_count() const { return impl_->edge_count; }

std::vector<TaskGraph::Id> TaskGraph::TopologicalOrder() const {
  const Impl::Graph& g = impl_->graph;
  const size_t n = boost::num_vertices(g);
  std::vector<uint32_t> in_degree(n, 0);
  for (size_t v = 0; v < n; ++v) {
    for (auto [e, end] = boost::out_edges(static_cast<Id>(v), g); e != end; ++e) ++in_degree[boost::target(*e, g)];
  }
  std::vector<Id> order;
  order.reserve(n);
  for (size_t v = 0; v < n; ++v) {
    if (in_degree[v] == 0) order.push_back(static_cast<Id>(v));
  }
  // `order` doubles as the FIFO queue: everything before `head` is placed.
  for (size_t head = 0; head < order.size(); ++head) {
    for (auto [e, end] = boost::out_edges(order[head], g); e != end; ++e) {
      size_t t = boost::target(*e, g);
      if (--in_degree[t] == 0) order.push_back(static_cast<Id>(t));
    }
  }
  return order;
}

std::vector<std::vector<TaskGraph::Id>> TaskGraph::Cycles(size_t limit) const {
  const Impl::Graph& g = impl_->graph;
  const size_t n = boost::num_vertices(g);
  // Only tasks Kahn could not place can lie on a cycle.
  std::vector<char> candidate(n, 1);
  for (Id v : TopologicalOrder()) candidate[v] = 0;

  enum : char { kWhite, kGray, kBlack };
  std::vector<char> color(n, kWhite);
  std::set<std::vector<Id>> found;
  using OutIter = Impl::Graph::out_edge_iterator;
  struct Frame {
    Id vertex;
    OutIter next, end;
  };
  std::vector<Frame> stack;
  for (size_t root = 0; root < n && found.size() < limit; ++root) {
    if (!candidate[root] || color[root] != kWhite) continue;
    auto [b, e] = boost::out_edges(static_cast<Id>(root), g);
    stack.push_back(Frame{static_cast<Id>(root), b, e});
    color[root] = kGray;
    while (!stack.empty()) {
      Frame& top = stack.back();
      if (top.next == top.end) {
        color[top.vertex] = kBlack;
        stack.pop_back();
        continue;
      }
      Id t = static_cast<Id>(boost::target(*top.next, g));
      ++top.next;
      if (!candidate[t]) continue;
      if (color[t] == kGray) {
        // A back edge: the cycle is the stack from t to the top.
        std::vector<Id> cycle;
        size_t i = stack.size();
        while (i > 0 && stack[i - 1].vertex != t) --i;
        for (size_t j = i - 1; j < stack.size(); ++j) cycle.push_back(stack[j].vertex);
        std::rotate(cycle.begin(), std::min_element(cycle.begin(), cycle.end()), cycle.end());
        if (found.size() < limit) found.insert(std::move(cycle));
      } else if (color[t] == kWhite) {
        color[t] = kGray;
        auto [tb, te] = boost::out_edges(t, g);
        stack.push_back(Frame{t, tb, te});
      }
    }
  }
  return {found.begin(), found.end()};
}

}  // namespace crucible::plan

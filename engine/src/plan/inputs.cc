#include "plan/inputs.h"

#include <fnmatch.h>

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

namespace crucible::plan {

namespace fs = std::filesystem;

namespace {

bool HasWildcard(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

bool Inside(const std::string& root, const std::string& path) {
  return path == root || (path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
                          (root.back() == '/' || path[root.size()] == '/'));
}

std::string Join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "/" + b; }

/// Collects files of one matched path: a file, or a directory copied recursively.
class Collector {
 public:
  Collector(std::string root, std::string pattern) : root_(std::move(root)), pattern_(std::move(pattern)) {}

  /// `abs` is root_ + "/" + `rel` as found (not yet resolved).
  Status Add(const fs::path& abs, const std::string& rel) {
    std::error_code ec;
    fs::path real = fs::canonical(abs, ec);
    if (ec) return MakeError(ErrorCode::kInvalidArgument, About(rel) + "cannot be resolved: " + ec.message());
    if (!Inside(root_, real.string())) {
      return MakeError(ErrorCode::kInvalidArgument,
                       About(rel) + "leaves the workflow's directory (it resolves to \"" + real.string() + "\")");
    }
    fs::file_status st = fs::status(real, ec);
    if (ec) return MakeError(ErrorCode::kInvalidArgument, About(rel) + "cannot be read: " + ec.message());
    if (fs::is_regular_file(st)) {
      files_.push_back(Input{real.string(), rel});
      return Ok{};
    }
    if (!fs::is_directory(st)) {
      return MakeError(ErrorCode::kInvalidArgument, About(rel) + "is neither a file nor a directory");
    }
    if (fs::is_symlink(fs::symlink_status(abs, ec))) {
      return MakeError(ErrorCode::kInvalidArgument, About(rel) + "is a symlink to a directory, which is not copied");
    }
    fs::recursive_directory_iterator it(real, fs::directory_options::none, ec);
    if (ec) return MakeError(ErrorCode::kInvalidArgument, About(rel) + "cannot be read: " + ec.message());
    for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      const fs::directory_entry& entry = *it;
      std::string sub = Join(rel, entry.path().lexically_relative(real).string());
      fs::file_status link = entry.symlink_status(ec);
      if (ec) break;
      if (fs::is_directory(link)) continue;
      if (fs::is_symlink(link)) {
        Status s = Add(entry.path(), sub);
        if (!s.ok()) return s;
        continue;
      }
      if (fs::is_regular_file(link)) files_.push_back(Input{entry.path().string(), sub});
    }
    if (ec) return MakeError(ErrorCode::kInvalidArgument, About(rel) + "cannot be read: " + ec.message());
    return Ok{};
  }

  std::vector<Input> Take() {
    std::sort(files_.begin(), files_.end(), [](const Input& a, const Input& b) { return a.dest < b.dest; });
    files_.erase(std::unique(files_.begin(), files_.end(), [](const Input& a, const Input& b) { return a.dest == b.dest; }),
                 files_.end());
    return std::move(files_);
  }

 private:
  /// The start of a message about `rel`: nothing when it is the pattern itself.
  std::string About(const std::string& rel) const {
    return rel == pattern_ ? std::string() : "reaches \"" + rel + "\", which ";
  }

  std::string root_;
  std::string pattern_;
  std::vector<Input> files_;
};

}  // namespace

Result<std::vector<Input>> ExpandInput(const std::string& root_in, const std::string& pattern) {
  if (pattern.empty()) return MakeError(ErrorCode::kInvalidArgument, "is empty");
  if (pattern.front() == '/') return MakeError(ErrorCode::kInvalidArgument, "is an absolute path");
  std::vector<std::string> comps;
  size_t start = 0;
  while (start <= pattern.size()) {
    size_t slash = pattern.find('/', start);
    if (slash == std::string::npos) slash = pattern.size();
    std::string c = pattern.substr(start, slash - start);
    if (c == "..") return MakeError(ErrorCode::kInvalidArgument, "leaves the workflow's directory");
    if (!c.empty() && c != ".") comps.push_back(std::move(c));
    start = slash + 1;
  }
  std::error_code ec;
  std::string root = fs::weakly_canonical(root_in, ec).string();
  if (ec) root = root_in;
  std::string normalized;
  for (const std::string& c : comps) normalized = Join(normalized, c);
  Collector collector(root, normalized);
  if (comps.empty()) return MakeError(ErrorCode::kInvalidArgument, "names the workflow's directory itself");

  bool wild = false;
  for (const std::string& c : comps) wild = wild || HasWildcard(c);
  if (!wild) {
    const std::string& rel = normalized;
    fs::path abs = fs::path(root) / rel;
    if (!fs::exists(fs::symlink_status(abs, ec))) return MakeError(ErrorCode::kInvalidArgument, "matches no file");
    Status s = collector.Add(abs, rel);
    if (!s.ok()) return s.error();
    return collector.Take();
  }

  // A worklist instead of recursion: (directory relative to root, next component).
  struct Work {
    std::string rel;
    size_t index;
  };
  std::vector<Work> work{{"", 0}};
  std::vector<std::pair<fs::path, std::string>> matched;
  while (!work.empty()) {
    Work w = std::move(work.back());
    work.pop_back();
    fs::path dir = w.rel.empty() ? fs::path(root) : fs::path(root) / w.rel;
    if (w.index == comps.size()) {
      matched.emplace_back(dir, w.rel);
      continue;
    }
    const std::string& comp = comps[w.index];
    bool last = w.index + 1 == comps.size();
    if (comp == "**") {
      work.push_back(Work{w.rel, w.index + 1});  // zero directories
      fs::directory_iterator it(dir, ec);
      if (ec) continue;
      for (; it != fs::directory_iterator(); it.increment(ec)) {
        if (ec) break;
        std::string name = it->path().filename().string();
        if (name.front() == '.') continue;
        fs::file_status link = it->symlink_status(ec);
        if (!ec && fs::is_directory(link)) work.push_back(Work{Join(w.rel, name), w.index});
      }
      continue;
    }
    if (!HasWildcard(comp)) {
      fs::path p = dir / comp;
      if (!fs::exists(fs::symlink_status(p, ec))) continue;
      if (last) {
        matched.emplace_back(p, Join(w.rel, comp));
      } else if (fs::is_directory(fs::status(p, ec))) {
        work.push_back(Work{Join(w.rel, comp), w.index + 1});
      }
      continue;
    }
    fs::directory_iterator it(dir, ec);
    if (ec) continue;
    for (; it != fs::directory_iterator(); it.increment(ec)) {
      if (ec) break;
      std::string name = it->path().filename().string();
      if (fnmatch(comp.c_str(), name.c_str(), FNM_PERIOD) != 0) continue;
      if (last) {
        matched.emplace_back(it->path(), Join(w.rel, name));
      } else if (fs::is_directory(it->status(ec))) {
        work.push_back(Work{Join(w.rel, name), w.index + 1});
      }
    }
  }
  // A pattern ending in `**` matches directories; only their files count, through Add.
  for (const auto& [abs, rel] : matched) {
    if (rel.empty()) continue;  // `**` matching the root itself adds nothing new
    Status s = collector.Add(abs, rel);
    if (!s.ok()) return s.error();
  }
  std::vector<Input> files = collector.Take();
  if (files.empty()) return MakeError(ErrorCode::kInvalidArgument, "matches no file");
  return files;
}

}  // namespace crucible::plan

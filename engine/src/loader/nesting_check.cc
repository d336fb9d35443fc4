#include "loader/nesting_check.h"

#include <cstddef>
#include <vector>

namespace crucible::loader {

namespace {

/// A linear scanner over the text that tracks line and column (in code points, like toml++).
class NestingScanner {
 public:
  NestingScanner(std::string_view text, int max_depth) : text_(text), max_depth_(max_depth) {}

  std::optional<SourcePos> Run() {
    StartLine();
    while (i_ < text_.size()) {
      char c = text_[i_];
      if (c == '\n') {
        Advance();
        if (stack_.empty()) StartLine();
        continue;
      }
      if (c == '#') {
        while (i_ < text_.size() && text_[i_] != '\n') Advance();
        continue;
      }
      if (c == '"' || c == '\'') {
        if (in_key_) BeginKeySegment();
        SkipString();
        continue;
      }
      if (in_header_) {
        if (c == ']') {
          in_header_ = false;
          in_key_ = false;
          header_depth_ = key_segments_;
        } else if (c == '.') {
          if (!AddKeySegment()) return violation_;
        } else if (c != ' ' && c != '\t' && c != '[') {
          BeginKeySegment();
        }
        Advance();
        continue;
      }
      if (in_key_) {
        if (c == '=') {
          in_key_ = false;
          value_depth_ = KeyBase() + key_segments_;
        } else if (c == '.') {
          if (!AddKeySegment()) return violation_;
        } else if (c == '[' && stack_.empty() && key_segments_ == 0) {
          // A table header `[a.b]` or `[[a.b]]` at the start of a line.
          in_header_ = true;
          header_depth_ = 0;
          if (i_ + 1 < text_.size() && text_[i_ + 1] == '[') Advance();
        } else if (c == '}' && !stack_.empty()) {
          Close();
        } else if (c != ' ' && c != '\t' && c != '\r' && c != ',') {
          BeginKeySegment();
        }
        Advance();
        continue;
      }
      switch (c) {
        case '[':
        case '{':
          if (!Open(c)) return violation_;
          break;
        case ']':
        case '}':
          Close();
          break;
        case ',':
          if (!stack_.empty() && stack_.back().kind == '{') StartKey(stack_.back().depth);
          break;
        default:
          break;
      }
      Advance();
    }
    return std::nullopt;
  }

 private:
  /// An open array or inline table and its depth.
  struct Frame {
    char kind;
    int depth;
  };

  void Advance() {
    unsigned char c = static_cast<unsigned char>(text_[i_]);
    ++i_;
    if (c == '\n') {
      ++line_;
      column_ = 1;
    } else if ((c & 0xC0) != 0x80) {
      ++column_;
    }
  }

  SourcePos Here() const { return SourcePos{line_, column_}; }

  /// A new line at the top level: a key or a header may start.
  void StartLine() { StartKey(header_depth_); }

  void StartKey(int base) {
    in_key_ = true;
    key_base_ = base;
    key_segments_ = 0;
  }

  int KeyBase() const { return key_base_; }

  void BeginKeySegment() {
    if (key_segments_ == 0) key_segments_ = 1;
  }

  bool AddKeySegment() {
    BeginKeySegment();
    ++key_segments_;
    int base = in_header_ ? 0 : KeyBase();
    if (base + key_segments_ > max_depth_) {
      violation_ = Here();
      return false;
    }
    return true;
  }

  bool Open(char kind) {
    int depth = (stack_.empty() || stack_.back().kind == '{' ? value_depth_ : stack_.back().depth) + 1;
    if (depth > max_depth_) {
      violation_ = Here();
      return false;
    }
    stack_.push_back(Frame{kind, depth});
    if (kind == '{') StartKey(depth);
    return true;
  }

  void Close() {
    if (stack_.empty()) return;
    stack_.pop_back();
    in_key_ = false;
    if (!stack_.empty() && stack_.back().kind == '[') value_depth_ = stack_.back().depth;
  }

  /// Skips a basic, literal or multi-line string starting at the current quote.
  void SkipString() {
    char quote = text_[i_];
    bool multi = i_ + 2 < text_.size() && text_[i_ + 1] == quote && text_[i_ + 2] == quote;
    if (multi) {
      Advance();
      Advance();
      Advance();
      while (i_ < text_.size()) {
        if (quote == '"' && text_[i_] == '\\') {
          Advance();
          if (i_ < text_.size()) Advance();
          continue;
        }
        if (text_[i_] == quote && i_ + 2 < text_.size() && text_[i_ + 1] == quote &&
            text_[i_ + 2] == quote) {
          Advance();
          Advance();
          Advance();
          // Up to two more quotes may belong to the content (`""""` ends with a quote).
          while (i_ < text_.size() && text_[i_] == quote) Advance();
          return;
        }
        Advance();
      }
      return;
    }
    Advance();
    while (i_ < text_.size() && text_[i_] != '\n') {
      char c = text_[i_];
      if (quote == '"' && c == '\\') {
        Advance();
        if (i_ < text_.size() && text_[i_] != '\n') Advance();
        continue;
      }
      Advance();
      if (c == quote) return;
    }
  }

  std::string_view text_;
  int max_depth_;
  size_t i_ = 0;
  int line_ = 1;
  int column_ = 1;
  std::vector<Frame> stack_;
  bool in_key_ = false;
  bool in_header_ = false;
  int key_base_ = 0;
  int key_segments_ = 0;
  int header_depth_ = 0;
  int value_depth_ = 0;
  std::optional<SourcePos> violation_;
};

}  // namespace

std::optional<SourcePos> FindExcessiveNesting(std::string_view text, int max_depth) {
  return NestingScanner(text, max_depth).Run();
}

}  // namespace crucible::loader

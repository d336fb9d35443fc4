#include "scheduler/step_io.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "common/sha256.h"

namespace crucible::scheduler {

namespace {

bool IsKeyStart(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
bool IsKeyChar(char c) { return IsKeyStart(c) || (c >= '0' && c <= '9') || c == '.' || c == '-'; }

bool ValidKey(const std::string& key) {
  if (key.empty() || !IsKeyStart(key[0])) return false;
  return std::all_of(key.begin() + 1, key.end(), IsKeyChar);
}

bool IsSafeChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '=' || c == ',' || c == '-';
}

std::string CapText(uint64_t cap) {
  if (cap % 1024 == 0) return std::to_string(cap / 1024) + " KiB";
  return std::to_string(cap) + " bytes";
}

/// Longest safe name kept whole (file names stop at 255 bytes).
constexpr size_t kMaxSafeName = 160;

}  // namespace

Result<Outputs> ParseOutputs(const std::string& text, uint64_t cap_bytes) {
  if (text.size() > cap_bytes) {
    return MakeError(ErrorCode::kInvalidArgument, "outputs exceed " + CapText(cap_bytes));
  }
  Outputs out;
  std::map<std::string, size_t> index;
  size_t pos = 0;
  int line_no = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    ++line_no;
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) {
      if (end == text.size()) break;
      continue;
    }
    size_t eq = line.find('=');
    if (eq == std::string::npos) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "outputs line " + std::to_string(line_no) + " is not key=value: \"" + line.substr(0, 80) + "\"");
    }
    std::string key = line.substr(0, eq);
    if (!ValidKey(key)) {
      return MakeError(ErrorCode::kInvalidArgument, "outputs line " + std::to_string(line_no) + ": bad key \"" +
                                                        key.substr(0, 80) + "\" (want [A-Za-z_][A-Za-z0-9_.-]*)");
    }
    std::string value = line.substr(eq + 1);
    auto it = index.find(key);
    if (it != index.end()) {
      out[it->second].second = std::move(value);
    } else {
      index.emplace(key, out.size());
      out.emplace_back(std::move(key), std::move(value));
    }
    if (end == text.size()) break;
  }
  return out;
}

std::string SafeName(const std::string& instance_id) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(instance_id.size() + 8);
  for (char ch : instance_id) {
    if (IsSafeChar(ch)) {
      out.push_back(ch);
    } else {
      auto c = static_cast<unsigned char>(ch);
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  if (out.empty() || out == "." || out == "..") out = "%" + out;
  if (out.size() > kMaxSafeName) {
    // '~' never appears in an encoded name, so shortened names stay distinct from whole ones.
    out = out.substr(0, kMaxSafeName - 17) + "~" + Sha256Hex(instance_id).substr(0, 16);
  }
  return out;
}

bool MaskSecrets(std::string& text, const std::vector<std::string>& secrets) {
  std::vector<std::string> masked;
  for (const auto& s : secrets) {
    if (s.size() >= kMinMaskedLength) masked.push_back(s);
  }
  // Longest first, so a secret containing another is masked whole.
  std::sort(masked.begin(), masked.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
  bool changed = false;
  for (const auto& secret : masked) {
    std::string next;
    size_t pos = 0;
    for (;;) {
      size_t hit = text.find(secret, pos);
      if (hit == std::string::npos) break;
      next.append(text, pos, hit - pos);
      next.append("***");
      pos = hit + secret.size();
      changed = true;
    }
    if (pos == 0) continue;
    next.append(text, pos, std::string::npos);
    text = std::move(next);
  }
  return changed;
}

Status MaskSecretsInFile(const std::string& path, const std::vector<std::string>& secrets) {
  if (std::none_of(secrets.begin(), secrets.end(), [](const auto& s) { return s.size() >= kMinMaskedLength; })) {
    return Ok{};
  }
  std::string text;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Ok{};
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  if (!MaskSecrets(text, secrets)) return Ok{};
  std::string tmp = path + ".masking";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      return MakeError(ErrorCode::kIo, "cannot write " + tmp);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    return MakeError(ErrorCode::kIo, "cannot replace " + path + ": " + std::strerror(err));
  }
  return Ok{};
}

}  // namespace crucible::scheduler

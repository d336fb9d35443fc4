// DockerApi: libcurl over the Docker socket. See docker_api.h.
#include "docker_api.h"

#include <curl/curl.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "crucible/backend_sdk.hpp"

namespace crucible::plugins::compose {
namespace {

size_t AppendBody(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

/// libcurl's global state, set up once before any handle.
void GlobalInit() {
  static const bool done = [] {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return true;
  }();
  (void)done;
}

}  // namespace

std::string DockerSocketFromEnv() {
  const char* host = std::getenv("DOCKER_HOST");
  if (host == nullptr || *host == '\0') return "/var/run/docker.sock";
  std::string h = host;
  if (h.rfind("unix://", 0) == 0) return h.substr(7);
  throw std::runtime_error("DOCKER_HOST=" + h + " is not a unix:// socket; the compose backend reaches Docker only through its unix socket");
}

DockerApi::DockerApi(std::string socket_path) : socket_path_(std::move(socket_path)) {
  GlobalInit();
  curl_ = curl_easy_init();
  if (curl_ == nullptr) throw std::runtime_error("curl_easy_init failed");
}

DockerApi::~DockerApi() { curl_easy_cleanup(static_cast<CURL*>(curl_)); }

HttpResponse DockerApi::Request(const std::string& method, const std::string& path, const std::string& body,
                                long timeout_ms) {
  CURL* c = static_cast<CURL*>(curl_);
  curl_easy_reset(c);
  HttpResponse r;
  std::string url = std::string("http://docker") + kDockerApiPrefix + path;
  curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, socket_path_.c_str());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &AppendBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  struct curl_slist* headers = nullptr;
  if (method == "POST" || method == "PUT") {
    headers = curl_slist_append(headers, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  } else if (method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  }
  headers = curl_slist_append(headers, "Expect:");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  CURLcode rc = curl_easy_perform(c);
  curl_slist_free_all(headers);
  if (rc != CURLE_OK) {
    throw sdk::Unavailable("docker " + method + " " + path + " via " + socket_path_ + ": " + curl_easy_strerror(rc));
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  return r;
}

std::unique_ptr<RawStream> DockerApi::Hijack(const std::string& path, const std::string& body) {
  GlobalInit();
  std::unique_ptr<RawStream> s(new RawStream());
  CURL* c = curl_easy_init();
  if (c == nullptr) throw std::runtime_error("curl_easy_init failed");
  s->curl_ = c;
  curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, socket_path_.c_str());
  curl_easy_setopt(c, CURLOPT_URL, "http://docker/");
  curl_easy_setopt(c, CURLOPT_CONNECT_ONLY, 1L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) throw sdk::Unavailable("docker connect " + socket_path_ + ": " + curl_easy_strerror(rc));
  curl_socket_t fd = CURL_SOCKET_BAD;
  curl_easy_getinfo(c, CURLINFO_ACTIVESOCKET, &fd);
  if (fd == CURL_SOCKET_BAD) throw sdk::Unavailable("docker connect " + socket_path_ + ": no socket");
  s->fd_ = static_cast<int>(fd);
  std::string request = "POST " + std::string(kDockerApiPrefix) + path +
                        " HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nConnection: Upgrade\r\n"
                        "Upgrade: tcp\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n\r\n" + body;
  if (!s->SendAll(request)) throw sdk::Unavailable("docker POST " + path + ": send failed");
  // The response headers, then the raw stream.
  std::string head;
  char buf[4096];
  for (;;) {
    size_t end = head.find("\r\n\r\n");
    if (end != std::string::npos) {
      s->pending_ = head.substr(end + 4);
      head.resize(end);
      break;
    }
    ssize_t n = s->Recv(buf, sizeof buf);
    if (n == -1) {
      pollfd p{s->fd_, POLLIN, 0};
      ::poll(&p, 1, 30000);
      continue;
    }
    if (n <= 0) throw sdk::Unavailable("docker POST " + path + ": connection closed before the response");
    head.append(buf, static_cast<size_t>(n));
    if (head.size() > 65536) throw sdk::Unavailable("docker POST " + path + ": oversized response headers");
  }
  if (head.rfind("HTTP/1.1 101", 0) != 0 && head.rfind("HTTP/1.0 101", 0) != 0 &&
      head.rfind("HTTP/1.1 200", 0) != 0) {
    std::string status_line = head.substr(0, head.find("\r\n"));
    throw sdk::Unavailable("docker POST " + path + ": " + status_line + " " + s->pending_.substr(0, 300));
  }
  return s;
}

RawStream::~RawStream() {
  if (curl_ != nullptr) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

bool RawStream::SendAll(const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    size_t sent = 0;
    CURLcode rc = curl_easy_send(static_cast<CURL*>(curl_), data.data() + off, data.size() - off, &sent);
    if (rc == CURLE_AGAIN) {
      pollfd p{fd_, POLLOUT, 0};
      ::poll(&p, 1, 30000);
      continue;
    }
    if (rc != CURLE_OK) return false;
    off += sent;
  }
  return true;
}

void RawStream::CloseWrite() { ::shutdown(fd_, SHUT_WR); }

ssize_t RawStream::Recv(char* buf, size_t cap) {
  if (!pending_.empty()) {
    size_t n = std::min(cap, pending_.size());
    std::memcpy(buf, pending_.data(), n);
    pending_.erase(0, n);
    return static_cast<ssize_t>(n);
  }
  size_t got = 0;
  CURLcode rc = curl_easy_recv(static_cast<CURL*>(curl_), buf, cap, &got);
  if (rc == CURLE_AGAIN) return -1;
  if (rc != CURLE_OK) return -2;
  return static_cast<ssize_t>(got);
}

}  // namespace crucible::plugins::compose

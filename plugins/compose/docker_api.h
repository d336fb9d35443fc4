// DockerApi: a small Docker Engine API client over the engine's unix socket
// (libcurl), and RawStream, a connection hijacked by /exec/{id}/start.
//
// Thread-safety: a DockerApi is used by one thread at a time (it keeps one
// libcurl handle, so its connection is reused); make one per thread.
#ifndef CRUCIBLE_PLUGINS_COMPOSE_DOCKER_API_H_
#define CRUCIBLE_PLUGINS_COMPOSE_DOCKER_API_H_

#include <sys/types.h>

#include <memory>
#include <string>

namespace crucible::plugins::compose {

/// The API version every path is prefixed with (Docker 20.10 and later).
inline constexpr const char* kDockerApiPrefix = "/v1.41";

/// One HTTP response of the Engine API.
struct HttpResponse {
  long status = 0;
  std::string body;
};

/// The socket DOCKER_HOST names (unix://PATH), else /var/run/docker.sock.
/// Throws std::runtime_error for a DOCKER_HOST that is not a unix socket.
std::string DockerSocketFromEnv();

/// A connection the Engine API has hijacked for an exec's raw stream.
class RawStream {
 public:
  ~RawStream();
  RawStream(const RawStream&) = delete;
  RawStream& operator=(const RawStream&) = delete;

  /// The socket, for poll(2).
  int fd() const { return fd_; }
  /// Sends all of data; false when the connection failed.
  bool SendAll(const std::string& data);
  /// Ends our side (the exec's stdin sees EOF).
  void CloseWrite();
  /// Reads what is there: >0 bytes, 0 at the end of the stream, -1 nothing now, -2 an error.
  ssize_t Recv(char* buf, size_t cap);

 private:
  friend class DockerApi;
  RawStream() = default;
  void* curl_ = nullptr;
  int fd_ = -1;
  std::string pending_;  ///< bytes read past the response headers
};

/// Engine API calls over one unix socket.
class DockerApi {
 public:
  explicit DockerApi(std::string socket_path);
  ~DockerApi();
  DockerApi(const DockerApi&) = delete;
  DockerApi& operator=(const DockerApi&) = delete;

  /// method PATH (kDockerApiPrefix is added) with a JSON body. Throws
  /// crucible::sdk::Unavailable when the socket cannot be reached.
  HttpResponse Request(const std::string& method, const std::string& path, const std::string& body = "",
                       long timeout_ms = 30000);
  /// POSTs body to PATH asking for the connection upgrade; returns the raw
  /// stream after "101 UPGRADED". Throws sdk::Unavailable on failure.
  std::unique_ptr<RawStream> Hijack(const std::string& path, const std::string& body);

  const std::string& socket_path() const { return socket_path_; }

 private:
  std::string socket_path_;
  void* curl_ = nullptr;
};

}  // namespace crucible::plugins::compose

#endif  // CRUCIBLE_PLUGINS_COMPOSE_DOCKER_API_H_

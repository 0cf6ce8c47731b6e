// The HTTP/1.1 transport (Boost.Beast over Asio, optionally TLS): connections, timeouts and
// limits, nothing about what a request means. A handler gets each request's header first and
// decides whether to read its body (so callers are checked and memory reserved before a byte of
// the body is read), and answers from any thread. The KServe v2 REST door
// (server/kserve/http_door.h) is its handler.
#ifndef ATTNSERVE_SERVER_HTTP_HTTP_SERVER_H_
#define ATTNSERVE_SERVER_HTTP_HTTP_SERVER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "boost/asio/ssl/context.hpp"
#include "boost/beast/http.hpp"

namespace attnserve {

using HttpRequestHead = boost::beast::http::request_header<>;
using HttpResponse = boost::beast::http::response<boost::beast::http::string_body>;

// One request on a connection, from its header to its response.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual const HttpRequestHead& head() const = 0;
  // The body's length (Content-Length; 0 without a body). The server has already refused bodies
  // of unknown length (411) and past its limit (413).
  virtual int64_t content_length() const = 0;
  // "address:port" of the client.
  virtual const std::string& peer() const = 0;
  // Reads the body, at most once, then calls `done` on an I/O thread: the body, or why it did not
  // arrive (DEADLINE_EXCEEDED past the read timeout, UNAVAILABLE when the connection failed; the
  // connection is then closed). Must not be called after Respond.
  virtual void ReadBody(std::function<void(absl::StatusOr<std::string> body)> done) = 0;
  // Sends the response (once; Content-Length set here). Then the connection reads its next
  // request, unless the response, the request or a body left unread ends it. Any thread.
  virtual void Respond(HttpResponse response) = 0;
  // Whether the client closed its connection after its body was read (while it was computed).
  virtual bool client_gone() const = 0;
};

class HttpServer {
 public:
  struct Options {
    std::string address = "0.0.0.0:8000";  // host:port; port 0 picks a free port
    int io_threads = 2;                     // threads reading and writing connections
    int max_connections = 1024;             // past it a new connection is closed at once
    int64_t max_header_bytes = 16 << 10;    // larger: 431
    int64_t max_body_bytes = 64 << 20;      // larger Content-Length: 413, nothing read
    // A request's header (or the next one on an idle connection), its body and a response's
    // write must each complete within this, or the connection is closed.
    std::chrono::milliseconds io_timeout{30000};
    // Called on an I/O thread for each answer the server gives itself (400 malformed, 431, 411,
    // 413), so that it is measured and logged like the handler's; `exchange.head()` may be
    // incomplete for a malformed request. May be null.
    std::function<void(const HttpExchange& exchange, unsigned status)> refused;
    // The TLS context for each new connection (read again per connection, so certificates
    // rotate); null: plaintext.
    std::function<std::shared_ptr<boost::asio::ssl::context>()> tls;
  };
  // Called on an I/O thread once a request's header has been read; must not block.
  using Handler = std::function<void(std::shared_ptr<HttpExchange> exchange)>;

  // Listens on options.address and serves every request through `handler`; UNAVAILABLE when it
  // cannot listen.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(Options options, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;
  // Stops accepting connections; waits until every request already read is answered (or
  // `deadline` passes), then closes every connection and stops the I/O threads. Exchanges handed
  // to the handler must not be used after it returns.
  void Shutdown(std::chrono::system_clock::time_point deadline);

  class State;  // shared with the connections (http_server.cc)

 private:
  explicit HttpServer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_HTTP_HTTP_SERVER_H_

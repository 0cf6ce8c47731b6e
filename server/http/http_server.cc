#include "server/http/http_server.h"

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <limits>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/strand.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/ssl.hpp"

namespace attnserve {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

class HttpServer::State {
 public:
  State(Options options, Handler handler)
      : options(std::move(options)), handler(std::move(handler)), acceptor(io) {}

  const Options options;
  const Handler handler;
  // Before io: destroying io destroys the connections its pending handlers hold, which count
  // themselves out here.
  std::atomic<int> connections{0};
  std::atomic<int> requests_in_progress{0};  // header read, response not yet written
  std::atomic<bool> stopping{false};
  int port = 0;
  net::io_context io;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
};

namespace {

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// A response with a short plain-text body, for what the server refuses itself.
HttpResponse PlainResponse(http::status status, absl::string_view text) {
  HttpResponse response(status, 11);
  response.set(http::field::content_type, "text/plain; charset=utf-8");
  response.body() = std::string(text);
  return response;
}

// One connection: its requests one after another (no pipelining: the next header is read once the
// response is written). Stream is beast::tcp_stream or TlsStream.
template <class Stream>
class Connection final : public HttpExchange,
                         public std::enable_shared_from_this<Connection<Stream>> {
 public:
  Connection(HttpServer::State* state, Stream stream, std::string peer,
             std::shared_ptr<net::ssl::context> tls)
      : state_(state), stream_(std::move(stream)), peer_(std::move(peer)),
        tls_(std::move(tls)) {
    ++state_->connections;
  }
  ~Connection() override { --state_->connections; }

  void Run() {
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (std::is_same_v<Stream, TlsStream>) {
        self->tcp().expires_after(self->state_->options.io_timeout);
        self->stream_.async_handshake(net::ssl::stream_base::server,
                                      [self](beast::error_code error) {
                                        if (!error) self->ReadHeader();
                                      });
      } else {
        self->ReadHeader();
      }
    });
  }

  const HttpRequestHead& head() const override { return parser_->get().base(); }
  int64_t content_length() const override { return content_length_; }
  const std::string& peer() const override { return peer_; }
  bool client_gone() const override { return client_gone_.load(); }

  void ReadBody(std::function<void(absl::StatusOr<std::string>)> done) override {
    net::post(stream_.get_executor(), [self = this->shared_from_this(), done = std::move(done)] {
      self->parser_->body_limit(static_cast<uint64_t>(self->state_->options.max_body_bytes));
      self->tcp().expires_after(self->state_->options.io_timeout);
      http::async_read(self->stream_, self->buffer_, *self->parser_,
                       [self, done](beast::error_code error, size_t) {
                         self->tcp().expires_never();
                         if (error) {
                           self->keep_alive_ = false;
                           done(error == beast::error::timeout
                                    ? absl::DeadlineExceededError(absl::StrCat(
                                          "the request body did not arrive within ",
                                          self->state_->options.io_timeout.count() / 1000.0, " s"))
                                    : absl::UnavailableError(absl::StrCat(
                                          "reading the request body: ", error.message())));
                           return;
                         }
                         self->body_read_ = true;
                         self->WatchClient();
                         done(std::move(self->parser_->get().body()));
                       });
    });
  }

  void Respond(HttpResponse response) override {
    net::post(stream_.get_executor(),
              [self = this->shared_from_this(), response = std::move(response)]() mutable {
                self->Write(std::move(response));
              });
  }

 private:
  beast::tcp_stream& tcp() { return beast::get_lowest_layer(stream_); }

  void ReadHeader() {
    if (state_->stopping.load()) return Close();
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(state_->options.max_header_bytes));
    // The length is checked once the header is read (413 with the numbers), not while reading it.
    // (Not boost::none: Beast 1.74 compares the length with the optional, and none is less.)
    parser_->body_limit(std::numeric_limits<uint64_t>::max());
    body_read_ = false;
    client_gone_ = false;
    tcp().expires_after(state_->options.io_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = this->shared_from_this()](beast::error_code error, size_t) {
                              self->OnHeader(error);
                            });
  }

  void OnHeader(beast::error_code error) {
    tcp().expires_never();
    if (error) {
      // A closed, broken or idle connection ends quietly; a malformed request is told why.
      const bool malformed = error.category() == http::make_error_code(http::error::bad_method)
                                                     .category() &&
                             error != http::error::end_of_stream &&
                             error != http::error::partial_message;
      if (!malformed) return Close();
      keep_alive_ = false;
      ++state_->requests_in_progress;
      return Write(error == http::error::header_limit
                       ? PlainResponse(http::status::request_header_fields_too_large,
                                       "the request header is too large\n")
                       : PlainResponse(http::status::bad_request,
                                       absl::StrCat("malformed HTTP request: ", error.message(),
                                                    "\n")));
    }
    ++state_->requests_in_progress;
    keep_alive_ = parser_->get().keep_alive();
    const auto length = parser_->content_length();
    content_length_ = length.has_value() ? static_cast<int64_t>(*length) : 0;
    if (parser_->chunked()) {
      keep_alive_ = false;
      return Write(PlainResponse(http::status::length_required,
                                 "a request body needs a Content-Length\n"));
    }
    if (content_length_ > state_->options.max_body_bytes) {
      keep_alive_ = false;
      return Write(PlainResponse(
          http::status::payload_too_large,
          absl::StrCat("Content-Length=", content_length_, " is past the limit of ",
                       state_->options.max_body_bytes, " bytes (--max_message_bytes)\n")));
    }
    state_->handler(this->shared_from_this());
  }

  // Until the response is written: notices the client closing its connection (a read of 0 bytes
  // pending on the socket). Data instead (a pipelined request) ends the watch.
  void WatchClient() {
    tcp().socket().async_wait(
        tcp::socket::wait_read, [self = this->shared_from_this()](beast::error_code error) {
          if (error) return;  // cancelled: the response is being written
          char byte;
          const ssize_t peeked = ::recv(self->tcp().socket().native_handle(), &byte, 1,
                                        MSG_PEEK | MSG_DONTWAIT);
          if (peeked == 0 || (peeked < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            self->client_gone_ = true;
          }
        });
  }

  void Write(HttpResponse response) {
    if (responded_) return;  // one response per request
    responded_ = true;
    beast::error_code ignored;
    tcp().socket().cancel(ignored);  // the client watch
    // A body the handler did not read is still on the connection: it cannot carry another request.
    if (content_length_ > 0 && !body_read_) keep_alive_ = false;
    response_.emplace(std::move(response));
    response_->keep_alive(keep_alive_ && !state_->stopping.load());
    response_->prepare_payload();
    tcp().expires_after(state_->options.io_timeout);
    http::async_write(stream_, *response_,
                      [self = this->shared_from_this()](beast::error_code error, size_t) {
                        self->tcp().expires_never();
                        --self->state_->requests_in_progress;
                        const bool again = !error && self->response_->keep_alive();
                        self->response_.reset();
                        self->responded_ = false;
                        if (again) {
                          self->ReadHeader();
                        } else {
                          self->Close();
                        }
                      });
  }

  void Close() {
    beast::error_code ignored;
    tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    tcp().close();
  }

  HttpServer::State* const state_;  // outlives every connection (~HttpServer)
  Stream stream_;
  const std::string peer_;
  const std::shared_ptr<net::ssl::context> tls_;  // kept for the connection's life
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<HttpResponse> response_;
  int64_t content_length_ = 0;
  bool keep_alive_ = true;
  bool body_read_ = false;
  bool responded_ = false;
  std::atomic<bool> client_gone_{false};
};

void Accept(HttpServer::State* state) {
  state->acceptor.async_accept(
      net::make_strand(state->io), [state](beast::error_code error, tcp::socket socket) {
        if (error == net::error::operation_aborted || state->stopping.load()) return;
        if (!error) {
          beast::error_code ignored;
          const tcp::endpoint remote = socket.remote_endpoint(ignored);
          std::string peer = absl::StrCat(remote.address().to_string(ignored), ":", remote.port());
          if (state->connections.load() >= state->options.max_connections) {
            socket.close(ignored);
          } else if (state->options.tls) {
            std::shared_ptr<net::ssl::context> tls = state->options.tls();
            std::make_shared<Connection<TlsStream>>(state, TlsStream(std::move(socket), *tls),
                                                    std::move(peer), tls)
                ->Run();
          } else {
            std::make_shared<Connection<beast::tcp_stream>>(
                state, beast::tcp_stream(std::move(socket)), std::move(peer), nullptr)
                ->Run();
          }
        }
        Accept(state);
      });
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(Options options, Handler handler) {
  const size_t colon = options.address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(options.address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP address \"", options.address, "\" must be host:port"));
  }
  std::string host = options.address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  auto state = std::make_unique<State>(std::move(options), std::move(handler));
  beast::error_code error;
  const net::ip::address ip = net::ip::make_address(host.empty() ? "0.0.0.0" : host, error);
  if (error) {
    return absl::InvalidArgumentError(absl::StrCat("HTTP address \"", state->options.address,
                                                   "\": ", error.message()));
  }
  const tcp::endpoint endpoint(ip, static_cast<uint16_t>(port));
  state->acceptor.open(endpoint.protocol(), error);
  if (!error) state->acceptor.set_option(net::socket_base::reuse_address(true), error);
  if (!error) state->acceptor.bind(endpoint, error);
  if (!error) state->acceptor.listen(net::socket_base::max_listen_connections, error);
  if (error) {
    return absl::UnavailableError(absl::StrCat("cannot listen for HTTP on ",
                                               state->options.address, ": ", error.message()));
  }
  state->port = state->acceptor.local_endpoint(error).port();
  Accept(state.get());
  for (int i = 0; i < std::max(state->options.io_threads, 1); ++i) {
    state->threads.emplace_back([io = &state->io] { io->run(); });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(state)));
}

HttpServer::HttpServer(std::unique_ptr<State> state) : state_(std::move(state)) {}

int HttpServer::port() const { return state_->port; }

void HttpServer::Shutdown(std::chrono::system_clock::time_point deadline) {
  if (state_->threads.empty()) return;
  state_->stopping = true;
  net::post(state_->io, [state = state_.get()] {
    beast::error_code ignored;
    state->acceptor.close(ignored);
  });
  while (state_->requests_in_progress.load() > 0 && std::chrono::system_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  state_->io.stop();
  for (std::thread& thread : state_->threads) thread.join();
  state_->threads.clear();
}

HttpServer::~HttpServer() { Shutdown(std::chrono::system_clock::now()); }

}  // namespace attnserve

#include "server/http/http_server.h"

#include <poll.h>
#include <sys/socket.h>

#include <array>
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
#include "boost/asio/steady_timer.hpp"
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
      : options(std::move(options)), handler(std::move(handler)), acceptor(net::make_strand(io)) {}

  const Options options;
  const Handler handler;
  // Before io: destroying io destroys the connections its pending handlers hold, which count
  // themselves out here.
  std::atomic<int> connections{0};
  std::atomic<int> requests_in_progress{0};  // header read, response not yet written
  std::atomic<bool> stopping{false};
  int port = 0;
  net::io_context io;
  tcp::acceptor acceptor;  // on a strand of its own: accepting and closing never overlap
  std::vector<std::thread> threads;
};

namespace {

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// The most a connection reads at once from a request's body.
constexpr int64_t kBodyReadBytes = 1 << 20;

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
      : state_(state), stream_(std::move(stream)), peer_(std::move(peer)), tls_(std::move(tls)),
        watch_timer_(stream_.get_executor()) {
    ++state_->connections;
  }
  ~Connection() override {
    EndRequest();
    --state_->connections;
  }

  void Run() {
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (std::is_same_v<Stream, TlsStream>) {
        self->ArmTimeout();
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
      // A client that asked to be told before it sends its body is told now.
      // (HTTP/1.0 clients cannot ask for it: RFC 9110 has the server ignore the header there.)
      const auto expect = self->parser_->get().find(http::field::expect);
      if (self->parser_->get().version() >= 11 && expect != self->parser_->get().end() &&
          beast::iequals(expect->value(), "100-continue")) {
        auto proceed = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
        self->ArmTimeout();
        http::async_write(self->stream_, *proceed,
                          [self, done, proceed](beast::error_code error, size_t) {
                            if (error) return self->BodyFailed(error, done);
                            self->ReadBodyBytes(done);
                          });
        return;
      }
      self->ReadBodyBytes(done);
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

  // The next read or write must complete within --request_read_timeout_seconds (0: never).
  void ArmTimeout() {
    if (state_->options.io_timeout.count() > 0) {
      tcp().expires_after(state_->options.io_timeout);
    } else {
      tcp().expires_never();
    }
  }

  // The request read is over (answered, or its connection failed): Shutdown stops waiting for it.
  void EndRequest() {
    if (counted_) --state_->requests_in_progress;
    counted_ = false;
  }

  void ReadHeader() {
    if (state_->stopping.load()) return Close();
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(state_->options.max_header_bytes));
    // The length is checked once the header is read (413 with the numbers), not while reading it.
    // (Not boost::none: Beast 1.74 compares the length with the optional, and none is less.)
    parser_->body_limit(std::numeric_limits<uint64_t>::max());
    body_read_ = false;
    unread_input_ = false;
    content_length_ = 0;
    client_gone_ = false;
    ArmTimeout();
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
      counted_ = true;
      ++state_->requests_in_progress;
      Refused(error == http::error::header_limit ? 431 : 400);
      return Write(error == http::error::header_limit
                       ? PlainResponse(http::status::request_header_fields_too_large,
                                       "the request header is too large\n")
                       : PlainResponse(http::status::bad_request,
                                       absl::StrCat("malformed HTTP request: ", error.message(),
                                                    "\n")));
    }
    counted_ = true;
    ++state_->requests_in_progress;
    keep_alive_ = parser_->get().keep_alive();
    if (parser_->get().find(http::field::transfer_encoding) != parser_->get().end()) {
      keep_alive_ = false;
      unread_input_ = true;  // whatever follows is not read: linger after answering
      Refused(411);
      return Write(PlainResponse(http::status::length_required,
                                 "a request body needs a Content-Length (no Transfer-Encoding)\n"));
    }
    // Compared unsigned: Beast takes any 64-bit length.
    const uint64_t length = parser_->content_length().value_or(0);
    if (length > static_cast<uint64_t>(state_->options.max_body_bytes)) {
      keep_alive_ = false;
      unread_input_ = true;
      Refused(413);
      return Write(PlainResponse(
          http::status::payload_too_large,
          absl::StrCat("Content-Length=", length, " is past the limit of ",
                       state_->options.max_body_bytes, " bytes (--max_message_bytes)\n")));
    }
    content_length_ = static_cast<int64_t>(length);
    state_->handler(this->shared_from_this());
  }

  // An answer the server gives itself, before any handler sees the request.
  void Refused(unsigned status) {
    if (state_->options.refused) state_->options.refused(*this, status);
  }

  void ReadBodyBytes(std::function<void(absl::StatusOr<std::string>)> done) {
    // Beast reads as much as the buffer has room for, at least 512 bytes: without room a large
    // body would take a read (and a trip through the strand) per 512 bytes.
    buffer_.reserve(static_cast<size_t>(std::min<int64_t>(content_length_, kBodyReadBytes)));
    ArmTimeout();
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this(), done](beast::error_code error, size_t) {
                       self->tcp().expires_never();
                       if (error) return self->BodyFailed(error, done);
                       self->body_read_ = true;
                       self->WatchClient();
                       done(std::move(self->parser_->get().body()));
                     });
  }

  // The body did not arrive: nobody is answered, the connection closes.
  void BodyFailed(beast::error_code error,
                  const std::function<void(absl::StatusOr<std::string>)>& done) {
    tcp().expires_never();
    keep_alive_ = false;
    EndRequest();
    Close();
    done(error == beast::error::timeout
             ? absl::DeadlineExceededError(absl::StrCat("the request body did not arrive within ",
                                                        state_->options.io_timeout.count() / 1000.0,
                                                        " s"))
             : absl::UnavailableError(absl::StrCat("reading the request body: ", error.message())));
  }

  // Until the response is written: notices the client closing its connection. Readable with
  // nothing to read is a close; data (a TLS close_notify, or a pipelined request) leaves the
  // kernel's word: the peer shut its side (POLLRDHUP), checked again every 100 ms.
  void WatchClient() {
    tcp().socket().async_wait(tcp::socket::wait_read,
                              [self = this->shared_from_this()](beast::error_code error) {
                                if (error || self->responded_) return;  // cancelled: answered
                                if (!self->CheckPeerClosed()) self->PollPeerClosed();
                              });
  }
  bool CheckPeerClosed() {
    const int fd = tcp().socket().native_handle();
    char byte;
    const ssize_t peeked = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    pollfd hangup{fd, POLLRDHUP, 0};
    if (peeked == 0 || (peeked < 0 && errno != EAGAIN && errno != EWOULDBLOCK) ||
        (::poll(&hangup, 1, 0) == 1 && (hangup.revents & (POLLRDHUP | POLLHUP | POLLERR)))) {
      client_gone_ = true;
      return true;
    }
    return false;
  }
  void PollPeerClosed() {
    watch_timer_.expires_after(std::chrono::milliseconds(100));
    watch_timer_.async_wait([self = this->shared_from_this()](beast::error_code error) {
      if (error || self->responded_) return;
      if (!self->CheckPeerClosed()) self->PollPeerClosed();
    });
  }

  void Write(HttpResponse response) {
    if (responded_) return;  // one response per request
    responded_ = true;
    beast::error_code ignored;
    tcp().socket().cancel(ignored);  // the client watch
    watch_timer_.cancel();
    // A body the handler did not read is still on the connection: it cannot carry another request.
    if (content_length_ > 0 && !body_read_) unread_input_ = true;
    if (unread_input_) keep_alive_ = false;
    response_.emplace(std::move(response));
    response_->keep_alive(keep_alive_ && !state_->stopping.load());
    response_->prepare_payload();
    ArmTimeout();
    http::async_write(stream_, *response_,
                      [self = this->shared_from_this()](beast::error_code error, size_t) {
                        self->tcp().expires_never();
                        self->EndRequest();
                        const bool again = !error && self->response_->keep_alive();
                        const bool unread_body = self->unread_input_;
                        self->response_.reset();
                        self->responded_ = false;
                        self->buffer_.shrink_to_fit();  // an idle connection keeps no body room
                        if (again) return self->ReadHeader();
                        if (!error && unread_body) return self->Linger();
                        self->Close();
                      });
  }

  // After a response sent before the request's body was read: the sending side is shut, and what
  // the client still sends is read and dropped (at most 1 MiB, 2 s), so the response is not lost
  // to a reset caused by unread data when the socket closes.
  void Linger() {
    beast::error_code ignored;
    tcp().socket().shutdown(tcp::socket::shutdown_send, ignored);
    lingered_ = 0;
    tcp().expires_after(std::chrono::seconds(2));
    DrainUnread();
  }
  void DrainUnread() {
    tcp().async_read_some(net::buffer(discard_),
                          [self = this->shared_from_this()](beast::error_code error, size_t n) {
                            self->lingered_ += n;
                            if (error || self->lingered_ > (1 << 20)) return self->Close();
                            self->DrainUnread();
                          });
  }

  void Close() {
    beast::error_code ignored;
    watch_timer_.cancel();
    tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    tcp().close();
  }

  HttpServer::State* const state_;  // outlives every connection (~HttpServer)
  Stream stream_;
  const std::string peer_;
  const std::shared_ptr<net::ssl::context> tls_;  // kept for the connection's life
  net::steady_timer watch_timer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<HttpResponse> response_;
  int64_t content_length_ = 0;
  bool keep_alive_ = true;
  bool body_read_ = false;
  bool responded_ = false;
  bool counted_ = false;  // in requests_in_progress
  bool unread_input_ = false;  // the client may still be sending what was not read
  size_t lingered_ = 0;
  std::array<char, 16384> discard_;
  std::atomic<bool> client_gone_{false};
};

void Accept(HttpServer::State* state) {
  state->acceptor.async_accept(
      net::make_strand(state->io), [state](beast::error_code error, tcp::socket socket) {
        if (error == net::error::operation_aborted || state->stopping.load()) return;
        if (error) {
          // Out of descriptors, say: try again shortly rather than spin.
          auto retry = std::make_shared<net::steady_timer>(state->acceptor.get_executor(),
                                                           std::chrono::milliseconds(100));
          retry->async_wait([state, retry](beast::error_code) { Accept(state); });
          return;
        }
        beast::error_code ignored;
        // Answers go out whole at once: no waiting for the client's ACK of the previous segment
        // (Nagle) before the last, short one.
        socket.set_option(tcp::no_delay(true), ignored);
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
  net::post(state_->acceptor.get_executor(), [state = state_.get()] {
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

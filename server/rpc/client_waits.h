// Calls that wait for their client's next message: at most max_streams of them, and one that
// waits longer than idle_timeout is ended (its `end`, once, from the reaper thread), so that idle
// or slow clients cannot hold what their calls hold for ever. The open Decode streams are one
// set (--max_decode_streams, --decode_idle_timeout_seconds); the unary calls reading their
// message another (--request_read_timeout_seconds).
#ifndef ATTNSERVE_SERVER_RPC_CLIENT_WAITS_H_
#define ATTNSERVE_SERVER_RPC_CLIENT_WAITS_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "absl/functional/function_ref.h"

namespace attnserve {

class ClientWaits {
 public:
  struct Options {
    int64_t max_streams = 1024;                       // --max_decode_streams
    std::chrono::milliseconds idle_timeout{300'000};  // --decode_idle_timeout_seconds; 0: never
  };

  explicit ClientWaits(Options options);
  // Stops the reaper; every stream must be closed by then.
  ~ClientWaits();
  ClientWaits(const ClientWaits&) = delete;
  ClientWaits& operator=(const ClientWaits&) = delete;

  // Registers `stream` (any unique key), busy; false when max_streams are open. `end` finishes
  // the stream: the reaper calls it, outside its lock, after marking the stream ended.
  bool Open(const void* stream, std::function<void()> end);
  // Unregisters `stream`.
  void Close(const void* stream);
  // The stream waits for its client's next message from now on: the number of that wait
  // (unique among all streams' waits), for ReadStarted.
  int64_t Waiting(const void* stream);
  // The read of `wait` is started: only from now on may the reaper end the stream (a stream
  // finished before its read started would start it after its end).
  void ReadStarted(const void* stream, int64_t wait);
  // The two around a read: Waiting, then `start_read` (which hands the read to gRPC), then
  // ReadStarted. After start_read the stream may be gone (its read answered, the stream
  // finished): only the registry is told, which knows the wait by its number.
  void StartTimedRead(const void* stream, absl::FunctionRef<void()> start_read);
  // The stream has its message: false when the reaper ended it first (the stream must then do
  // nothing more: its `end` finishes it).
  bool Busy(const void* stream);

  int64_t open() const;
  const Options& options() const { return options_; }

 private:
  struct Stream {
    std::function<void()> end;
    bool waiting = false;
    int64_t wait = 0;           // the number of its current (or last) wait
    bool read_started = false;  // that wait's read
    bool ended = false;
    std::chrono::steady_clock::time_point waiting_since{};
  };

  // Every idle_timeout / 8 (10 ms to 1 s): ends the streams waiting past idle_timeout.
  void Reap();

  const Options options_;
  mutable std::mutex mutex_;
  std::condition_variable stop_;
  bool stopping_ = false;
  std::unordered_map<const void*, Stream> streams_;
  int64_t waits_ = 0;  // numbers every wait of every stream (a key may be reused by a new one)
  std::thread reaper_;  // last: it starts when the members above exist
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_RPC_CLIENT_WAITS_H_

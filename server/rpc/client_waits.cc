#include "server/rpc/client_waits.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace attnserve {

ClientWaits::ClientWaits(Options options) : options_(options) {
  if (options_.idle_timeout.count() > 0) reaper_ = std::thread([this] { Reap(); });
}

ClientWaits::~ClientWaits() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  stop_.notify_all();
  if (reaper_.joinable()) reaper_.join();
}

bool ClientWaits::Open(const void* stream, std::function<void()> end) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (static_cast<int64_t>(streams_.size()) >= options_.max_streams) return false;
  streams_[stream] = Stream{std::move(end)};
  return true;
}

void ClientWaits::Close(const void* stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  streams_.erase(stream);
}

int64_t ClientWaits::Waiting(const void* stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  Stream& entry = streams_.at(stream);
  entry.waiting = true;
  entry.read_started = false;
  entry.waiting_since = std::chrono::steady_clock::now();
  entry.wait = ++waits_;
  return entry.wait;
}

void ClientWaits::ReadStarted(const void* stream, int64_t wait) {
  std::lock_guard<std::mutex> lock(mutex_);
  // Gone, or waiting again (a later wait's number): this read has already been answered.
  const auto entry = streams_.find(stream);
  if (entry != streams_.end() && entry->second.wait == wait) entry->second.read_started = true;
}

void ClientWaits::StartTimedRead(const void* stream, absl::FunctionRef<void()> start_read) {
  const int64_t wait = Waiting(stream);
  start_read();
  ReadStarted(stream, wait);
}

bool ClientWaits::Busy(const void* stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  Stream& entry = streams_.at(stream);
  entry.waiting = false;
  return !entry.ended;
}

int64_t ClientWaits::open() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(streams_.size());
}

void ClientWaits::Reap() {
  using std::chrono::milliseconds;
  const milliseconds period =
      std::clamp(options_.idle_timeout / 8, milliseconds(10), milliseconds(1000));
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_.wait_for(lock, period, [this] { return stopping_; })) {
    const auto idle_since = std::chrono::steady_clock::now() - options_.idle_timeout;
    std::vector<std::function<void()>> ends;
    for (auto& [key, stream] : streams_) {
      if (stream.waiting && stream.read_started && !stream.ended &&
          stream.waiting_since <= idle_since) {
        stream.ended = true;
        ends.push_back(stream.end);
      }
    }
    // Outside the lock: ending a stream may close it (Close) on this thread. An ended stream
    // stays open until its end has finished it, so the callbacks' streams still exist.
    lock.unlock();
    for (const std::function<void()>& end : ends) end();
    lock.lock();
  }
}

}  // namespace attnserve

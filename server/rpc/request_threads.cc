#include "server/rpc/request_threads.h"

#include <system_error>
#include <thread>
#include <utility>

namespace attnserve {

RequestThreads::RequestThreads(Options options) : options_(options) {}

RequestThreads::~RequestThreads() {
  std::unique_lock<std::mutex> lock(mutex_);
  stopping_ = true;
  body_queued_.notify_all();
  thread_ended_.wait(lock, [this] { return threads_ == 0; });
}

bool RequestThreads::TrySchedule(std::function<void()> body) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) return false;
  if (idle_ + starting_ > static_cast<int>(queue_.size())) {
    queue_.push_back(std::move(body));
    body_queued_.notify_one();
    return true;
  }
  if (options_.max_threads > 0 && threads_ >= options_.max_threads) return false;
  // Started first (it waits for the lock held here), so that a thread the system refuses
  // (std::system_error) changes nothing. Detached: the destructor waits for threads_ to reach
  // zero, which a thread's last act (under the lock) brings about.
  try {
    std::thread([this] { Serve(); }).detach();
  } catch (const std::system_error&) {
    return false;
  }
  queue_.push_back(std::move(body));
  ++threads_;
  ++starting_;
  return true;
}

int RequestThreads::threads() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return threads_;
}

int RequestThreads::idle_threads() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return idle_;
}

void RequestThreads::Serve() {
  std::unique_lock<std::mutex> lock(mutex_);
  --starting_;
  while (true) {
    if (queue_.empty()) {
      if (stopping_ || idle_ >= options_.max_idle_threads) break;
      ++idle_;
      body_queued_.wait(lock, [this] { return !queue_.empty() || stopping_; });
      --idle_;
      continue;
    }
    std::function<void()> body = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    body();
    body = nullptr;  // what it holds goes before the lock is taken again
    lock.lock();
  }
  --threads_;
  thread_ended_.notify_all();
}

}  // namespace attnserve

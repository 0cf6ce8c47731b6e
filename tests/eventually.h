// Waiting in tests for what another thread does, without sleeping a guessed time.
#ifndef ATTNSERVE_TESTS_EVENTUALLY_H_
#define ATTNSERVE_TESTS_EVENTUALLY_H_

#include <chrono>
#include <functional>
#include <thread>

namespace attnserve::testing {

// Polls `condition` every millisecond: true once it holds, false if it has not within 10 s.
inline bool Eventually(const std::function<bool()>& condition) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace attnserve::testing

#endif  // ATTNSERVE_TESTS_EVENTUALLY_H_

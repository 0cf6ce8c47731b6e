#include "server/rpc/decode_streams.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "tests/eventually.h"

namespace attnserve {
namespace {

using std::chrono::milliseconds;
using testing::Eventually;

TEST(DecodeStreamsTest, RefusesPastMaxStreams) {
  DecodeStreams streams({.max_streams = 3, .idle_timeout = milliseconds(0)});
  int keys[4];
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(streams.Open(&keys[i], [] {}));
  EXPECT_FALSE(streams.Open(&keys[3], [] {}));
  EXPECT_EQ(streams.open(), 3);
  streams.Close(&keys[0]);
  EXPECT_TRUE(streams.Open(&keys[3], [] {}));
  for (int i = 1; i < 4; ++i) streams.Close(&keys[i]);
  EXPECT_EQ(streams.open(), 0);
}

// A stream waiting past the timeout is ended once; a busy one never is, however long it works.
TEST(DecodeStreamsTest, EndsOnlyStreamsWaitingPastTheTimeout) {
  std::atomic<int> idle_ended{0};
  std::atomic<int> busy_ended{0};
  DecodeStreams streams({.max_streams = 8, .idle_timeout = milliseconds(50)});
  int idle, busy;
  ASSERT_TRUE(streams.Open(&idle, [&] { ++idle_ended; }));
  ASSERT_TRUE(streams.Open(&busy, [&] { ++busy_ended; }));
  const auto start = std::chrono::steady_clock::now();
  streams.ReadStarted(&idle, streams.Waiting(&idle));
  EXPECT_TRUE(Eventually([&] { return idle_ended == 1; }));
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(50));
  EXPECT_FALSE(streams.Busy(&idle));  // its message came too late: the stream does nothing more
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(idle_ended, 1);
  EXPECT_EQ(busy_ended, 0);
  EXPECT_TRUE(streams.Busy(&busy));
  streams.Close(&idle);
  streams.Close(&busy);
}

// Waiting restarts the clock: a stream whose messages come more often than the timeout lives.
TEST(DecodeStreamsTest, AStreamWithMessagesWithinTheTimeoutLives) {
  std::atomic<int> ended{0};
  DecodeStreams streams({.max_streams = 1, .idle_timeout = milliseconds(100)});
  int key;
  ASSERT_TRUE(streams.Open(&key, [&] { ++ended; }));
  for (int step = 0; step < 10; ++step) {  // 10 × 30 ms waiting: 300 ms in all
    streams.ReadStarted(&key, streams.Waiting(&key));
    std::this_thread::sleep_for(milliseconds(30));
    ASSERT_TRUE(streams.Busy(&key)) << "step " << step;
  }
  EXPECT_EQ(ended, 0);
  streams.Close(&key);
}

TEST(DecodeStreamsTest, NoTimeoutNeverEnds) {
  std::atomic<int> ended{0};
  DecodeStreams streams({.max_streams = 1, .idle_timeout = milliseconds(0)});
  int key;
  ASSERT_TRUE(streams.Open(&key, [&] { ++ended; }));
  streams.ReadStarted(&key, streams.Waiting(&key));
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_TRUE(streams.Busy(&key));
  EXPECT_EQ(ended, 0);
  streams.Close(&key);
}

// A stream is not ended before its read has started (it could not be finished then), nor by the
// news of a read of an earlier wait.
TEST(DecodeStreamsTest, EndsAStreamOnlyOnceItsReadHasStarted) {
  std::atomic<int> ended{0};
  DecodeStreams streams({.max_streams = 1, .idle_timeout = milliseconds(20)});
  int key;
  ASSERT_TRUE(streams.Open(&key, [&] { ++ended; }));
  const int64_t first = streams.Waiting(&key);
  ASSERT_TRUE(streams.Busy(&key));  // the answer came before ReadStarted was told
  const int64_t second = streams.Waiting(&key);
  streams.ReadStarted(&key, first);  // late news of the first wait's read
  std::this_thread::sleep_for(milliseconds(150));
  EXPECT_EQ(ended, 0);
  streams.ReadStarted(&key, second);
  EXPECT_TRUE(Eventually([&] { return ended == 1; }));
  streams.Close(&key);
  streams.ReadStarted(&key, second);  // a closed stream: ignored
}

}  // namespace
}  // namespace attnserve

#include "server/rpc/client_waits.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "tests/eventually.h"

namespace attnserve {
namespace {

using std::chrono::milliseconds;
using testing::Eventually;

TEST(ClientWaitsTest, RefusesPastMaxStreams) {
  ClientWaits streams({.max_streams = 3, .idle_timeout = milliseconds(0)});
  int keys[4];
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(streams.Open(&keys[i], [] {}));
  EXPECT_FALSE(streams.Open(&keys[3], [] {}));
  EXPECT_EQ(streams.open(), 3);
  streams.Close(&keys[0]);
  EXPECT_TRUE(streams.Open(&keys[3], [] {}));
  for (int i = 1; i < 4; ++i) streams.Close(&keys[i]);
  EXPECT_EQ(streams.open(), 0);
}

// A stream registered under its own key, counting the reaper's ends of it; closed when it goes
// (declared after `streams`, so before the reaper stops).
class CountedStream {
 public:
  explicit CountedStream(ClientWaits& streams) : streams_(streams) {
    opened_ = streams_.Open(this, [this] { ++ended_; });
  }
  ~CountedStream() {
    if (opened_) streams_.Close(this);
  }
  bool opened() const { return opened_; }
  int ended() const { return ended_; }
  // Waits for its client, its read started (as DecodeReactor::ReadNext does).
  void Wait() { streams_.ReadStarted(this, streams_.Waiting(this)); }
  bool Busy() { return streams_.Busy(this); }

 private:
  ClientWaits& streams_;
  bool opened_ = false;
  std::atomic<int> ended_{0};
};

// A stream waiting past the timeout is ended once; a busy one never is, however long it works.
TEST(ClientWaitsTest, EndsOnlyStreamsWaitingPastTheTimeout) {
  ClientWaits streams({.max_streams = 8, .idle_timeout = milliseconds(50)});
  CountedStream idle(streams), busy(streams);
  ASSERT_TRUE(idle.opened() && busy.opened());
  const auto start = std::chrono::steady_clock::now();
  idle.Wait();
  EXPECT_TRUE(Eventually([&] { return idle.ended() == 1; }));
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(50));
  EXPECT_FALSE(idle.Busy());  // its message came too late: the stream does nothing more
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(idle.ended(), 1);
  EXPECT_EQ(busy.ended(), 0);
  EXPECT_TRUE(busy.Busy());
}

// Waiting restarts the clock: a stream whose messages come more often than the timeout lives.
TEST(ClientWaitsTest, AStreamWithMessagesWithinTheTimeoutLives) {
  ClientWaits streams({.max_streams = 1, .idle_timeout = milliseconds(100)});
  CountedStream stream(streams);
  ASSERT_TRUE(stream.opened());
  for (int step = 0; step < 10; ++step) {  // 10 × 30 ms waiting: 300 ms in all
    stream.Wait();
    std::this_thread::sleep_for(milliseconds(30));
    ASSERT_TRUE(stream.Busy()) << "step " << step;
  }
  EXPECT_EQ(stream.ended(), 0);
}

TEST(ClientWaitsTest, NoTimeoutNeverEnds) {
  ClientWaits streams({.max_streams = 1, .idle_timeout = milliseconds(0)});
  CountedStream stream(streams);
  ASSERT_TRUE(stream.opened());
  stream.Wait();
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_TRUE(stream.Busy());
  EXPECT_EQ(stream.ended(), 0);
}

// A stream is not ended before its read has started (it could not be finished then), nor by the
// news of a read of an earlier wait.
TEST(ClientWaitsTest, EndsAStreamOnlyOnceItsReadHasStarted) {
  ClientWaits streams({.max_streams = 1, .idle_timeout = milliseconds(20)});
  {
    CountedStream stream(streams);
    ASSERT_TRUE(stream.opened());
    const int64_t first = streams.Waiting(&stream);
    ASSERT_TRUE(stream.Busy());  // the answer came before ReadStarted was told
    const int64_t second = streams.Waiting(&stream);
    streams.ReadStarted(&stream, first);  // late news of the first wait's read
    std::this_thread::sleep_for(milliseconds(150));
    EXPECT_EQ(stream.ended(), 0);
    streams.ReadStarted(&stream, second);
    EXPECT_TRUE(Eventually([&] { return stream.ended() == 1; }));
  }
  int closed;  // news for a key no longer open is ignored
  streams.ReadStarted(&closed, 1);
  EXPECT_EQ(streams.open(), 0);
}

}  // namespace
}  // namespace attnserve

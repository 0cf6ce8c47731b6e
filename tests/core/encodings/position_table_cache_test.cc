#include "core/encodings/position_table_cache.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace attnserve {
namespace {

// Row p of width w holds p·1000 + c: easy to check, independent of the cache.
PositionTableCache::RowFiller CountingFiller(int64_t width, std::atomic<int64_t>* rows_filled) {
  return [width, rows_filled](int64_t first, int64_t end, float* out) {
    for (int64_t p = first; p < end; ++p) {
      for (int64_t c = 0; c < width; ++c) out[(p - first) * width + c] = p * 1000.0f + c;
    }
    *rows_filled += end - first;
  };
}

void ExpectRows(const PositionTableCache::Table& table, int64_t rows) {
  ASSERT_GE(table.rows, rows);
  for (int64_t p = 0; p < rows; ++p) {
    for (int64_t c = 0; c < table.width; ++c) {
      ASSERT_EQ(table.values[p * table.width + c], p * 1000.0f + c) << p << "," << c;
    }
  }
}

TEST(PositionTableCacheTest, ComputesOnceAndReuses) {
  PositionTableCache cache;
  std::atomic<int64_t> filled{0};
  auto first = cache.Get("k", 100, 4, CountingFiller(4, &filled));
  ASSERT_NE(first, nullptr);
  ExpectRows(*first, 100);
  const int64_t after_first = filled;
  auto second = cache.Get("k", 50, 4, CountingFiller(4, &filled));
  EXPECT_EQ(second, first);
  EXPECT_EQ(filled, after_first);
}

TEST(PositionTableCacheTest, GrowsByFillingOnlyMissingRows) {
  PositionTableCache cache;
  std::atomic<int64_t> filled{0};
  auto small = cache.Get("k", 10, 3, CountingFiller(3, &filled));
  const int64_t small_rows = small->rows;
  auto large = cache.Get("k", small_rows + 1, 3, CountingFiller(3, &filled));
  ExpectRows(*large, small_rows + 1);
  EXPECT_EQ(filled, large->rows);  // each row filled exactly once overall
  ExpectRows(*small, 10);          // the old table stays valid while held
}

TEST(PositionTableCacheTest, RefusesPastLimitsAndEvictsLeastRecentlyUsed) {
  PositionTableCache::Options options;
  options.max_rows = 1000;
  options.max_bytes = 256 * 8 * sizeof(float) * 2;  // room for two 256-row tables of width 8
  PositionTableCache cache(options);
  std::atomic<int64_t> filled{0};
  EXPECT_EQ(cache.Get("big", 1001, 8, CountingFiller(8, &filled)), nullptr);
  auto a = cache.Get("a", 10, 8, CountingFiller(8, &filled));
  auto b = cache.Get("b", 10, 8, CountingFiller(8, &filled));
  cache.Get("a", 10, 8, CountingFiller(8, &filled));  // a is now the most recent
  auto c = cache.Get("c", 10, 8, CountingFiller(8, &filled));
  EXPECT_LE(cache.bytes(), options.max_bytes);
  const int64_t before = filled;
  cache.Get("a", 10, 8, CountingFiller(8, &filled));
  EXPECT_EQ(filled, before) << "a should have survived";
  cache.Get("b", 10, 8, CountingFiller(8, &filled));
  EXPECT_GT(filled, before) << "b should have been evicted";
  ExpectRows(*b, 10);  // still valid for its holder
}

TEST(PositionTableCacheTest, ConcurrentReadersSeeCompleteTables) {
  PositionTableCache cache;
  std::atomic<int64_t> filled{0};
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      for (int64_t rows = 1; rows < 2000; rows += 97 + i) {
        auto table = cache.Get(i % 2 == 0 ? "even" : "odd", rows, 5, CountingFiller(5, &filled));
        if (table == nullptr || table->rows < rows ||
            table->values[(rows - 1) * 5 + 4] != (rows - 1) * 1000.0f + 4) {
          ++bad;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(bad, 0);
}

}  // namespace
}  // namespace attnserve

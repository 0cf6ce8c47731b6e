// A thread-safe cache of position tables, so that sin/cos tables are computed once per parameter
// set instead of once per request. A table's row p depends only on its key (the parameters) and
// p; tables grow to cover the largest position asked for, within a byte budget.
#ifndef ATTNSERVE_CORE_ENCODINGS_POSITION_TABLE_CACHE_H_
#define ATTNSERVE_CORE_ENCODINGS_POSITION_TABLE_CACHE_H_

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace attnserve {

class PositionTableCache {
 public:
  struct Options {
    int64_t max_bytes = int64_t{256} << 20;  // all tables together; least recently used go first
    int64_t max_rows = int64_t{1} << 16;     // positions past this are computed directly
  };

  // A table: `rows` rows of `width` floats, row-major.
  struct Table {
    int64_t rows = 0;
    int64_t width = 0;
    std::vector<float> values;
  };

  // Writes rows [first, end) of a table, (end − first)·width floats, into `out`.
  using RowFiller = std::function<void(int64_t first, int64_t end, float* out)>;

  PositionTableCache() : PositionTableCache(Options{}) {}
  explicit PositionTableCache(Options options) : options_(options) {}

  // Whether a call with `tokens` tokens whose largest position is rows − 1 should use a table:
  // only when the table is not much bigger than the work itself, so a lone token at a far
  // position costs its own rows, not a table up to that position.
  static bool WorthTabulating(int64_t rows, int64_t tokens) {
    return rows > 0 && rows <= 8 * tokens + 1024;
  }

  // A table for `key` with at least `rows` rows of `width`, filled by `fill` where missing;
  // nullptr when `rows` < 1 or the table's size is past the options (the caller computes
  // directly).
  // The returned table stays valid while held, even if the cache evicts or regrows it.
  std::shared_ptr<const Table> Get(const std::string& key, int64_t rows, int64_t width,
                                   const RowFiller& fill);

  // Bytes held by cached tables.
  int64_t bytes() const;

 private:
  struct Entry {
    std::shared_ptr<const Table> table;
    std::list<std::string>::iterator lru;  // position in lru_ (front = most recent)
  };

  // Requires mutex_.
  void EvictUntilFits(int64_t incoming_bytes);

  const Options options_;
  // std::mutex rather than absl::Mutex: ThreadSanitizer intercepts it (Debian's absl is not
  // instrumented).
  mutable std::mutex mutex_;
  // Guarded by mutex_:
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> lru_;
  int64_t bytes_ = 0;
};

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ENCODINGS_POSITION_TABLE_CACHE_H_

#include "core/encodings/position_table_cache.h"

#include <algorithm>
#include <utility>

namespace attnserve {
namespace {

int64_t TableBytes(const PositionTableCache::Table& table) {
  return static_cast<int64_t>(table.values.size() * sizeof(float));
}

}  // namespace

std::shared_ptr<const PositionTableCache::Table> PositionTableCache::Get(const std::string& key,
                                                                         int64_t rows,
                                                                         int64_t width,
                                                                         const RowFiller& fill) {
  if (rows < 1 || rows > options_.max_rows || width <= 0) return nullptr;
  // Grow in powers of two (at least 256 rows) so growing sequences regrow rarely.
  int64_t capacity = 256;
  while (capacity < rows) capacity *= 2;
  capacity = std::min(capacity, options_.max_rows);
  if (capacity * width * static_cast<int64_t>(sizeof(float)) > options_.max_bytes) {
    capacity = rows;
    if (capacity * width * static_cast<int64_t>(sizeof(float)) > options_.max_bytes) {
      return nullptr;
    }
  }

  std::shared_ptr<const Table> old;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      if (it->second.table->rows >= rows && it->second.table->width == width) {
        return it->second.table;
      }
      old = it->second.table;
    }
  }

  // Fill outside the lock: other keys stay available meanwhile. Rows the old table has are copied.
  auto table = std::make_shared<Table>();
  table->rows = capacity;
  table->width = width;
  table->values.resize(capacity * width);
  int64_t first_missing = 0;
  if (old != nullptr && old->width == width) {
    first_missing = std::min(old->rows, capacity);
    std::copy(old->values.begin(), old->values.begin() + first_missing * width,
              table->values.begin());
  }
  fill(first_missing, capacity, table->values.data() + first_missing * width);

  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    // Another thread may have stored a table meanwhile; keep the larger one.
    if (it->second.table->rows >= table->rows) return it->second.table;
    bytes_ -= TableBytes(*it->second.table);
    lru_.erase(it->second.lru);
    entries_.erase(it);
  }
  EvictUntilFits(TableBytes(*table));
  lru_.push_front(key);
  entries_[key] = Entry{table, lru_.begin()};
  bytes_ += TableBytes(*table);
  return table;
}

void PositionTableCache::EvictUntilFits(int64_t incoming_bytes) {
  while (!lru_.empty() && bytes_ + incoming_bytes > options_.max_bytes) {
    auto it = entries_.find(lru_.back());
    bytes_ -= TableBytes(*it->second.table);
    entries_.erase(it);
    lru_.pop_back();
  }
}

int64_t PositionTableCache::bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return bytes_;
}

}  // namespace attnserve

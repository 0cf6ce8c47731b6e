// Buffers on cache-line boundaries for the tiled attention's operands and scratch.
#ifndef ATTNSERVE_CORE_KERNELS_CACHE_ALIGNED_ARRAY_H_
#define ATTNSERVE_CORE_KERNELS_CACHE_ALIGNED_ARRAY_H_

#include <cstdint>
#include <memory>
#include <new>

namespace attnserve {

// Uninitialised storage for elements of T on a 64-byte boundary, grown on demand (contents are
// not kept). malloc aligns large blocks to 16 bytes only, and then every 64-byte AMX tile row and
// 512-bit vector of a buffer straddles two cache lines.
template <typename T>
class CacheAlignedArray {
 public:
  void Reserve(int64_t size) {
    if (size <= size_) return;
    data_.reset(static_cast<T*>(::operator new(size * sizeof(T), kAlignment)));
    size_ = size;
  }
  T* data() const { return data_.get(); }

 private:
  static constexpr std::align_val_t kAlignment{64};
  struct Free {
    void operator()(T* p) const { ::operator delete(p, kAlignment); }
  };
  std::unique_ptr<T[], Free> data_;
  int64_t size_ = 0;
};

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_KERNELS_CACHE_ALIGNED_ARRAY_H_

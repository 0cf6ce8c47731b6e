// The models being served, replaceable while serving (model reload).
//
// Each request takes a snapshot — the registry current when it started — and keeps it until it
// ends, so a reload never changes a model under a running request or an open Decode stream: they
// finish on the version they started with, which is freed when the last of them lets go.
#ifndef ATTNSERVE_SERVER_MODELS_MODEL_STORE_H_
#define ATTNSERVE_SERVER_MODELS_MODEL_STORE_H_

#include <memory>
#include <mutex>
#include <utility>

#include "server/models/model_registry.h"

namespace attnserve {

class ModelStore {
 public:
  explicit ModelStore(std::shared_ptr<const ModelRegistry> initial)
      : current_(std::move(initial)) {}

  ModelStore(const ModelStore&) = delete;
  ModelStore& operator=(const ModelStore&) = delete;

  // The registry new requests use; never null.
  std::shared_ptr<const ModelRegistry> Current() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return current_;
  }

  // From now on requests use `next` (not null); the previous registry lives on in the snapshots
  // of the requests that hold it.
  void Replace(std::shared_ptr<const ModelRegistry> next) {
    std::lock_guard<std::mutex> lock(mutex_);
    current_.swap(next);
    // `next` (the previous registry) is released after the lock, outside the critical section.
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const ModelRegistry> current_;  // guarded by mutex_
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_MODELS_MODEL_STORE_H_

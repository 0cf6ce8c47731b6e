// A computation the compute pool may run together with others of its kind (server-side
// batching): what decides who may share a batch, and how a batch is computed.
#ifndef ATTNSERVE_SERVER_REQUESTS_BATCH_MEMBER_H_
#define ATTNSERVE_SERVER_REQUESTS_BATCH_MEMBER_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/types/span.h"

namespace attnserve {

class BatchMember {
 public:
  // `rpc` and `model` label the batch in metrics. Members run together only when their keys are
  // equal and not empty (the kind of computation, the model instance, the options that must
  // match); an empty key always runs alone. `tokens` count against --max_batch_tokens.
  BatchMember(std::string rpc, std::string model, std::string key, int64_t tokens)
      : rpc_(std::move(rpc)), model_(std::move(model)), key_(std::move(key)), tokens_(tokens) {}
  virtual ~BatchMember() = default;

  BatchMember(const BatchMember&) = delete;
  BatchMember& operator=(const BatchMember&) = delete;

  const std::string& rpc() const { return rpc_; }
  const std::string& model() const { return model_; }
  const std::string& key() const { return key_; }
  int64_t tokens() const { return tokens_; }
  // Whether this is one step of a stream whose client sends the next step once answered
  // (BatchLimits::step_wait).
  virtual bool IsStreamStep() const { return false; }

  // Computes `batch` — members with this member's key, this one among them, each of this member's
  // own class — and returns one status per member, in order. Runs on a compute worker.
  virtual std::vector<absl::Status> RunBatch(absl::Span<BatchMember* const> batch) = 0;

 private:
  const std::string rpc_, model_, key_;
  const int64_t tokens_;
};

// Work that runs alone (an empty key): a computation that joins no batch.
class LoneWork final : public BatchMember {
 public:
  explicit LoneWork(absl::FunctionRef<absl::Status()> work)
      : BatchMember("", "", "", 0), work_(work) {}
  std::vector<absl::Status> RunBatch(absl::Span<BatchMember* const>) override {
    return {work_()};
  }

 private:
  absl::FunctionRef<absl::Status()> work_;
};

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_BATCH_MEMBER_H_

#include "core/attention/sdpa_batch.h"

#include <algorithm>
#include <exception>
#include <new>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/attention/scaled_dot_product_attention.h"
#include "core/kernels/onednn_ops.h"

namespace attnserve {
namespace {

// The member's products, B·H·Sq·Sk·hd (a measure for scheduling, not FLOPs).
double Work(const SdpaShape& shape) {
  return static_cast<double>(shape.batch) * shape.num_heads * shape.q_len * shape.kv_len *
         shape.head_dim;
}

absl::Status RunMember(const SdpaBatchMember<float>& member) {
  return ScaledDotProductAttention(member.shape, *member.options, member.q, member.k, member.v,
                                   member.out, member.probs);
}

absl::Status RunMember(const SdpaBatchMember<uint16_t>& member) {
  if (member.probs != nullptr) {
    return absl::InvalidArgumentError("probabilities need f32 tensors");
  }
  return ScaledDotProductAttention(member.shape, *member.options, member.q, member.k, member.v,
                                   member.out);
}

// RunMember with its exceptions as statuses: it may run inside a parallel region, which an
// exception must not leave.
template <typename T>
absl::Status RunMemberCaught(const SdpaBatchMember<T>& member) {
  try {
    return RunMember(member);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("attention: out of memory");
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("attention: ", e.what()));
  }
}

template <typename T>
std::vector<absl::Status> RunBatch(absl::Span<const SdpaBatchMember<T>> members) {
  const int64_t count = static_cast<int64_t>(members.size());
  std::vector<absl::Status> statuses(count);
  const int threads = ApplyComputeThreads();
  std::vector<double> work(count);
  for (int64_t i = 0; i < count; ++i) work[i] = Work(members[i].shape);
  const double total = std::accumulate(work.begin(), work.end(), 0.0);
  // Largest first: the big members, then the rest as a longest-first schedule.
  std::vector<int64_t> order(count);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&work](int64_t a, int64_t b) { return work[a] > work[b]; });
  int64_t shared = 0;  // order[shared…] run side by side
  if (threads == 1 || count == 1) {
    shared = count;  // every member on all threads, one after another
  } else {
    while (shared < count && work[order[shared]] * threads > total) ++shared;
  }
  for (int64_t n = 0; n < shared; ++n) statuses[order[n]] = RunMemberCaught(members[order[n]]);
  // Inside this region each member's own parallel regions are nested, so they run on the one
  // thread that took the member (OpenMP's default of one active level).
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t n = shared; n < count; ++n) {
    statuses[order[n]] = RunMemberCaught(members[order[n]]);
  }
  return statuses;
}

}  // namespace

std::vector<absl::Status> ScaledDotProductAttentionBatch(
    absl::Span<const SdpaBatchMember<float>> members) {
  return RunBatch(members);
}

std::vector<absl::Status> ScaledDotProductAttentionBatch(
    absl::Span<const SdpaBatchMember<uint16_t>> members) {
  return RunBatch(members);
}

}  // namespace attnserve

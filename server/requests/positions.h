// The positions of a request's tokens, from its offset or its ids, whatever wire they came on.
#ifndef ATTNSERVE_SERVER_REQUESTS_POSITIONS_H_
#define ATTNSERVE_SERVER_REQUESTS_POSITIONS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/requests/tensors.h"

namespace attnserve {

// Positions [batch·seq]: position_offset + t when `ids` is null, else the ids (shape [seq]
// broadcast over the batch, or [batch, seq]). Every position must be in [0, kMaxPosition]:
// position_offset in [0, kMaxPosition − seq + 1], each id in [0, kMaxPosition]; INVALID_ARGUMENT
// naming `position_offset`, `<ids_field>.shape` or `<ids_field>[i]` and the value otherwise.
absl::StatusOr<std::vector<int64_t>> ResolvePositions(const DenseTensor<int64_t>* ids,
                                                      absl::string_view ids_field,
                                                      int64_t position_offset, int64_t batch,
                                                      int64_t seq);

}  // namespace attnserve

#endif  // ATTNSERVE_SERVER_REQUESTS_POSITIONS_H_

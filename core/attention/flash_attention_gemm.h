// The oneDNN path of the tiled attention: per key tile, the scores of a work item's rows by one
// matmul, the online softmax row by row, then P·V by another. Internal to core/attention.
#ifndef ATTNSERVE_CORE_ATTENTION_FLASH_ATTENTION_GEMM_H_
#define ATTNSERVE_CORE_ATTENTION_FLASH_ATTENTION_GEMM_H_

#include "core/attention/flash_call.h"
#include "core/attention/flash_operands.h"
#include "core/attention/flash_thread_state.h"
#include "core/kernels/tile_gemm.h"

namespace attnserve {

// Writes the item's rows of out [B, H, Sq, hd] (T float, or uint16_t bf16 bits), or nothing when
// the call stops. operands are of Kind kFloat32 or kBfloat16, gemm computes in the call's type,
// and scratch is reserved for the call's tiles.
template <typename T>
void AttendGemm(const FlashCall& call, const FlashOperands<T>& operands, const WorkItem& item,
                Scratch& scratch, TileGemm& gemm, T* out);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ATTENTION_FLASH_ATTENTION_GEMM_H_

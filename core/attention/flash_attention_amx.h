// The fused AMX path of the tiled attention: a work item's rows in blocks of 32, scores,
// exponentials and P·V per key tile on buffers that stay in L1. Internal to core/attention.
#ifndef ATTNSERVE_CORE_ATTENTION_FLASH_ATTENTION_AMX_H_
#define ATTNSERVE_CORE_ATTENTION_FLASH_ATTENTION_AMX_H_

#include "core/attention/flash_call.h"
#include "core/attention/flash_operands.h"
#include "core/attention/flash_thread_state.h"

namespace attnserve {

// Writes the item's rows of out [B, H, Sq, hd] (T float, or uint16_t bf16 bits), or nothing when
// the call stops. operands are of Kind kAmx, packed; this thread's tiles are configured
// (AmxConfigure) and scratch is reserved for the call's tiles.
template <typename T>
void AttendAmx(const FlashCall& call, const FlashOperands<T>& operands, const WorkItem& item,
               Scratch& scratch, T* out);

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_ATTENTION_FLASH_ATTENTION_AMX_H_

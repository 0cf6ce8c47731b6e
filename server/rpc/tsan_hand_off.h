// Hand-offs through gRPC that ThreadSanitizer cannot see. gRPC passes a call, and the service it
// calls, between its threads and the project's under locks and atomics inside libgrpc, which is
// not instrumented; TSan would then report the next thread's reads of what the previous one
// wrote. Release(x) before handing `x` over to gRPC, Acquire(x) where gRPC hands it back. Both
// are no-ops unless built with -fsanitize=thread (scripts/sanitize.sh thread).
#ifndef ATTNSERVE_SERVER_RPC_TSAN_HAND_OFF_H_
#define ATTNSERVE_SERVER_RPC_TSAN_HAND_OFF_H_

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* address);
extern "C" void __tsan_release(void* address);
#endif

namespace attnserve::tsan_hand_off {

#if defined(__SANITIZE_THREAD__)
inline void Release(const void* object) { __tsan_release(const_cast<void*>(object)); }
inline void Acquire(const void* object) { __tsan_acquire(const_cast<void*>(object)); }
#else
inline void Release(const void*) {}
inline void Acquire(const void*) {}
#endif

}  // namespace attnserve::tsan_hand_off

#endif  // ATTNSERVE_SERVER_RPC_TSAN_HAND_OFF_H_

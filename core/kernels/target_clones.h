// ATTNSERVE_TARGET_CLONES: a function compiled for AVX-512, AVX2 and baseline x86-64, the best
// chosen when the program loads (GCC target_clones). ThreadSanitizer instruments the load-time
// resolvers, which then run before its runtime exists and crash; its builds compile the baseline
// only.
#ifndef ATTNSERVE_CORE_KERNELS_TARGET_CLONES_H_
#define ATTNSERVE_CORE_KERNELS_TARGET_CLONES_H_

#if defined(__SANITIZE_THREAD__)
#define ATTNSERVE_TARGET_CLONES
#else
#define ATTNSERVE_TARGET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif

#endif  // ATTNSERVE_CORE_KERNELS_TARGET_CLONES_H_

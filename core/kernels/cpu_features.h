// What this CPU runs, asked once per process: the hand-vectorised kernels check these before
// they take their AVX-512 paths.
#ifndef ATTNSERVE_CORE_KERNELS_CPU_FEATURES_H_
#define ATTNSERVE_CORE_KERNELS_CPU_FEATURES_H_

namespace attnserve {

// Whether this CPU runs the *Avx512 kernels: AVX512F; for the bf16 ones also BW, VL, DQ and
// AVX512_BF16.
bool CpuHasAvx512();
bool CpuHasAvx512Bf16();

}  // namespace attnserve

#endif  // ATTNSERVE_CORE_KERNELS_CPU_FEATURES_H_

// CPU emulation of the CUDA C++ subset safestep's kernels use (see gpu/emu/README.md).
// Included before each kernels/*.cu file when it is compiled as plain C++ for the fake
// driver: blocks run one after another; the threads of a block run as cooperative fibers
// that switch only at __syncthreads() and warp shuffles, which gives those the same
// semantics as on a GPU for kernels whose threads all reach the same barriers.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static

struct emu_dim3 {
  unsigned x, y, z;
};
extern emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

// Yield to the block's scheduler: returns once every live thread of the block got here.
void emu_barrier();
// The calling thread's index within its block.
unsigned emu_linear_tid();
// Per-block exchange slots for warp shuffles.
extern double emu_shuffle_slots[1024];

inline void __syncthreads() { emu_barrier(); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask) {
  const unsigned me = emu_linear_tid();
  emu_shuffle_slots[me] = static_cast<double>(v);
  emu_barrier();
  const T other = static_cast<T>(emu_shuffle_slots[me ^ static_cast<unsigned>(lane_mask)]);
  emu_barrier();
  return other;
}

using std::isfinite;
using std::max;
using std::min;
inline float fmaf(float a, float b, float c) { return std::fma(a, b, c); }

// The Wasserstein regulariser's gradient (Lewandowski et al.): per layer,
// R = lambda * sum_k (sort(theta)_k - sort(theta0)_k)^2, whose gradient with respect to the
// parameter holding rank k is 2 lambda (sort(theta)_k - sort(theta0)_k).
// Sorting is a bitonic sort of (value, index) pairs padded to a power of two with +inf;
// ties break by index, so the order (and the gradient) is deterministic.
#include "common.cuh"
#include <math_constants.h>

// Elements per block of the shared-memory stages (two per thread).
#define SORT_CHUNK 1024

__device__ __forceinline__ bool pair_greater(float ka, unsigned ia, float kb, unsigned ib) {
  return ka > kb || (ka == kb && ia > ib);
}

// keys[i] = x[i], idx[i] = i for i < n; keys[i] = +inf, idx[i] = 0xffffffff for n <= i < N.
extern "C" __global__ void sort_prepare(const float* __restrict__ x, int n, int N,
                                        float* __restrict__ keys, unsigned int* __restrict__ idx) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N) return;
  keys[i] = i < n ? x[i] : CUDART_INF_F;
  idx[i] = i < n ? (unsigned int)i : 0xffffffffu;
}

// One global compare-exchange pass of the bitonic network (stage k, distance j >= SORT_CHUNK).
extern "C" __global__ void bitonic_global(float* __restrict__ keys, unsigned int* __restrict__ idx,
                                          int N, int j, int k) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N) return;
  const int p = i ^ j;
  if (p <= i) return;
  const bool up = (i & k) == 0;
  const float ki = keys[i], kp = keys[p];
  const unsigned ii = idx[i], ip = idx[p];
  if (pair_greater(ki, ii, kp, ip) == up) {
    keys[i] = kp; keys[p] = ki;
    idx[i] = ip; idx[p] = ii;
  }
}

// Shared-memory passes over one SORT_CHUNK block: with k = 0, the whole network for stages
// 2..SORT_CHUNK (sorting each chunk in alternating directions); otherwise stage k's passes
// for distances SORT_CHUNK/2 .. 1. blockDim.x must be SORT_CHUNK / 2.
extern "C" __global__ void bitonic_local(float* __restrict__ keys, unsigned int* __restrict__ idx,
                                         int N, int k) {
  __shared__ float sk[SORT_CHUNK];
  __shared__ unsigned int si[SORT_CHUNK];
  const int base = blockIdx.x * SORT_CHUNK;
  for (int t = threadIdx.x; t < SORT_CHUNK; t += blockDim.x) {
    sk[t] = keys[base + t];
    si[t] = idx[base + t];
  }
  __syncthreads();
  const int k_first = k == 0 ? 2 : k;
  const int k_last = k == 0 ? SORT_CHUNK : k;
  for (int kk = k_first; kk <= k_last; kk <<= 1) {
    for (int j = (k == 0 ? kk >> 1 : SORT_CHUNK >> 1); j > 0; j >>= 1) {
      for (int t = threadIdx.x; t < SORT_CHUNK; t += blockDim.x) {
        const int p = t ^ j;
        if (p > t) {
          const bool up = ((base + t) & kk) == 0;
          const float a = sk[t], b = sk[p];
          const unsigned ia = si[t], ib = si[p];
          if (pair_greater(a, ia, b, ib) == up) {
            sk[t] = b; sk[p] = a;
            si[t] = ib; si[p] = ia;
          }
        }
      }
      __syncthreads();
    }
  }
  for (int t = threadIdx.x; t < SORT_CHUNK; t += blockDim.x) {
    keys[base + t] = sk[t];
    idx[base + t] = si[t];
  }
}

// grad[idx[r]] += coef * (keys[r] - sorted0[r]) for r < n (coef = 2 lambda).
extern "C" __global__ void wasserstein_grad(const float* __restrict__ keys,
                                            const unsigned int* __restrict__ idx,
                                            const float* __restrict__ sorted0, int n, float coef,
                                            float* __restrict__ grad) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= n) return;
  grad[idx[r]] += coef * (keys[r] - sorted0[r]);
}

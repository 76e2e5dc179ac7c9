// Shared device helpers for safestep's kernels (included by every kernels/*.cu file).
#pragma once

#define SAFESTEP_REDUCE_THREADS 256

// Deterministic block-wide sum of one double per thread (fixed tree order; blockDim.x must
// be SAFESTEP_REDUCE_THREADS). Every thread receives the block's total.
__device__ __forceinline__ double block_sum(double x, double* shared) {
  const int t = threadIdx.x;
  shared[t] = x;
  __syncthreads();
  for (int s = SAFESTEP_REDUCE_THREADS / 2; s > 0; s >>= 1) {
    if (t < s) shared[t] += shared[t + s];
    __syncthreads();
  }
  double total = shared[0];
  __syncthreads();
  return total;
}

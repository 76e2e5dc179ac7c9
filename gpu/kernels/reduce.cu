// Deterministic reductions for the per-layer statistics. Every sum runs in a fixed order
// (grid-stride per thread, fixed tree per block, blocks combined by one finishing block), so
// the same inputs always give the same bits.
#include "common.cuh"

// partials[blockIdx.x] = sum of x[i]^2 over this block's grid-stride share of 0..n.
extern "C" __global__ void sum_sq_partials(const float* __restrict__ x, long long n,
                                           double* __restrict__ partials) {
  __shared__ double sh[SAFESTEP_REDUCE_THREADS];
  double s = 0.0;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    const double v = (double)x[i];
    s += v * v;
  }
  s = block_sum(s, sh);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// out[slot + v] = sum_{i < n} partials[v * n + i] for v = blockIdx.x (one block per value).
extern "C" __global__ void sum_partials(const double* __restrict__ partials, int n,
                                        double* __restrict__ out, int slot) {
  __shared__ double sh[SAFESTEP_REDUCE_THREADS];
  const double* p = partials + (size_t)blockIdx.x * n;
  double s = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += p[i];
  s = block_sum(s, sh);
  if (threadIdx.x == 0) out[slot + blockIdx.x] = s;
}

// Per-sample gradient squared norms of a dense layer, without forming the gradients:
// sample r's gradient of its own loss is (scale * delta[r]) a[r]^T for the weights and
// scale * delta[r] for the bias, so its squared norm is scale^2 |delta[r]|^2 (|a[r]|^2 + 1).
// delta is rows x dcols (the batch-mean-loss gradient w.r.t. the layer's outputs, so
// scale = B), a is rows x acols (the layer's input). One warp per row; out[r] in double.
extern "C" __global__ void sample_sq_norms(const float* __restrict__ delta,
                                           const float* __restrict__ a, int rows, int dcols,
                                           int acols, float scale, double* __restrict__ out) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= rows) return;
  double d2 = 0.0, a2 = 0.0;
  const float* dr = delta + (size_t)warp * dcols;
  const float* ar = a + (size_t)warp * acols;
  for (int c = lane; c < dcols; c += 32) d2 += (double)dr[c] * (double)dr[c];
  for (int c = lane; c < acols; c += 32) a2 += (double)ar[c] * (double)ar[c];
  for (int o = 16; o > 0; o >>= 1) {
    d2 += __shfl_xor_sync(0xffffffffu, d2, o);
    a2 += __shfl_xor_sync(0xffffffffu, a2, o);
  }
  if (lane == 0) out[warp] = (double)scale * (double)scale * d2 * (a2 + 1.0);
}

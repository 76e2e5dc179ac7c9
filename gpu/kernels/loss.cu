// Softmax cross-entropy: forward, backward (with the correct-prediction count), and the
// softmax's Hessian product for the Hessian-vector product. One block row per warp: each warp
// owns one sample's `classes` logits.
#include "common.cuh"
#include <math_constants.h>

// For each row r of logits (rows x classes): p = softmax(logits[r]), loss[r] = -log p[label],
// hit[r] = 1 if the first arg-max equals the label, dlogits[r] = (p - onehot) * scale
// (scale = 1/B gives the gradient of the batch-mean loss). probs may be null.
extern "C" __global__ void softmax_xent(const float* __restrict__ logits,
                                        const unsigned char* __restrict__ labels,
                                        const unsigned int* __restrict__ idx, int rows,
                                        int classes, float scale, float* __restrict__ probs,
                                        float* __restrict__ dlogits, float* __restrict__ loss,
                                        float* __restrict__ hit) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= rows) return;
  const float* z = logits + (size_t)warp * classes;
  const int label = labels[idx ? idx[warp] : warp];
  float mx = -CUDART_INF_F;
  int arg = classes;
  for (int c = lane; c < classes; c += 32) {
    const float v = z[c];
    if (v > mx || (v == mx && c < arg)) { mx = v; arg = c; }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, mx, o);
    const int oa = __shfl_xor_sync(0xffffffffu, arg, o);
    if (om > mx || (om == mx && oa < arg)) { mx = om; arg = oa; }
  }
  float s = 0.f;
  for (int c = lane; c < classes; c += 32) s += expf(z[c] - mx);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  const float log_s = logf(s);
  for (int c = lane; c < classes; c += 32) {
    const float p = expf(z[c] - mx - log_s);
    if (probs) probs[(size_t)warp * classes + c] = p;
    if (dlogits) dlogits[(size_t)warp * classes + c] = (p - (c == label ? 1.f : 0.f)) * scale;
  }
  if (lane == 0) {
    loss[warp] = log_s - (z[label] - mx);
    hit[warp] = (arg == label) ? 1.f : 0.f;
  }
}

// out[slot] += sum_r loss[r], out[slot + 1] += sum_r hit[r] in one block, fixed order.
// With accumulate = 0 the two slots are overwritten instead.
extern "C" __global__ void loss_sum(const float* __restrict__ loss, const float* __restrict__ hit,
                                    int rows, int accumulate, double* __restrict__ out,
                                    int slot) {
  __shared__ double sh[SAFESTEP_REDUCE_THREADS];
  double l = 0.0, h = 0.0;
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    l += (double)loss[r];
    h += (double)hit[r];
  }
  l = block_sum(l, sh);
  h = block_sum(h, sh);
  if (threadIdx.x == 0) {
    out[slot] = accumulate ? out[slot] + l : l;
    out[slot + 1] = accumulate ? out[slot + 1] + h : h;
  }
}

// R-operator of the softmax cross-entropy gradient: for each row,
// rd = (p * rz - p * (p . rz)) * scale, the Hessian of the loss w.r.t. the logits times rz.
extern "C" __global__ void softmax_hvp(const float* __restrict__ probs,
                                       const float* __restrict__ rz, int rows, int classes,
                                       float scale, float* __restrict__ rd) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= rows) return;
  const float* p = probs + (size_t)warp * classes;
  const float* r = rz + (size_t)warp * classes;
  float dot = 0.f;
  for (int c = lane; c < classes; c += 32) dot += p[c] * r[c];
  for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
  for (int c = lane; c < classes; c += 32)
    rd[(size_t)warp * classes + c] = p[c] * (r[c] - dot) * scale;
}

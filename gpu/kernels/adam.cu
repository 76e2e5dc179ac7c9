// Fused Adam / Adam+L2 / AdamW update of one layer with the per-layer statistics
// safestep-core's scheduler needs, and Adam's preconditioner square root.
// The arithmetic mirrors safestep_core::adam::adam_step exactly (f32 per parameter); the
// statistics accumulate in double.
#include "common.cuh"

// Number of statistics adam_update accumulates per layer, in this order.
#define ADAM_STATS 4  // sum v_hat, sum multiplier, |theta_new|^2, |delta theta|^2

// One Adam step over n parameters. `guard` points at the layer's |g|^2 (computed just before
// by sum_sq_partials + sum_partials): if it is not finite the kernel changes nothing, so a
// non-finite gradient leaves parameters and moments untouched (the host then reports it).
// wd_mode: 0 none, 1 coupled L2 (g' = g + wd*theta), 2 decoupled (theta -= lr*wd*theta).
// partials has ADAM_STATS * gridDim.x doubles: partials[s * gridDim.x + block].
extern "C" __global__ void adam_update(float* __restrict__ p, const float* __restrict__ g,
                                       float* __restrict__ m, float* __restrict__ v,
                                       long long n, float lr, float beta1, float beta2,
                                       float eps, float bc1, float bc2, int wd_mode, float wd,
                                       const double* __restrict__ guard,
                                       double* __restrict__ partials) {
  __shared__ double sh[SAFESTEP_REDUCE_THREADS];
  const bool ok = isfinite(*guard);
  const float coupled = wd_mode == 1 ? wd : 0.f;
  const float decoupled = wd_mode == 2 ? lr * wd : 0.f;
  const float c1 = 1.f - beta1, c2 = 1.f - beta2;
  const float step = lr / bc1;
  const float inv_bc2 = 1.f / bc2;
  double s_vh = 0.0, s_mul = 0.0, s_p = 0.0, s_u = 0.0;
  if (ok) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
      const float pi = p[i];
      const float gi = g[i] + coupled * pi;
      const float mi = beta1 * m[i] + c1 * gi;
      const float vi = beta2 * v[i] + c2 * (gi * gi);
      const float vh = vi * inv_bc2;
      const float mul = step / (sqrtf(vh) + eps);
      const float upd = mi * mul + decoupled * pi;
      const float pn = pi - upd;
      m[i] = mi;
      v[i] = vi;
      p[i] = pn;
      s_vh += (double)vh;
      s_mul += (double)mul;
      s_p += (double)pn * (double)pn;
      s_u += (double)upd * (double)upd;
    }
  }
  s_vh = block_sum(s_vh, sh);
  s_mul = block_sum(s_mul, sh);
  s_p = block_sum(s_p, sh);
  s_u = block_sum(s_u, sh);
  if (threadIdx.x == 0) {
    partials[0 * gridDim.x + blockIdx.x] = s_vh;
    partials[1 * gridDim.x + blockIdx.x] = s_mul;
    partials[2 * gridDim.x + blockIdx.x] = s_p;
    partials[3 * gridDim.x + blockIdx.x] = s_u;
  }
}

// out[i] = 1 / sqrt(sqrt(v[i] / bc2) + eps): D^(1/2) of Adam's preconditioner.
extern "C" __global__ void precond_sqrt(const float* __restrict__ v, long long n, float bc2,
                                        float eps, float* __restrict__ out) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[i] = 1.f / sqrtf(sqrtf(v[i] * (1.f / bc2)) + eps);
}

// y[i] = x[i] * d[i] (the preconditioner applied around the Hessian-vector product);
// y may alias x (each thread reads its element before writing it).
extern "C" __global__ void scale_elementwise(const float* x, const float* __restrict__ d,
                                             long long n, float* y) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  y[i] = x[i] * d[i];
}

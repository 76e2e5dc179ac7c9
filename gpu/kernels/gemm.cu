// Tiled single-precision GEMM in the three row-major layouts the MLP needs:
//   sgemm_nn: C[m,n] = alpha * A[m,k]   * B[k,n]   + beta * C   (dA = dZ * W)
//   sgemm_nt: C[m,n] = alpha * A[m,k]   * B[n,k]^T + beta * C   (Z = X * W^T)
//   sgemm_tn: C[m,n] = alpha * A[k,m]^T * B[k,n]   + beta * C   (dW = dZ^T * X)
// Each block computes a BM x BN tile of C from BK-deep slabs of A and B staged in shared
// memory (the next slab is fetched into registers while the current one is multiplied);
// each thread accumulates a TM x TN register tile. Edges are zero-padded, so any m, n, k
// works (including sizes that are not multiples of the tile). Two tile shapes are exported
// per layout: 64x64 for large outputs and 32x32 for small ones. When even the small tiles
// leave multiprocessors idle, the host splits k over gridDim.z blocks that write partial
// products to a workspace, summed in order by sgemm_splitk_reduce (deterministic).
#include "common.cuh"

template <int BM, int BN, int BK, int TM, int TN, bool TA, bool TB>
__device__ __forceinline__ void sgemm_tile(int m, int n, int k, int kchunk, float alpha,
                                           const float* __restrict__ A,
                                           const float* __restrict__ B, float beta,
                                           float* __restrict__ C) {
  constexpr int THREADS = (BM / TM) * (BN / TN);
  constexpr int A_PER = (BM * BK) / THREADS;  // A elements each thread stages per slab
  constexpr int B_PER = (BN * BK) / THREADS;
  static_assert((BM * BK) % THREADS == 0 && (BN * BK) % THREADS == 0, "tile loads must divide");
  __shared__ float As[BK][BM + 4];
  __shared__ float Bs[BK][BN + 4];
  const int tid = threadIdx.x;
  const int tx = tid % (BN / TN);
  const int ty = tid / (BN / TN);
  const int row0 = blockIdx.y * BM;
  const int col0 = blockIdx.x * BN;
  // Split-K: block z sums k in [kb, ke) and writes its own m x n slice of C.
  const int kb = blockIdx.z * kchunk;
  const int ke = min(k, kb + kchunk);
  C += (size_t)blockIdx.z * m * n;
  float acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

  // The next slab is fetched into registers while the current one is multiplied.
  float ra[A_PER], rb[B_PER];
  auto fetch = [&](int k0) {
#pragma unroll
    for (int q = 0; q < A_PER; ++q) {
      const int e = tid + q * THREADS;
      int r, kk;
      if (TA) { r = e % BM; kk = e / BM; }  // A is k x m: consecutive threads walk m
      else    { kk = e % BK; r = e / BK; }  // A is m x k: consecutive threads walk k
      const int gr = row0 + r, gk = k0 + kk;
      ra[q] = (gr < m && gk < ke) ? (TA ? A[(size_t)gk * m + gr] : A[(size_t)gr * k + gk]) : 0.f;
    }
#pragma unroll
    for (int q = 0; q < B_PER; ++q) {
      const int e = tid + q * THREADS;
      int c, kk;
      if (TB) { kk = e % BK; c = e / BK; }  // B is n x k: consecutive threads walk k
      else    { c = e % BN; kk = e / BN; }  // B is k x n: consecutive threads walk n
      const int gc = col0 + c, gk = k0 + kk;
      rb[q] = (gc < n && gk < ke) ? (TB ? B[(size_t)gc * k + gk] : B[(size_t)gk * n + gc]) : 0.f;
    }
  };
  auto stash = [&]() {
#pragma unroll
    for (int q = 0; q < A_PER; ++q) {
      const int e = tid + q * THREADS;
      if (TA) As[e / BM][e % BM] = ra[q];
      else    As[e % BK][e / BK] = ra[q];
    }
#pragma unroll
    for (int q = 0; q < B_PER; ++q) {
      const int e = tid + q * THREADS;
      if (TB) Bs[e % BK][e / BK] = rb[q];
      else    Bs[e / BN][e % BN] = rb[q];
    }
  };

  if (kb < ke) fetch(kb);
  for (int k0 = kb; k0 < ke; k0 += BK) {
    stash();
    __syncthreads();
    if (k0 + BK < ke) fetch(k0 + BK);
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = As[kk][ty * TM + i];
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = Bs[kk][tx * TN + j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int r = row0 + ty * TM + i;
    if (r >= m) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int c = col0 + tx * TN + j;
      if (c >= n) continue;
      float* out = C + (size_t)r * n + c;
      *out = (beta == 0.f) ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *out;
    }
  }
}

#define SAFESTEP_GEMM(NAME, BM, BN, BK, TM, TN, TA, TB)                                    \
  extern "C" __global__ void __launch_bounds__((BM / TM) * (BN / TN))                      \
      NAME(int m, int n, int k, int kchunk, float alpha, const float* __restrict__ A,      \
           const float* __restrict__ B, float beta, float* __restrict__ C) {               \
    sgemm_tile<BM, BN, BK, TM, TN, TA, TB>(m, n, k, kchunk, alpha, A, B, beta, C);         \
  }

// 64x64 tiles, 256 threads of 4x4 outputs; 32x32 tiles, 128 threads of 4x2 outputs.
SAFESTEP_GEMM(sgemm_nn_64, 64, 64, 16, 4, 4, false, false)
SAFESTEP_GEMM(sgemm_nt_64, 64, 64, 16, 4, 4, false, true)
SAFESTEP_GEMM(sgemm_tn_64, 64, 64, 16, 4, 4, true, false)
SAFESTEP_GEMM(sgemm_nn_32, 32, 32, 16, 4, 2, false, false)
SAFESTEP_GEMM(sgemm_nt_32, 32, 32, 16, 4, 2, false, true)
SAFESTEP_GEMM(sgemm_tn_32, 32, 32, 16, 4, 2, true, false)

// Split-K epilogue: C[i] = alpha * sum_z parts[z * mn + i] + beta * C[i], z in order.
extern "C" __global__ void sgemm_splitk_reduce(const float* __restrict__ parts, int splits,
                                               long long mn, float alpha, float beta,
                                               float* __restrict__ C) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= mn) return;
  float s = 0.f;
  for (int z = 0; z < splits; ++z) s += parts[(size_t)z * mn + i];
  C[i] = (beta == 0.f) ? alpha * s : alpha * s + beta * C[i];
}

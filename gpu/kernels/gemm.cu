// Tiled single-precision GEMM in the three row-major layouts the MLP needs:
//   sgemm_nn: C[m,n] = alpha * A[m,k]   * B[k,n]   + beta * C   (dA = dZ * W)
//   sgemm_nt: C[m,n] = alpha * A[m,k]   * B[n,k]^T + beta * C   (Z = X * W^T)
//   sgemm_tn: C[m,n] = alpha * A[k,m]^T * B[k,n]   + beta * C   (dW = dZ^T * X)
// Each block computes a BM x BN tile of C from BK-deep slabs of A and B staged in shared
// memory; each thread accumulates a TM x TN register tile. Edges are zero-padded, so any
// m, n, k works (including sizes that are not multiples of the tile). Two tile shapes are
// exported per layout: 64x64 (256 threads) for large outputs and 32x32 (64 threads) for
// small outputs, where more blocks keep more SMs busy.
#include "common.cuh"

template <int BM, int BN, int BK, int TM, int TN, bool TA, bool TB>
__device__ __forceinline__ void sgemm_tile(int m, int n, int k, float alpha,
                                           const float* __restrict__ A,
                                           const float* __restrict__ B, float beta,
                                           float* __restrict__ C) {
  constexpr int THREADS = (BM / TM) * (BN / TN);
  __shared__ float As[BK][BM + 4];
  __shared__ float Bs[BK][BN + 4];
  const int tid = threadIdx.x;
  const int tx = tid % (BN / TN);
  const int ty = tid / (BN / TN);
  const int row0 = blockIdx.y * BM;
  const int col0 = blockIdx.x * BN;
  float acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

  for (int k0 = 0; k0 < k; k0 += BK) {
    // Stage A's tile as As[kk][r] = op(A)[row0 + r, k0 + kk].
#pragma unroll
    for (int e = tid; e < BM * BK; e += THREADS) {
      int r, kk;
      if (TA) { r = e % BM; kk = e / BM; }  // A is k x m: consecutive threads walk m
      else    { kk = e % BK; r = e / BK; }  // A is m x k: consecutive threads walk k
      const int gr = row0 + r, gk = k0 + kk;
      float val = 0.f;
      if (gr < m && gk < k) val = TA ? A[(size_t)gk * m + gr] : A[(size_t)gr * k + gk];
      As[kk][r] = val;
    }
    // Stage B's tile as Bs[kk][c] = op(B)[k0 + kk, col0 + c].
#pragma unroll
    for (int e = tid; e < BN * BK; e += THREADS) {
      int c, kk;
      if (TB) { kk = e % BK; c = e / BK; }  // B is n x k: consecutive threads walk k
      else    { c = e % BN; kk = e / BN; }  // B is k x n: consecutive threads walk n
      const int gc = col0 + c, gk = k0 + kk;
      float val = 0.f;
      if (gc < n && gk < k) val = TB ? B[(size_t)gc * k + gk] : B[(size_t)gk * n + gc];
      Bs[kk][c] = val;
    }
    __syncthreads();
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
      NAME(int m, int n, int k, float alpha, const float* __restrict__ A,                  \
           const float* __restrict__ B, float beta, float* __restrict__ C) {               \
    sgemm_tile<BM, BN, BK, TM, TN, TA, TB>(m, n, k, alpha, A, B, beta, C);                 \
  }

SAFESTEP_GEMM(sgemm_nn_64, 64, 64, 16, 4, 4, false, false)
SAFESTEP_GEMM(sgemm_nt_64, 64, 64, 16, 4, 4, false, true)
SAFESTEP_GEMM(sgemm_tn_64, 64, 64, 16, 4, 4, true, false)
SAFESTEP_GEMM(sgemm_nn_32, 32, 32, 16, 4, 4, false, false)
SAFESTEP_GEMM(sgemm_nt_32, 32, 32, 16, 4, 4, false, true)
SAFESTEP_GEMM(sgemm_tn_32, 32, 32, 16, 4, 4, true, false)

// Initialisation and reset: a counter-based uniform fill (splitmix64 of seed and index, so
// any element can be generated independently and the result does not depend on the launch
// shape), a constant fill and a copy.
#include "common.cuh"

__device__ __forceinline__ unsigned long long splitmix64(unsigned long long z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// x[i] = lo + (hi - lo) * u_i, u_i = top 24 bits of splitmix64(seed ^ splitmix64(i)) / 2^24.
extern "C" __global__ void fill_uniform(float* __restrict__ x, long long n,
                                        unsigned long long seed, float lo, float hi) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const unsigned long long r = splitmix64(seed ^ splitmix64((unsigned long long)i));
  const float u = (float)(r >> 40) * (1.0f / 16777216.0f);
  x[i] = lo + (hi - lo) * u;
}

// x[i] = value.
extern "C" __global__ void fill_value(float* __restrict__ x, long long n, float value) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  x[i] = value;
}

// dst[i] = src[i].
extern "C" __global__ void copy_values(const float* __restrict__ src, long long n,
                                       float* __restrict__ dst) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  dst[i] = src[i];
}

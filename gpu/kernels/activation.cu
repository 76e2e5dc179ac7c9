// Bias, ReLU and CReLU, forward and backward, plus the forward-mode (R-operator) products the
// Hessian-vector product needs, the bias gradient (column sums) and the minibatch gather.
// Matrices are row-major `rows x cols`; one thread per element.
#include "common.cuh"

// x[r, :] = images[idx[r], :]  (rows x cols), the minibatch gather.
extern "C" __global__ void gather_rows(const float* __restrict__ images,
                                       const unsigned int* __restrict__ idx, int rows,
                                       int cols, float* __restrict__ x) {
  const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= (size_t)rows * cols) return;
  const int r = (int)(e / cols), c = (int)(e % cols);
  x[e] = images[(size_t)idx[r] * cols + c];
}

// z[r, c] += b[c]  (the output layer: logits).
extern "C" __global__ void bias_forward(float* __restrict__ z, const float* __restrict__ b,
                                        int rows, int cols) {
  const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= (size_t)rows * cols) return;
  z[e] += b[e % cols];
}

// z += b; a = relu(z)  (a is rows x cols).
extern "C" __global__ void bias_relu_forward(float* __restrict__ z, const float* __restrict__ b,
                                             int rows, int cols, float* __restrict__ a) {
  const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= (size_t)rows * cols) return;
  const float v = z[e] + b[e % cols];
  z[e] = v;
  a[e] = v > 0.f ? v : 0.f;
}

// z += b; a = [relu(z), relu(-z)]  (a is rows x 2cols: the positive half, then the negative).
extern "C" __global__ void bias_crelu_forward(float* __restrict__ z, const float* __restrict__ b,
                                              int rows, int cols, float* __restrict__ a) {
  const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= (size_t)rows * cols) return;
  const int r = (int)(e / cols), c = (int)(e % cols);
  const float v = z[e] + b[c];
  z[e] = v;
  float* row = a + (size_t)r * 2 * cols;
  row[c] = v > 0.f ? v : 0.f;
  row[cols + c] = v < 0.f ? -v : 0.f;
}

// dz = da * [z > 0]  (in place on da allowed: dz may equal da).
extern "C" __global__ void relu_backward(const float* __restrict__ z, const float* da, int rows,
                                         int cols, float* dz) {
  const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= (size_t)rows * cols) return;
  dz[e] = z[e] > 0.f ? da[e] : 0.f;
}

// dz = da_pos * [z > 0] - da_neg * [z < 0], da is rows x 2cols.
extern "C" __global__ void crelu_backward(const float* __restrict__ z,
                                          const float* __restrict__ da, int rows, int cols,
                                          float* __restrict__ dz) {
  const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= (size_t)rows * cols) return;
  const int r = (int)(e / cols), c = (int)(e % cols);
  const float v = z[e];
  const float* row = da + (size_t)r * 2 * cols;
  dz[e] = v > 0.f ? row[c] : (v < 0.f ? -row[cols + c] : 0.f);
}

// Forward-mode product of ReLU: ra = rz * [z > 0] (rows x cols).
extern "C" __global__ void relu_jvp(const float* __restrict__ z, const float* __restrict__ rz,
                                    int rows, int cols, float* __restrict__ ra) {
  const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= (size_t)rows * cols) return;
  ra[e] = z[e] > 0.f ? rz[e] : 0.f;
}

// Forward-mode product of CReLU: ra = [rz * [z > 0], -rz * [z < 0]] (rows x 2cols).
extern "C" __global__ void crelu_jvp(const float* __restrict__ z, const float* __restrict__ rz,
                                     int rows, int cols, float* __restrict__ ra) {
  const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= (size_t)rows * cols) return;
  const int r = (int)(e / cols), c = (int)(e % cols);
  const float v = z[e];
  float* row = ra + (size_t)r * 2 * cols;
  row[c] = v > 0.f ? rz[e] : 0.f;
  row[cols + c] = v < 0.f ? -rz[e] : 0.f;
}

// out[c] = sum_r d[r, c]: the bias gradient, one thread per column, rows summed in order.
extern "C" __global__ void col_sum(const float* __restrict__ d, int rows, int cols,
                                   float* __restrict__ out) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float s = 0.f;
  for (int r = 0; r < rows; ++r) s += d[(size_t)r * cols + c];
  out[c] = s;
}

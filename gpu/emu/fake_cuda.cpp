// A fake CUDA driver (libcuda.so.1) that runs safestep's kernels on the CPU, for testing the
// whole CUDA path (cust, the launch wrappers, GpuMlp, the host adapter) on machines without
// a GPU. See gpu/emu/README.md. It implements the driver functions cust calls for what
// safestep does; any other function is left out (the link shim then answers "not found").
#include <ucontext.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_emu.h"

emu_dim3 threadIdx, blockIdx, blockDim, gridDim;
double emu_shuffle_slots[1024];

// The kernels, compiled as C++.
#include "../kernels/activation.cu"
#include "../kernels/adam.cu"
#include "../kernels/gemm.cu"
#include "../kernels/init.cu"
#include "../kernels/loss.cu"
#include "../kernels/reduce.cu"
#include "../kernels/wasserstein.cu"

namespace {

// ---- fibers -------------------------------------------------------------------------------
struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  unsigned tid[3];
  bool done = false;
};
ucontext_t g_sched;
std::vector<Fiber> g_fibers;
size_t g_current = 0;
bool g_cooperative = false;
void (*g_body)(void**) = nullptr;
void** g_params = nullptr;

void fiber_entry() {
  g_body(g_params);
  g_fibers[g_current].done = true;
  // returning switches to uc_link (the scheduler)
}

using Invoker = void (*)(void**);

template <typename... A, size_t... I>
void call_with(void (*k)(A...), void** p, std::index_sequence<I...>) {
  k(*static_cast<A*>(p[I])...);
}
template <typename... A>
Invoker make_invoker(void (*)(A...));

struct Kernel {
  std::string name;
  Invoker invoke;
};

std::map<std::string, Kernel>& registry();

template <auto K>
void invoke_kernel(void** p) {
  call_with(K, p, std::make_index_sequence<[]<typename... A>(void (*)(A...)) { return sizeof...(A); }(K)>{});
}

#define REG(k) {#k, Kernel{#k, &invoke_kernel<&k>}}

std::map<std::string, Kernel>& registry() {
  static std::map<std::string, Kernel> r = {
      REG(gather_rows), REG(bias_forward), REG(bias_relu_forward), REG(bias_crelu_forward),
      REG(relu_backward), REG(crelu_backward), REG(relu_jvp), REG(crelu_jvp), REG(col_sum),
      REG(adam_update), REG(precond_sqrt), REG(scale_elementwise),
      REG(sgemm_nn_64), REG(sgemm_nt_64), REG(sgemm_tn_64), REG(sgemm_nn_32), REG(sgemm_nt_32),
      REG(sgemm_tn_32), REG(sgemm_splitk_reduce),
      REG(fill_uniform), REG(fill_value), REG(copy_values),
      REG(softmax_xent), REG(loss_sum), REG(softmax_hvp),
      REG(sum_sq_partials), REG(sum_partials), REG(sample_sq_norms),
      REG(sort_prepare), REG(bitonic_global), REG(bitonic_local), REG(wasserstein_grad),
  };
  return r;
}

void run_block_sequential(Invoker inv, void** params) {
  for (unsigned z = 0; z < blockDim.z; ++z)
    for (unsigned y = 0; y < blockDim.y; ++y)
      for (unsigned x = 0; x < blockDim.x; ++x) {
        threadIdx = {x, y, z};
        inv(params);
      }
}

void run_block_fibers(Invoker inv, void** params) {
  const size_t n = size_t(blockDim.x) * blockDim.y * blockDim.z;
  g_fibers.resize(n);
  g_body = inv;
  g_params = params;
  size_t i = 0;
  for (unsigned z = 0; z < blockDim.z; ++z)
    for (unsigned y = 0; y < blockDim.y; ++y)
      for (unsigned x = 0; x < blockDim.x; ++x, ++i) {
        Fiber& f = g_fibers[i];
        f.done = false;
        f.tid[0] = x; f.tid[1] = y; f.tid[2] = z;
        if (f.stack.empty()) f.stack.resize(256 * 1024);
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack.data();
        f.ctx.uc_stack.ss_size = f.stack.size();
        f.ctx.uc_link = &g_sched;
        makecontext(&f.ctx, fiber_entry, 0);
      }
  bool live = true;
  while (live) {
    live = false;
    for (size_t k = 0; k < n; ++k) {
      if (g_fibers[k].done) continue;
      g_current = k;
      threadIdx = {g_fibers[k].tid[0], g_fibers[k].tid[1], g_fibers[k].tid[2]};
      swapcontext(&g_sched, &g_fibers[k].ctx);
      if (!g_fibers[k].done) live = true;
    }
  }
}

struct Module {
  int dummy;
};
struct Context {
  int dummy;
};
Context g_context;

}  // namespace

unsigned emu_linear_tid() {
  return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

void emu_barrier() {
  if (!g_cooperative) {
    std::fprintf(stderr, "fake libcuda: a kernel synchronised outside cooperative mode\n");
    std::abort();
  }
  swapcontext(&g_fibers[g_current].ctx, &g_sched);
}

// ---- the driver API -----------------------------------------------------------------------
extern "C" {
typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

CUresult cuInit(unsigned) { return 0; }
CUresult cuDriverGetVersion(int* v) { *v = 13000; return 0; }
CUresult cuDeviceGetCount(int* c) { *c = 1; return 0; }
CUresult cuDeviceGet(CUdevice* d, int ordinal) { if (ordinal != 0) return 101; *d = 0; return 0; }
CUresult cuDeviceGetName(char* name, int len, CUdevice) {
  std::snprintf(name, len, "safestep CPU emulation (fake libcuda)");
  return 0;
}
CUresult cuDeviceGetAttribute(int* v, int attrib, CUdevice) {
  switch (attrib) {
    case 16: *v = 132; break;  // MULTIPROCESSOR_COUNT
    case 75: *v = 9; break;    // COMPUTE_CAPABILITY_MAJOR
    case 76: *v = 0; break;    // COMPUTE_CAPABILITY_MINOR
    default: *v = 0;
  }
  return 0;
}
CUresult cuDevicePrimaryCtxRetain(void** ctx, CUdevice) { *ctx = &g_context; return 0; }
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return 0; }
CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice, unsigned) { return 0; }
CUresult cuCtxSetCurrent(void*) { return 0; }
CUresult cuCtxGetCurrent(void** c) { *c = &g_context; return 0; }
CUresult cuCtxSynchronize() { return 0; }
CUresult cuStreamCreateWithPriority(void** s, unsigned, int) { *s = new int(0); return 0; }
CUresult cuStreamCreate(void** s, unsigned) { *s = new int(0); return 0; }
CUresult cuStreamDestroy_v2(void* s) { delete static_cast<int*>(s); return 0; }
CUresult cuStreamSynchronize(void*) { return 0; }
CUresult cuModuleLoadData(void** m, const void*) { *m = new Module{0}; return 0; }
CUresult cuModuleLoadDataEx(void** m, const void*, unsigned, void*, void**) { *m = new Module{0}; return 0; }
CUresult cuModuleUnload(void* m) { delete static_cast<Module*>(m); return 0; }
CUresult cuModuleGetFunction(void** f, void*, const char* name) {
  auto it = registry().find(name);
  if (it == registry().end()) return 500;  // CUDA_ERROR_NOT_FOUND
  *f = &it->second;
  return 0;
}
CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
  void* m = std::calloc(bytes ? bytes : 1, 1);
  if (!m) return 2;  // out of memory
  *p = reinterpret_cast<CUdeviceptr>(m);
  return 0;
}
CUresult cuMemFree_v2(CUdeviceptr p) { std::free(reinterpret_cast<void*>(p)); return 0; }
CUresult cuMemsetD8_v2(CUdeviceptr p, unsigned char v, size_t n) {
  std::memset(reinterpret_cast<void*>(p), v, n);
  return 0;
}
CUresult cuMemsetD32_v2(CUdeviceptr p, unsigned v, size_t n) {
  auto* q = reinterpret_cast<unsigned*>(p);
  for (size_t i = 0; i < n; ++i) q[i] = v;
  return 0;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void* h, size_t n) {
  std::memcpy(reinterpret_cast<void*>(d), h, n);
  return 0;
}
CUresult cuMemcpyDtoH_v2(void* h, CUdeviceptr d, size_t n) {
  std::memcpy(h, reinterpret_cast<void*>(d), n);
  return 0;
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr a, CUdeviceptr b, size_t n) {
  std::memmove(reinterpret_cast<void*>(a), reinterpret_cast<void*>(b), n);
  return 0;
}
CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shared, void*, void** params, void** extra) {
  if (!f || extra || shared || bx * by * bz == 0 || bx * by * bz > 1024) return 1;  // invalid value
  const Kernel& k = *static_cast<Kernel*>(f);
  // One launch at a time: the emulated kernels share the block/thread index globals.
  static std::mutex launch_lock;
  std::lock_guard<std::mutex> guard(launch_lock);
  static const char* coop[] = {"sgemm", "loss_sum", "softmax_xent", "softmax_hvp", "sum_sq_partials",
                               "sum_partials", "sample_sq_norms", "adam_update", "bitonic_local"};
  g_cooperative = false;
  for (const char* c : coop)
    if (k.name.rfind(c, 0) == 0) g_cooperative = true;
  gridDim = {gx, gy, gz};
  blockDim = {bx, by, bz};
  for (unsigned z = 0; z < gz; ++z)
    for (unsigned y = 0; y < gy; ++y)
      for (unsigned x = 0; x < gx; ++x) {
        blockIdx = {x, y, z};
        if (g_cooperative)
          run_block_fibers(k.invoke, params);
        else
          run_block_sequential(k.invoke, params);
      }
  return 0;
}
CUresult cuGetErrorString(int, const char** s) { *s = "fake libcuda error"; return 0; }
CUresult cuGetErrorName(int, const char** s) { *s = "CUDA_ERROR_FAKE"; return 0; }
}

// CUDA kernels of the glad:: ops, multi-tensor-apply style.
//
// A call packs one record per tensor (pointers, size, dtype, first chunk) into a small
// device table (one async copy from pinned memory), then runs one kernel per pass:
//   pass 1: every block reduces its chunks into one fixed partial slot;
//   pass 2: every block sums all partial slots in the same fixed order (so all blocks,
//           and every run, see the same totals), decides on the device (no host sync)
//           and applies the update to its chunks; block 0 writes the statistics.
// The grid is capped at a constant, never at a device property, so the partial slots
// and the result depend only on the tensor sizes. Element math in float32.
#include <ATen/ATen.h>
// c10 only, not ATen/cuda/CUDAContext.h: that pulls in cuBLAS/cuSPARSE headers the kernels never use.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "../multi_tensor.h"

namespace glad {
namespace {

constexpr int kThreads = 256;       // per block (a power of two: tree reductions)
constexpr int kUnroll = 4;          // loads in flight per thread
constexpr int64_t kChunk = 16384;   // elements per chunk
constexpr int64_t kMaxBlocks = 1024;

enum DType : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

struct Meta {          // one per tensor
  void* a;             // written: grads (project), params (sam), params (restore)
  const void* b;       // read: ref_grads (project), grads (sam), backup (restore)
  void* c;             // written: backup (sam)
  int64_t numel;
  int64_t chunk_begin;  // index of the tensor's first chunk among all chunks
  int64_t dtype;
};

template <typename T>
__device__ __forceinline__ float ld(const void* p, int64_t i) {
  return static_cast<float>(static_cast<const T*>(p)[i]);
}

// The tensor holding `chunk`: the last record whose first chunk is <= chunk.
__device__ __forceinline__ const Meta& find(const Meta* meta, int n, int64_t chunk) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (meta[mid].chunk_begin <= chunk) lo = mid; else hi = mid - 1;
  }
  return meta[lo];
}

// [begin, end) of `chunk` inside its tensor.
__device__ __forceinline__ void bounds(const Meta& m, int64_t chunk, int64_t& begin, int64_t& end) {
  begin = (chunk - m.chunk_begin) * kChunk;
  end = begin + kChunk < m.numel ? begin + kChunk : m.numel;
}

// Fixed-order tree sum over the block; every thread gets the result.
template <typename V>
__device__ V block_sum(V v, V* smem) {
  smem[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) smem[threadIdx.x] += smem[threadIdx.x + s];
    __syncthreads();
  }
  const V total = smem[0];
  __syncthreads();
  return total;
}

// Pass 1 over one chunk. kDot: partial <a, b> and <a, a>; otherwise <b, b> only.
template <bool kDot, typename T>
__device__ void reduce_chunk(const Meta& m, int64_t begin, int64_t end, float& dot, float& n2) {
  int64_t i = begin + threadIdx.x;
  for (; i + (kUnroll - 1) * kThreads < end; i += kUnroll * kThreads) {
    float x[kUnroll], y[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      y[u] = ld<T>(m.b, i + u * kThreads);
      if (kDot) x[u] = ld<T>(m.a, i + u * kThreads);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (kDot) {
        dot += x[u] * y[u];
        n2 += x[u] * x[u];
      } else {
        n2 += y[u] * y[u];
      }
    }
  }
  for (; i < end; i += kThreads) {
    const float y = ld<T>(m.b, i);
    if (kDot) {
      const float x = ld<T>(m.a, i);
      dot += x * y;
      n2 += x * x;
    } else {
      n2 += y * y;
    }
  }
}

template <bool kDot>
__global__ void __launch_bounds__(kThreads) reduce_kernel(const Meta* meta, int n, int64_t chunks,
                                                          float* partial) {
  __shared__ float smem[kThreads];
  float dot = 0.f, n2 = 0.f;
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const Meta& m = find(meta, n, chunk);
    int64_t begin, end;
    bounds(m, chunk, begin, end);
    switch (m.dtype) {
      case kF32: reduce_chunk<kDot, float>(m, begin, end, dot, n2); break;
      case kF16: reduce_chunk<kDot, c10::Half>(m, begin, end, dot, n2); break;
      default: reduce_chunk<kDot, c10::BFloat16>(m, begin, end, dot, n2); break;
    }
  }
  dot = block_sum(dot, smem);
  n2 = block_sum(n2, smem);
  if (threadIdx.x == 0) {
    partial[2 * blockIdx.x] = dot;
    partial[2 * blockIdx.x + 1] = n2;
  }
}

// Pass 2 preamble: the totals of all partial slots, in one fixed order, in double.
__device__ void totals(const float* partial, int parts, double* smem, double& dot, double& n2) {
  double d = 0, s = 0;
  for (int k = threadIdx.x; k < parts; k += kThreads) {
    d += partial[2 * k];
    s += partial[2 * k + 1];
  }
  dot = block_sum(d, smem);
  n2 = block_sum(s, smem);
}

template <typename T>
__device__ void mix_chunk(const Meta& m, int64_t begin, int64_t end, float a, float alpha) {
  T* g = static_cast<T*>(m.a);
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    g[i] = static_cast<T>(a * static_cast<float>(g[i]) + alpha * ld<T>(m.b, i));
  }
}

__global__ void __launch_bounds__(kThreads) project_kernel(const Meta* meta, int n, int64_t chunks,
                                                           const float* partial, int parts, float alpha,
                                                           double delta, float* out_dot, float* out_n2,
                                                           bool* out_bad) {
  __shared__ double smem[kThreads];
  double dot, n2;
  totals(partial, parts, smem, dot, n2);
  const float dot_f = static_cast<float>(dot), n2_f = static_cast<float>(n2);
  const double c = dot < 0 ? dot / (n2 + delta) : 0.0;
  const float a = static_cast<float>(1.0 - alpha - alpha * c);
  // A vanishing ||g||^2 (delta = 0) makes the coefficient infinite: flagged like NaN/Inf sums.
  const bool bad = !isfinite(dot_f) || !isfinite(n2_f) || !isfinite(a);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    *out_dot = dot_f;
    *out_n2 = n2_f;
    *out_bad = bad;
  }
  if (bad) return;  // the grads stay as they are
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const Meta& m = find(meta, n, chunk);
    int64_t begin, end;
    bounds(m, chunk, begin, end);
    switch (m.dtype) {
      case kF32: mix_chunk<float>(m, begin, end, a, alpha); break;
      case kF16: mix_chunk<c10::Half>(m, begin, end, a, alpha); break;
      default: mix_chunk<c10::BFloat16>(m, begin, end, a, alpha); break;
    }
  }
}

template <typename T>
__device__ void perturb_chunk(const Meta& m, int64_t begin, int64_t end, float scale) {
  T* p = static_cast<T*>(m.a);
  T* backup = static_cast<T*>(m.c);
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const T v = p[i];
    backup[i] = v;
    if (scale != 0.f) p[i] = static_cast<T>(static_cast<float>(v) + scale * ld<T>(m.b, i));
  }
}

__global__ void __launch_bounds__(kThreads) perturb_kernel(const Meta* meta, int n, int64_t chunks,
                                                           const float* partial, int parts, double rho,
                                                           float* out_norm, bool* out_bad) {
  __shared__ double smem[kThreads];
  double unused, n2;
  totals(partial, parts, smem, unused, n2);
  const double norm = sqrt(n2);
  const float norm_f = static_cast<float>(norm);
  const bool bad = !isfinite(norm_f);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    *out_norm = norm_f;
    *out_bad = bad;
  }
  // Zero or non-finite norm: no perturbation (the backup is still written).
  const float scale = (bad || norm == 0) ? 0.f : static_cast<float>(rho / (norm + 1e-12));
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const Meta& m = find(meta, n, chunk);
    int64_t begin, end;
    bounds(m, chunk, begin, end);
    switch (m.dtype) {
      case kF32: perturb_chunk<float>(m, begin, end, scale); break;
      case kF16: perturb_chunk<c10::Half>(m, begin, end, scale); break;
      default: perturb_chunk<c10::BFloat16>(m, begin, end, scale); break;
    }
  }
}

template <typename T>
__device__ void copy_chunk(const Meta& m, int64_t begin, int64_t end) {
  T* dst = static_cast<T*>(m.a);
  const T* src = static_cast<const T*>(m.b);
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) dst[i] = src[i];
}

__global__ void __launch_bounds__(kThreads) copy_kernel(const Meta* meta, int n, int64_t chunks) {
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const Meta& m = find(meta, n, chunk);
    int64_t begin, end;
    bounds(m, chunk, begin, end);
    // Copies move bits: any type of the element's width is exact.
    if (m.dtype == kF32) copy_chunk<uint32_t>(m, begin, end);
    else copy_chunk<uint16_t>(m, begin, end);
  }
}

int64_t dtype_code(at::ScalarType st) {
  return st == at::kFloat ? kF32 : (st == at::kHalf ? kF16 : kBF16);
}

// The per-tensor table on the device (empty tensors left out) and the chunk count.
struct Table {
  at::Tensor device;
  int n = 0;
  int64_t chunks = 0;
};

Table make_table(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b,
                 const std::vector<at::Tensor>* c) {
  std::vector<Meta> host;
  Table table;
  for (size_t i = 0; i < a.size(); ++i) {
    const int64_t numel = a[i].numel();
    if (numel == 0) continue;
    host.push_back({a[i].data_ptr(), b[i].const_data_ptr(), c ? (*c)[i].data_ptr() : nullptr, numel,
                    table.chunks, dtype_code(a[i].scalar_type())});
    table.chunks += (numel + kChunk - 1) / kChunk;
  }
  table.n = static_cast<int>(host.size());
  if (table.n == 0) return table;
  const int64_t bytes = static_cast<int64_t>(host.size() * sizeof(Meta));
  // Pinned staging makes the copy truly asynchronous; the caching host allocator keeps
  // the block alive until the copy has run.
  auto staging = at::empty({bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  std::memcpy(staging.data_ptr(), host.data(), bytes);
  table.device = staging.to(a[0].device(), /*non_blocking=*/true);
  return table;
}

int grid_for(int64_t chunks) { return static_cast<int>(chunks < kMaxBlocks ? chunks : kMaxBlocks); }

at::Tensor scalar_like(const at::Tensor& ref, at::ScalarType dtype) {
  return at::empty({}, ref.options().dtype(dtype));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> project_interpolate_cuda(at::TensorList grads,
                                                                       at::TensorList ref_grads,
                                                                       double alpha, double delta) {
  check_pairs(grads, ref_grads, "project_interpolate_", "grads", "ref_grads");
  TORCH_CHECK(!grads.empty(), "glad::project_interpolate_: empty lists have no device; call the Python API.");
  const c10::cuda::CUDAGuard guard(grads[0].device());
  auto g = contiguous(grads);
  auto r = contiguous(ref_grads);
  auto dot = scalar_like(g[0], at::kFloat), n2 = scalar_like(g[0], at::kFloat);
  auto bad = scalar_like(g[0], at::kBool);
  const Table table = make_table(g, r, nullptr);
  if (table.n == 0) {
    dot.zero_(), n2.zero_(), bad.zero_();
    return {dot, n2, bad};
  }
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto* meta = reinterpret_cast<const Meta*>(table.device.const_data_ptr());
  const int grid = grid_for(table.chunks);
  auto partial = at::empty({2 * grid}, g[0].options().dtype(at::kFloat));
  reduce_kernel<true><<<grid, kThreads, 0, stream>>>(meta, table.n, table.chunks,
                                                     partial.mutable_data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  project_kernel<<<grid, kThreads, 0, stream>>>(meta, table.n, table.chunks, partial.const_data_ptr<float>(),
                                                grid, static_cast<float>(alpha), delta,
                                                dot.mutable_data_ptr<float>(), n2.mutable_data_ptr<float>(),
                                                bad.mutable_data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  write_back(grads, g);
  return {dot, n2, bad};
}

std::tuple<at::Tensor, at::Tensor> sam_perturb_cuda(at::TensorList params, at::TensorList grads,
                                                    at::TensorList backups, double rho) {
  check_pairs(params, grads, "sam_perturb_", "params", "grads");
  check_pairs(params, backups, "sam_perturb_", "params", "backup");
  TORCH_CHECK(!params.empty(), "glad::sam_perturb_: empty lists have no device; call the Python API.");
  const c10::cuda::CUDAGuard guard(params[0].device());
  auto p = contiguous(params);
  auto g = contiguous(grads);
  auto backup = contiguous(backups);
  auto norm = scalar_like(p[0], at::kFloat);
  auto bad = scalar_like(p[0], at::kBool);
  const Table table = make_table(p, g, &backup);
  if (table.n == 0) {
    norm.zero_(), bad.zero_();
    return {norm, bad};
  }
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto* meta = reinterpret_cast<const Meta*>(table.device.const_data_ptr());
  const int grid = grid_for(table.chunks);
  auto partial = at::empty({2 * grid}, p[0].options().dtype(at::kFloat));
  reduce_kernel<false><<<grid, kThreads, 0, stream>>>(meta, table.n, table.chunks,
                                                      partial.mutable_data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  perturb_kernel<<<grid, kThreads, 0, stream>>>(meta, table.n, table.chunks, partial.const_data_ptr<float>(),
                                                grid, rho, norm.mutable_data_ptr<float>(),
                                                bad.mutable_data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  write_back(params, p);
  write_back(backups, backup);
  return {norm, bad};
}

void sam_restore_cuda(at::TensorList params, at::TensorList backup) {
  check_pairs(params, backup, "sam_restore_", "params", "backup");
  if (params.empty()) return;
  const c10::cuda::CUDAGuard guard(params[0].device());
  auto p = contiguous(params);
  auto b = contiguous(backup);
  const Table table = make_table(p, b, nullptr);
  if (table.n > 0) {
    const auto* meta = reinterpret_cast<const Meta*>(table.device.const_data_ptr());
    copy_kernel<<<grid_for(table.chunks), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        meta, table.n, table.chunks);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  write_back(params, p);
}

}  // namespace

TORCH_LIBRARY_IMPL(glad, CUDA, m) {
  m.impl("sam_perturb_", &sam_perturb_cuda);
  m.impl("sam_restore_", &sam_restore_cuda);
  m.impl("project_interpolate_", &project_interpolate_cuda);
}

}  // namespace glad

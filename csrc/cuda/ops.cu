// CUDA kernels of the glad:: ops, multi-tensor-apply style.
//
// A call packs one record per tensor (pointers, size, dtype, first chunk) into a small
// device table (one async copy from pinned memory), then runs one kernel per pass:
//   pass 1: the chunks are dealt to kSlots virtual slots (chunk c to slot c % kSlots); each
//           slot's partial sums go to a fixed place, whichever block computes them;
//   pass 2: every block sums all partial slots in the same fixed order (so all blocks,
//           and every run, see the same totals), decides on the device (no host sync)
//           and applies the update to its chunks; block 0 writes the statistics.
// Results depend only on the tensor sizes, never on the grid, which is sized from the
// kernel's occupancy on the card (all blocks resident: no second wave). Element math in
// float32. The update passes move 16-byte vectors where every pointer of a chunk is
// 16-byte aligned (scalar head-free: chunks start at multiples of kChunk elements), else
// scalars with kUnroll loads in flight; the tensor record is read into registers once.
#include <ATen/ATen.h>
// c10 only, not ATen/cuda/CUDAContext.h: that pulls in cuBLAS/cuSPARSE headers the kernels never use.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "../multi_tensor.h"

namespace glad {
namespace {

constexpr int kThreads = 256;       // per block (a power of two: tree reductions)
constexpr int kUnroll = 4;          // loads in flight per thread on the scalar paths
constexpr int64_t kChunk = 16384;   // elements per chunk
constexpr int kSlots = 1024;        // partial-sum slots: fixed, so results never depend on the grid

enum DType : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

struct Meta {          // one per tensor
  void* a;             // written: grads (project), params (sam), params (restore)
  const void* b;       // read: ref_grads (project), grads (sam), backup (restore)
  void* c;             // written: backup (sam)
  int64_t numel;
  int64_t chunk_begin;  // index of the tensor's first chunk among all chunks
  int64_t dtype;
};

// 16 bytes of elements, moved as one load or store.
template <typename T>
struct alignas(16) Pack {
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// The record of the tensor holding `chunk` (the last whose first chunk is <= chunk), by value.
__device__ __forceinline__ Meta find(const Meta* __restrict__ meta, int n, int64_t chunk) {
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
  const T* __restrict__ a = static_cast<const T*>(m.a);
  const T* __restrict__ b = static_cast<const T*>(m.b);
  int64_t i = begin;
  if (aligned16(b + begin) && (!kDot || aligned16(a + begin))) {
    using P = Pack<T>;
    const int64_t packs = (end - begin) / P::kN;
    const P* __restrict__ bv = reinterpret_cast<const P*>(b + begin);
    const P* __restrict__ av = reinterpret_cast<const P*>(a + begin);
#pragma unroll 2
    for (int64_t k = threadIdx.x; k < packs; k += kThreads) {
      const P y = bv[k];
      P x;
      if (kDot) x = av[k];
#pragma unroll
      for (int u = 0; u < P::kN; ++u) {
        const float yf = static_cast<float>(y.v[u]);
        if (kDot) {
          const float xf = static_cast<float>(x.v[u]);
          dot += xf * yf;
          n2 += xf * xf;
        } else {
          n2 += yf * yf;
        }
      }
    }
    i = begin + packs * P::kN;
  } else {
    for (i += threadIdx.x; i + (kUnroll - 1) * kThreads < end; i += kUnroll * kThreads) {
      float x[kUnroll], y[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        y[u] = static_cast<float>(b[i + u * kThreads]);
        if (kDot) x[u] = static_cast<float>(a[i + u * kThreads]);
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
    i -= threadIdx.x;  // back to the block's position; the tail below adds it again
  }
  for (i += threadIdx.x; i < end; i += kThreads) {
    const float y = static_cast<float>(b[i]);
    if (kDot) {
      const float x = static_cast<float>(a[i]);
      dot += x * y;
      n2 += x * x;
    } else {
      n2 += y * y;
    }
  }
}

template <bool kDot>
__global__ void __launch_bounds__(kThreads) reduce_kernel(const Meta* __restrict__ meta, int n,
                                                          int64_t chunks, int parts,
                                                          float* __restrict__ partial) {
  __shared__ float smem[kThreads];
  for (int slot = blockIdx.x; slot < parts; slot += gridDim.x) {
    float dot = 0.f, n2 = 0.f;
    for (int64_t chunk = slot; chunk < chunks; chunk += parts) {
      const Meta m = find(meta, n, chunk);
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
      partial[2 * slot] = dot;
      partial[2 * slot + 1] = n2;
    }
  }
}

// Pass 2 preamble: the totals of all partial slots, in one fixed order, in double.
__device__ void totals(const float* __restrict__ partial, int parts, double* smem, double& dot, double& n2) {
  double d = 0, s = 0;
  for (int k = threadIdx.x; k < parts; k += kThreads) {
    d += partial[2 * k];
    s += partial[2 * k + 1];
  }
  dot = block_sum(d, smem);
  n2 = block_sum(s, smem);
}

// g <- a g + alpha r over [begin, end).
template <typename T>
__device__ void mix_chunk(const Meta& m, int64_t begin, int64_t end, float a, float alpha) {
  T* __restrict__ g = static_cast<T*>(m.a);
  const T* __restrict__ r = static_cast<const T*>(m.b);
  int64_t i = begin;
  if (aligned16(g + begin) && aligned16(r + begin)) {
    using P = Pack<T>;
    const int64_t packs = (end - begin) / P::kN;
    P* __restrict__ gv = reinterpret_cast<P*>(g + begin);
    const P* __restrict__ rv = reinterpret_cast<const P*>(r + begin);
#pragma unroll 2
    for (int64_t k = threadIdx.x; k < packs; k += kThreads) {
      P x = gv[k];
      const P y = rv[k];
#pragma unroll
      for (int u = 0; u < P::kN; ++u) {
        x.v[u] = static_cast<T>(a * static_cast<float>(x.v[u]) + alpha * static_cast<float>(y.v[u]));
      }
      gv[k] = x;
    }
    i = begin + packs * P::kN;
  } else {
    for (i += threadIdx.x; i + (kUnroll - 1) * kThreads < end; i += kUnroll * kThreads) {
      float x[kUnroll], y[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        x[u] = static_cast<float>(g[i + u * kThreads]);
        y[u] = static_cast<float>(r[i + u * kThreads]);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) g[i + u * kThreads] = static_cast<T>(a * x[u] + alpha * y[u]);
    }
    i -= threadIdx.x;
  }
  for (i += threadIdx.x; i < end; i += kThreads) {
    g[i] = static_cast<T>(a * static_cast<float>(g[i]) + alpha * static_cast<float>(r[i]));
  }
}

__global__ void __launch_bounds__(kThreads) project_kernel(const Meta* __restrict__ meta, int n,
                                                           int64_t chunks, const float* __restrict__ partial,
                                                           int parts, float alpha, double delta,
                                                           float* out_dot, float* out_n2, bool* out_bad) {
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
    const Meta m = find(meta, n, chunk);
    int64_t begin, end;
    bounds(m, chunk, begin, end);
    switch (m.dtype) {
      case kF32: mix_chunk<float>(m, begin, end, a, alpha); break;
      case kF16: mix_chunk<c10::Half>(m, begin, end, a, alpha); break;
      default: mix_chunk<c10::BFloat16>(m, begin, end, a, alpha); break;
    }
  }
}

// backup <- p; p <- p + scale g (p untouched, bit for bit, when scale is 0).
template <typename T>
__device__ void perturb_chunk(const Meta& m, int64_t begin, int64_t end, float scale) {
  T* __restrict__ p = static_cast<T*>(m.a);
  const T* __restrict__ g = static_cast<const T*>(m.b);
  T* __restrict__ backup = static_cast<T*>(m.c);
  const bool move = scale != 0.f;
  int64_t i = begin;
  if (aligned16(p + begin) && aligned16(g + begin) && aligned16(backup + begin)) {
    using P = Pack<T>;
    const int64_t packs = (end - begin) / P::kN;
    P* __restrict__ pv = reinterpret_cast<P*>(p + begin);
    const P* __restrict__ gv = reinterpret_cast<const P*>(g + begin);
    P* __restrict__ bv = reinterpret_cast<P*>(backup + begin);
#pragma unroll 2
    for (int64_t k = threadIdx.x; k < packs; k += kThreads) {
      P x = pv[k];
      bv[k] = x;
      if (move) {
        const P y = gv[k];
#pragma unroll
        for (int u = 0; u < P::kN; ++u) {
          x.v[u] = static_cast<T>(static_cast<float>(x.v[u]) + scale * static_cast<float>(y.v[u]));
        }
        pv[k] = x;
      }
    }
    i = begin + packs * P::kN;
  } else {
    for (i += threadIdx.x; i + (kUnroll - 1) * kThreads < end; i += kUnroll * kThreads) {
      T x[kUnroll];
      float y[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        x[u] = p[i + u * kThreads];
        y[u] = move ? static_cast<float>(g[i + u * kThreads]) : 0.f;
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        backup[i + u * kThreads] = x[u];
        if (move) p[i + u * kThreads] = static_cast<T>(static_cast<float>(x[u]) + scale * y[u]);
      }
    }
    i -= threadIdx.x;
  }
  for (i += threadIdx.x; i < end; i += kThreads) {
    const T v = p[i];
    backup[i] = v;
    if (move) p[i] = static_cast<T>(static_cast<float>(v) + scale * static_cast<float>(g[i]));
  }
}

__global__ void __launch_bounds__(kThreads) perturb_kernel(const Meta* __restrict__ meta, int n,
                                                           int64_t chunks, const float* __restrict__ partial,
                                                           int parts, double rho, float* out_norm,
                                                           bool* out_bad) {
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
    const Meta m = find(meta, n, chunk);
    int64_t begin, end;
    bounds(m, chunk, begin, end);
    switch (m.dtype) {
      case kF32: perturb_chunk<float>(m, begin, end, scale); break;
      case kF16: perturb_chunk<c10::Half>(m, begin, end, scale); break;
      default: perturb_chunk<c10::BFloat16>(m, begin, end, scale); break;
    }
  }
}

// dst <- src, bits only: W is an unsigned type of the element's width.
template <typename W>
__device__ void copy_chunk(const Meta& m, int64_t begin, int64_t end) {
  W* __restrict__ dst = static_cast<W*>(m.a);
  const W* __restrict__ src = static_cast<const W*>(m.b);
  int64_t i = begin;
  if (aligned16(dst + begin) && aligned16(src + begin)) {
    constexpr int kN = 16 / sizeof(W);
    const int64_t packs = (end - begin) / kN;
    uint4* __restrict__ dv = reinterpret_cast<uint4*>(dst + begin);
    const uint4* __restrict__ sv = reinterpret_cast<const uint4*>(src + begin);
#pragma unroll 4
    for (int64_t k = threadIdx.x; k < packs; k += kThreads) dv[k] = sv[k];
    i = begin + packs * kN;
  } else {
    for (i += threadIdx.x; i + (kUnroll - 1) * kThreads < end; i += kUnroll * kThreads) {
      W x[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) x[u] = src[i + u * kThreads];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) dst[i + u * kThreads] = x[u];
    }
    i -= threadIdx.x;
  }
  for (i += threadIdx.x; i < end; i += kThreads) dst[i] = src[i];
}

__global__ void __launch_bounds__(kThreads) copy_kernel(const Meta* __restrict__ meta, int n, int64_t chunks) {
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const Meta m = find(meta, n, chunk);
    int64_t begin, end;
    bounds(m, chunk, begin, end);
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

// Blocks that are resident at once for `kernel` on the current device (occupancy x SMs),
// asked once per kernel and device: a larger grid only queues a second wave.
int resident_blocks(const void* kernel) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, int> cache;
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(kernel, device);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int per_sm = 0, sms = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int blocks = per_sm * sms > 0 ? per_sm * sms : 1;
  cache.emplace(key, blocks);
  return blocks;
}

// The grid of `kernel` over `work` units (chunks or slots): at most what is resident at once.
int grid_for(const void* kernel, int64_t work) {
  const int64_t resident = resident_blocks(kernel);
  return static_cast<int>(work < resident ? work : resident);
}

// The number of partial-sum slots: one per chunk up to kSlots (a function of sizes only).
int slots_for(int64_t chunks) { return static_cast<int>(chunks < kSlots ? chunks : kSlots); }

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
  const int parts = slots_for(table.chunks);
  auto partial = at::empty({2 * parts}, g[0].options().dtype(at::kFloat));
  reduce_kernel<true><<<grid_for(reinterpret_cast<const void*>(&reduce_kernel<true>), parts), kThreads, 0,
                        stream>>>(meta, table.n, table.chunks, parts, partial.mutable_data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  project_kernel<<<grid_for(reinterpret_cast<const void*>(&project_kernel), table.chunks), kThreads, 0,
                   stream>>>(meta, table.n, table.chunks, partial.const_data_ptr<float>(), parts,
                             static_cast<float>(alpha), delta, dot.mutable_data_ptr<float>(),
                             n2.mutable_data_ptr<float>(), bad.mutable_data_ptr<bool>());
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
  const int parts = slots_for(table.chunks);
  auto partial = at::empty({2 * parts}, p[0].options().dtype(at::kFloat));
  reduce_kernel<false><<<grid_for(reinterpret_cast<const void*>(&reduce_kernel<false>), parts), kThreads, 0,
                         stream>>>(meta, table.n, table.chunks, parts, partial.mutable_data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  perturb_kernel<<<grid_for(reinterpret_cast<const void*>(&perturb_kernel), table.chunks), kThreads, 0,
                   stream>>>(meta, table.n, table.chunks, partial.const_data_ptr<float>(), parts, rho,
                             norm.mutable_data_ptr<float>(), bad.mutable_data_ptr<bool>());
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
    copy_kernel<<<grid_for(reinterpret_cast<const void*>(&copy_kernel), table.chunks), kThreads, 0,
                  c10::cuda::getCurrentCUDAStream()>>>(meta, table.n, table.chunks);
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

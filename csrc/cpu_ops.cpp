// CPU kernels of the glad:: ops: multi-tensor, multi-threaded, deterministic.
//
// Every list is cut into fixed pieces (make_pieces); each piece's partial sums land in
// their own slot and the slots are added in piece order, so results are identical for
// any thread count. Sums accumulate in double; element math is float32 and each
// result is rounded once to the tensor's dtype. Threads come from ATen's pool
// (OpenMP here), so torch.set_num_threads applies.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

#include "cpu_convert.h"
#include "multi_tensor.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace glad {

constexpr int64_t kChunk = 1 << 15;         // elements per piece
constexpr int64_t kSerialBelow = 1 << 15;   // smaller jobs do not wake the thread pool
constexpr int kLanes = 8;                   // independent accumulators, vectorisable

int64_t cpu_chunk_elements() { return kChunk; }

namespace {

template <typename F>
void by_dtype(at::ScalarType st, F&& f) {
  switch (st) {
    case at::kFloat: f(static_cast<float*>(nullptr)); break;
    case at::kHalf: f(static_cast<c10::Half*>(nullptr)); break;
    case at::kBFloat16: f(static_cast<c10::BFloat16*>(nullptr)); break;
    default: TORCH_CHECK(false, "glad: unsupported dtype ", st);
  }
}

// Runs fn(k) for every piece k; threads get contiguous runs of pieces of equal total size.
template <typename F>
void for_each_piece(const std::vector<Piece>& pieces, F&& fn) {
  const int64_t count = static_cast<int64_t>(pieces.size());
  std::vector<int64_t> start(count + 1, 0);
  for (int64_t k = 0; k < count; ++k) start[k + 1] = start[k] + (pieces[k].end - pieces[k].begin);
  const int64_t total = start[count];
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), count);
  if (threads <= 1 || total < kSerialBelow || at::in_parallel_region()) {
    for (int64_t k = 0; k < count; ++k) fn(k);
    return;
  }
  at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      // Pieces whose first element falls in this thread's share [lo, hi) of all elements.
      const int64_t lo = total * t / threads, hi = total * (t + 1) / threads;
      auto k = std::lower_bound(start.begin(), start.begin() + count, lo) - start.begin();
      for (; k < count && start[k] < hi; ++k) fn(k);
    }
  });
}

// Lane accumulators: element i always goes to lane i % kLanes, whatever the blocking,
// so the sums depend only on the data and the fixed pieces.
struct Lanes {
  double v[kLanes] = {};
  double total() const {
    double t = 0;
    for (int j = 0; j < kLanes; ++j) t += v[j];
    return t;
  }
};

// d += <g, r>, s += <g, g> over n floats (n a multiple of kLanes except at a piece's end).
// Products of floats are exact in double. The lanes live in locals (registers) while
// the loop runs: through the references the compiler would have to assume aliasing.
GLAD_SIMD void accumulate_dot(const float* __restrict__ g, const float* __restrict__ r, int64_t n,
                              Lanes& d_io, Lanes& s_io) {
  double d[kLanes], s[kLanes];
  for (int j = 0; j < kLanes; ++j) d[j] = d_io.v[j], s[j] = s_io.v[j];
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const double a = g[i + j], b = r[i + j];
      d[j] += a * b;
      s[j] += a * a;
    }
  }
  for (int j = 0; i < n; ++i, ++j) {
    const double a = g[i], b = r[i];
    d[j] += a * b;
    s[j] += a * a;
  }
  for (int j = 0; j < kLanes; ++j) d_io.v[j] = d[j], s_io.v[j] = s[j];
}

GLAD_SIMD void accumulate_squares(const float* __restrict__ g, int64_t n, Lanes& s_io) {
  double s[kLanes];
  for (int j = 0; j < kLanes; ++j) s[j] = s_io.v[j];
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const double a = g[i + j];
      s[j] += a * a;
    }
  }
  for (int j = 0; i < n; ++i, ++j) {
    const double a = g[i];
    s[j] += a * a;
  }
  for (int j = 0; j < kLanes; ++j) s_io.v[j] = s[j];
}

// g <- a g + alpha r and p <- p + scale g on floats.
GLAD_SIMD void axpby(float* __restrict__ g, const float* __restrict__ r, int64_t n, float a, float alpha) {
  for (int64_t i = 0; i < n; ++i) g[i] = a * g[i] + alpha * r[i];
}

GLAD_SIMD void add_scaled(float* __restrict__ p, const float* __restrict__ g, int64_t n, float scale) {
  for (int64_t i = 0; i < n; ++i) p[i] = p[i] + scale * g[i];
}

// The kernels below walk a piece in blocks of kBlock elements, converted to float.
constexpr int64_t kBlock = 1024;
static_assert(kBlock % kLanes == 0 && kChunk % kBlock == 0, "blocks must keep lanes aligned");

template <typename T>
void dot_norm(const T* g, const T* r, int64_t n, double* dot_out, double* n2_out) {
  Lanes d, s;
  float gb[kBlock], rb[kBlock];
  for (int64_t off = 0; off < n; off += kBlock) {
    const int64_t m = std::min(kBlock, n - off);
    accumulate_dot(cpu::as_float(g + off, gb, m), cpu::as_float(r + off, rb, m), m, d, s);
  }
  *dot_out = d.total();
  *n2_out = s.total();
}

template <typename T>
double sum_squares(const T* g, int64_t n) {
  Lanes s;
  float gb[kBlock];
  for (int64_t off = 0; off < n; off += kBlock) {
    const int64_t m = std::min(kBlock, n - off);
    accumulate_squares(cpu::as_float(g + off, gb, m), m, s);
  }
  return s.total();
}

// g <- a g + alpha r, rounded once to T.
template <typename T>
void mix(T* g, const T* r, int64_t n, float a, float alpha) {
  if constexpr (std::is_same_v<T, float>) {
    axpby(g, r, n, a, alpha);
  } else {
    float gb[kBlock], rb[kBlock];
    for (int64_t off = 0; off < n; off += kBlock) {
      const int64_t m = std::min(kBlock, n - off);
      cpu::to_float(g + off, gb, m);
      const float* rf = cpu::as_float(r + off, rb, m);
      axpby(gb, rf, m, a, alpha);
      cpu::store(gb, g + off, m);
    }
  }
}

// memcpy whose stores bypass the cache (x86): a destination that is only written is
// then never read in first (no read-for-ownership), which saves a third of a copy's
// memory traffic. Backups and restored parameters are not read again soon.
void stream_copy(void* dst_, const void* src_, int64_t bytes) {
  char* dst = static_cast<char*>(dst_);
  const char* src = static_cast<const char*>(src_);
#if defined(__SSE2__)
  int64_t head = (16 - static_cast<int64_t>(reinterpret_cast<uintptr_t>(dst) & 15)) & 15;
  head = std::min(head, bytes);
  std::memcpy(dst, src, head);
  dst += head, src += head, bytes -= head;
  int64_t i = 0;
  for (; i + 64 <= bytes; i += 64) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 32));
    const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 48), d);
  }
  std::memcpy(dst + i, src + i, bytes - i);
  _mm_sfence();  // streaming stores are weakly ordered: publish them before returning
#else
  std::memcpy(dst, src, bytes);
#endif
}

// backup <- p (streamed), then p <- p + scale g, rounded once to T; the piece of p is
// re-read from cache.
template <typename T>
void perturb(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ backup, int64_t n, float scale) {
  stream_copy(backup, p, n * static_cast<int64_t>(sizeof(T)));
  if constexpr (std::is_same_v<T, float>) {
    add_scaled(p, g, n, scale);
  } else {
    float pb[kBlock], gb[kBlock];
    for (int64_t off = 0; off < n; off += kBlock) {
      const int64_t m = std::min(kBlock, n - off);
      cpu::to_float(p + off, pb, m);
      const float* gf = cpu::as_float(g + off, gb, m);
      add_scaled(pb, gf, m, scale);
      cpu::store(pb, p + off, m);
    }
  }
}

std::vector<int64_t> numels(at::TensorList ts) {
  std::vector<int64_t> n;
  n.reserve(ts.size());
  for (const auto& t : ts) n.push_back(t.numel());
  return n;
}

at::Tensor scalar(double v) { return at::scalar_tensor(v, at::TensorOptions().dtype(at::kFloat)); }
at::Tensor flag(bool v) { return at::scalar_tensor(v, at::TensorOptions().dtype(at::kBool)); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> project_interpolate_cpu(at::TensorList grads,
                                                                      at::TensorList ref_grads,
                                                                      double alpha, double delta) {
  check_pairs(grads, ref_grads, "project_interpolate_", "grads", "ref_grads");
  auto g = contiguous(grads);
  auto r = contiguous(ref_grads);
  const auto pieces = make_pieces(numels(grads), kChunk);
  std::vector<double> dots(pieces.size()), n2s(pieces.size());
  for_each_piece(pieces, [&](int64_t k) {
    const Piece& pc = pieces[k];
    by_dtype(g[pc.tensor].scalar_type(), [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      const T* gp = g[pc.tensor].template const_data_ptr<T>() + pc.begin;
      const T* rp = r[pc.tensor].template const_data_ptr<T>() + pc.begin;
      dot_norm(gp, rp, pc.end - pc.begin, &dots[k], &n2s[k]);
    });
  });
  double dot = 0, n2 = 0;
  for (size_t k = 0; k < pieces.size(); ++k) {
    dot += dots[k];
    n2 += n2s[k];
  }
  const float dot_f = static_cast<float>(dot), n2_f = static_cast<float>(n2);
  const double c = dot < 0 ? dot / (n2 + delta) : 0.0;
  const float a = static_cast<float>(1.0 - alpha - alpha * c), al = static_cast<float>(alpha);
  // A vanishing ||g||^2 (delta = 0) makes the coefficient infinite: flagged like NaN/Inf sums.
  const bool nonfinite = !std::isfinite(dot_f) || !std::isfinite(n2_f) || !std::isfinite(a);
  if (!nonfinite) {  // otherwise the grads stay as they are
    for_each_piece(pieces, [&](int64_t k) {
      const Piece& pc = pieces[k];
      by_dtype(g[pc.tensor].scalar_type(), [&](auto* tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        T* gp = g[pc.tensor].template mutable_data_ptr<T>() + pc.begin;
        const T* rp = r[pc.tensor].template const_data_ptr<T>() + pc.begin;
        mix(gp, rp, pc.end - pc.begin, a, al);
      });
    });
    write_back(grads, g);
  }
  return {scalar(dot_f), scalar(n2_f), flag(nonfinite)};
}

std::tuple<at::Tensor, at::Tensor> sam_perturb_cpu(at::TensorList params, at::TensorList grads,
                                                   at::TensorList backups, double rho) {
  check_pairs(params, grads, "sam_perturb_", "params", "grads");
  check_pairs(params, backups, "sam_perturb_", "params", "backup");
  auto p = contiguous(params);
  auto g = contiguous(grads);
  auto backup = contiguous(backups);
  const auto pieces = make_pieces(numels(params), kChunk);
  std::vector<double> n2s(pieces.size());
  for_each_piece(pieces, [&](int64_t k) {
    const Piece& pc = pieces[k];
    by_dtype(g[pc.tensor].scalar_type(), [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      n2s[k] = sum_squares(g[pc.tensor].template const_data_ptr<T>() + pc.begin, pc.end - pc.begin);
    });
  });
  double n2 = 0;
  for (double v : n2s) n2 += v;
  const double norm = std::sqrt(n2);
  const float norm_f = static_cast<float>(norm);
  const bool nonfinite = !std::isfinite(norm_f);
  const float scale = (nonfinite || norm == 0) ? 0.0f : static_cast<float>(rho / (norm + 1e-12));
  for_each_piece(pieces, [&](int64_t k) {
    const Piece& pc = pieces[k];
    by_dtype(p[pc.tensor].scalar_type(), [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      T* pp = p[pc.tensor].template mutable_data_ptr<T>() + pc.begin;
      T* bp = backup[pc.tensor].template mutable_data_ptr<T>() + pc.begin;
      const int64_t n = pc.end - pc.begin;
      if (scale == 0.0f) {  // no perturbation: p stays bit for bit, and Inf/NaN in g never reach it
        stream_copy(bp, pp, n * static_cast<int64_t>(sizeof(T)));
      } else {
        perturb(pp, g[pc.tensor].template const_data_ptr<T>() + pc.begin, bp, n, scale);
      }
    });
  });
  if (scale != 0.0f) write_back(params, p);
  write_back(backups, backup);
  return {scalar(norm_f), flag(nonfinite)};
}

void sam_restore_cpu(at::TensorList params, at::TensorList backup) {
  check_pairs(params, backup, "sam_restore_", "params", "backup");
  std::vector<int64_t> sizes;
  for (size_t i = 0; i < params.size(); ++i) {
    const bool fast = params[i].is_contiguous() && backup[i].is_contiguous();
    if (!fast) params[i].copy_(backup[i]);
    sizes.push_back(fast ? params[i].numel() : 0);
  }
  const auto pieces = make_pieces(sizes, kChunk);
  for_each_piece(pieces, [&](int64_t k) {
    const Piece& pc = pieces[k];
    const int64_t item = params[pc.tensor].element_size();
    stream_copy(static_cast<char*>(params[pc.tensor].data_ptr()) + pc.begin * item,
                static_cast<const char*>(backup[pc.tensor].const_data_ptr()) + pc.begin * item,
                (pc.end - pc.begin) * item);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(glad, CPU, m) {
  m.impl("sam_perturb_", &sam_perturb_cpu);
  m.impl("sam_restore_", &sam_restore_cpu);
  m.impl("project_interpolate_", &project_interpolate_cpu);
}

}  // namespace glad

// CPU conversions between float32 and the 16-bit dtypes, a block at a time.
//
// The kernels do their math on float blocks; these turn a block of fp16/bf16 into
// floats and back. Conversions are exact (to float) or round-to-nearest-even (from
// float), exactly like c10::Half / c10::BFloat16, but vectorised: fp16 uses the F16C
// instructions when the CPU has them (checked at run time, so the build stays
// portable), bf16 is plain bit arithmetic the compiler vectorises.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GLAD_X86 1
#endif

// Hot loops get an AVX2 clone picked at load time (GCC function multi-versioning), so one
// portable build runs at full width on CPUs that have it. Each lane does the same
// operations in the same order in either clone, so results are bit-identical.
#if defined(GLAD_X86) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define GLAD_SIMD __attribute__((target_clones("avx2", "default")))
#else
#define GLAD_SIMD
#endif

namespace glad {
namespace cpu {

#ifdef GLAD_X86
__attribute__((target("avx,f16c"))) inline void half_to_float_f16c(const uint16_t* src, float* dst,
                                                                     int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

__attribute__((target("avx,f16c"))) inline void float_to_half_f16c(const float* src, uint16_t* dst,
                                                                     int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
}

inline bool has_f16c() {
  static const bool ok = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return ok;
}
#else
inline bool has_f16c() { return false; }
#endif

inline void to_float(const c10::Half* src, float* dst, int64_t n) {
#ifdef GLAD_X86
  if (has_f16c()) return half_to_float_f16c(reinterpret_cast<const uint16_t*>(src), dst, n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

inline void from_float(const float* src, c10::Half* dst, int64_t n) {
#ifdef GLAD_X86
  if (has_f16c()) return float_to_half_f16c(src, reinterpret_cast<uint16_t*>(dst), n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<c10::Half>(src[i]);
}

GLAD_SIMD static void to_float(const c10::BFloat16* src, float* dst, int64_t n) {
  const auto* bits = reinterpret_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = static_cast<uint32_t>(bits[i]) << 16;
    std::memcpy(dst + i, &u, sizeof(u));
  }
}

GLAD_SIMD static void from_float(const float* src, c10::BFloat16* dst, int64_t n) {
  auto* bits = reinterpret_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, src + i, sizeof(u));
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;  // nearest, ties to even
    bits[i] = static_cast<uint16_t>(src[i] != src[i] ? 0x7FC0u : rounded);  // NaN stays NaN
  }
}

// A float view of n elements: the data itself for float, else converted into `buffer`.
template <typename T>
inline const float* as_float(const T* src, float* buffer, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    return src;
  } else {
    to_float(src, buffer, n);
    return buffer;
  }
}

// Stores n floats from `src` into `dst` (nothing to do when they are the same floats).
template <typename T>
inline void store(const float* src, T* dst, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    if (src != dst) std::memcpy(dst, src, n * sizeof(float));
  } else {
    from_float(src, dst, n);
  }
}

}  // namespace cpu
}  // namespace glad

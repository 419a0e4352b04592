// Shared helpers of the C++ CPU kernels: 32-byte vectors (GCC/Clang extension) that may load from
// unaligned addresses, and rounding.
#pragma once

#include <cstddef>
#include <cstdint>

namespace acmix_mm {

typedef float float_vec __attribute__((vector_size(32), aligned(4)));
typedef double double_vec __attribute__((vector_size(32), aligned(8)));
template <typename T> struct VecOf;
template <> struct VecOf<float> { using type = float_vec; };
template <> struct VecOf<double> { using type = double_vec; };
template <typename T> constexpr int64_t kLanes = 32 / sizeof(T);

// The widest vectors the build targets (64 bytes with AVX-512, else 32), for kernels whose data
// layout does not depend on the width: the same arithmetic per lane, so the same results.
#if defined(__AVX512F__)
#define ACMIX_WIDE_BYTES 64
#else
#define ACMIX_WIDE_BYTES 32
#endif
typedef float float_wide __attribute__((vector_size(ACMIX_WIDE_BYTES), aligned(4)));
typedef double double_wide __attribute__((vector_size(ACMIX_WIDE_BYTES), aligned(8)));
template <typename T> struct WideOf;
template <> struct WideOf<float> { using type = float_wide; };
template <> struct WideOf<double> { using type = double_wide; };
template <typename T> constexpr int64_t kWideLanes = ACMIX_WIDE_BYTES / sizeof(T);
constexpr int64_t kVectorBytes = ACMIX_WIDE_BYTES;

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Zeroes an array of accumulators element by element: GCC zeroes an `= {}` array in memory (rep
// stos) and then keeps it there instead of in registers.
template <typename V, std::size_t A, std::size_t B>
inline void zero(V (&acc)[A][B]) {
  for (std::size_t a = 0; a < A; ++a)
    for (std::size_t b = 0; b < B; ++b) acc[a][b] = V{};
}

}  // namespace acmix_mm

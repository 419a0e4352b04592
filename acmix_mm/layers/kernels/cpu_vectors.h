// Shared helpers of the C++ CPU kernels: 32-byte vectors (GCC/Clang extension) that may load from
// unaligned addresses, and rounding.
#pragma once

#include <cstdint>

namespace acmix_mm {

typedef float float_vec __attribute__((vector_size(32), aligned(4)));
typedef double double_vec __attribute__((vector_size(32), aligned(8)));
template <typename T> struct VecOf;
template <> struct VecOf<float> { using type = float_vec; };
template <> struct VecOf<double> { using type = double_vec; };
template <typename T> constexpr int64_t kLanes = 32 / sizeof(T);

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

}  // namespace acmix_mm

// Shared helpers of the C++ CPU kernels: 32-byte vectors (GCC/Clang extension) that may load from
// unaligned addresses, and rounding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

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

// Asks for the line holding p in the second-level cache: the rows a kernel asks for ahead of a
// whole output row are more than the first level holds at detection sizes (a conv-path row at 64
// channels, 336 wide: 192 rows, 258 KB), which prefetching into it would only evict again. An asm
// statement on x86-64: GCC finds a function whose only effects are __builtin_prefetch calls pure
// and deletes the calls to it (it did so to RowWork::prefetch_rows, at -O1 and above).
inline void prefetch_line(const void* p) {
#if defined(__x86_64__) && defined(__GNUC__)
  asm volatile("prefetcht1 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 0, 2);
#endif
}

// prefetch_line for every cache line of the n elements from p.
template <typename T>
inline void prefetch_elements(const T* p, int64_t n) {
  constexpr int64_t line = 64 / sizeof(T);
  for (int64_t x = 0; x < n; x += line) prefetch_line(p + x);
  if (n > 0) prefetch_line(p + n - 1);  // the last line, where p is not line-aligned
}

// Calls f(std::integral_constant<int, n>()) for a run-time 1 <= n <= N: a register block's size
// chosen at run time, compiled for each size (n >= N runs N, n <= 1 runs 1).
template <int N, typename F>
inline void with_count(int64_t n, F&& f) {
  if constexpr (N > 1) {
    if (n < N) return with_count<N - 1>(n, std::forward<F>(f));
  }
  f(std::integral_constant<int, N>());
}

// Copies and fills of a few dozen elements as plain loops: GCC turns std::copy_n / std::fill of a
// run-time length into `rep movs` / `rep stos`, whose start-up costs more than such a copy (and
// would turn these loops into the same without the attribute).
#if defined(__GNUC__) && !defined(__clang__)
#define ACMIX_PLAIN_LOOPS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define ACMIX_PLAIN_LOOPS
#endif
template <typename T>
ACMIX_PLAIN_LOOPS void copy_short(const T* src, int64_t n, T* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}
template <typename T>
ACMIX_PLAIN_LOOPS void fill_short(T* dst, int64_t n, T value) {
  for (int64_t i = 0; i < n; ++i) dst[i] = value;
}

// Zeroes an array of accumulators element by element: GCC zeroes an `= {}` array in memory (rep
// stos) and then keeps it there instead of in registers.
template <typename V, std::size_t A, std::size_t B>
inline void zero(V (&acc)[A][B]) {
  for (std::size_t a = 0; a < A; ++a)
    for (std::size_t b = 0; b < B; ++b) acc[a][b] = V{};
}

}  // namespace acmix_mm

// Fused sliding-window attention of ACmix's ResNet variant for the CPU.
//
// For every (batch, head, output row) the k rows of keys and values that the row's windows touch
// are gathered once (reflection and the positional term folded in) into small buffers; logits,
// softmax and the weighted sum then run as contiguous loops over the row's queries, which the
// compiler vectorises. Nothing k*k times the feature map is stored: the backward recomputes the
// softmax. Semantics: acmix_mm/layers/kernels/sliding_window_python.py.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

// The shifted kernels (chunk_dot_shifted and its kin) load a row once and shift it in registers
// instead of loading it at every window offset: with AVX-512 (one 16-float vector per chunk) or
// with AVX2 and FMA (two 8-float vectors per chunk, shifted across their 128-bit halves).
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#define ACMIX_SHIFTED_KERNELS 1
#endif

#include "cpu_vectors.h"

namespace acmix_mm {
namespace {

struct Geometry {
  int64_t d, H, W, Ho, Wo, kernel, stride, dilation, pad, span;

  Geometry(const at::Tensor& q, int64_t kernel_, int64_t stride_, int64_t dilation_)
      : d(q.size(2)), H(q.size(3)), W(q.size(4)), kernel(kernel_), stride(stride_),
        dilation(dilation_) {
    Ho = (H + stride - 1) / stride;
    Wo = (W + stride - 1) / stride;
    pad = dilation * (kernel - 1) / 2;
    span = (Wo - 1) * stride + (kernel - 1) * dilation + 1;
  }
  int64_t k2() const { return kernel * kernel; }
};

inline int64_t reflect(int64_t t, int64_t size) {
  if (size == 1) return 0;
  const int64_t period = 2 * (size - 1);
  t %= period;
  if (t < 0) t += period;
  return t >= size ? period - t : t;
}

// exp for the softmax: Cephes' single-precision polynomial, written so that it vectorises.
inline float fast_exp(float x) {
  x = std::max(x, -87.0f);
  constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + round_magic) - round_magic;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(float));
  return p * two_n;
}
inline double fast_exp(double x) { return std::exp(x); }

constexpr int64_t kChunk = 16;  // queries per register block

// Strided view of one (batch, head) slice of a (B, N, d, H, W) tensor whose last stride is 1.
template <typename T>
struct Slice {
  const T* ptr;
  int64_t sc, sh;
  const T* row(int64_t c, int64_t y) const { return ptr + c * sc + y * sh; }
};

template <typename T>
Slice<T> slice(const at::Tensor& t, int64_t b, int64_t n) {
  return {t.data_ptr<T>() + b * t.stride(0) + n * t.stride(1), t.stride(2), t.stride(3)};
}


// Sums sharing one operand in chunk_dot_shared: their float accumulators (kShared * kChunk lanes)
// must stay in registers, 8 of the 32 vectors of AVX-512 and 8 of the 16 of AVX2 (float64, which
// only the tests run, takes twice as many).
constexpr int64_t kShared = ACMIX_WIDE_BYTES == 64 ? 8 : 4;

// Rows of one operand of chunk_dot_shared: row r of sum m starts at base[m] + offset[r].
template <typename T>
struct Rows {
  const T* const* base;
  const int64_t* offset;
};

// out[m][x] = sum_r a_r[x0 + x] * b_{r,m}[x0 + x] for m < M over one chunk of queries (the first
// `count` are stored): the M sums share each load of a_r and stay in registers. Rows are found
// through offset tables, so the inner loop does no index arithmetic.
template <int64_t M, typename T>
inline void chunk_dot_shared(T* const* out, int64_t count, int64_t rows, const Rows<T>& a,
                             const Rows<T>& b, int64_t x0) {
  using V = typename WideOf<T>::type;
  constexpr int64_t lanes = sizeof(V) / sizeof(T), vectors = kChunk / lanes;
  V acc[M][vectors];
  zero(acc);
  const T* a_base = a.base[0] + x0;
  const T* b_base[M];
  for (int64_t m = 0; m < M; ++m) b_base[m] = b.base[m] + x0;
  for (int64_t r = 0; r < rows; ++r) {
    const T* ar = a_base + a.offset[r];
    V av[vectors];
    for (int64_t v = 0; v < vectors; ++v) av[v] = *reinterpret_cast<const V*>(ar + v * lanes);
    const int64_t bo = b.offset[r];
    for (int64_t m = 0; m < M; ++m) {
      const T* br = b_base[m] + bo;
      for (int64_t v = 0; v < vectors; ++v)
        acc[m][v] += av[v] * *reinterpret_cast<const V*>(br + v * lanes);
    }
  }
  for (int64_t m = 0; m < M; ++m) {
    if (count == kChunk) {
      for (int64_t v = 0; v < vectors; ++v) *reinterpret_cast<V*>(out[m] + v * lanes) = acc[m][v];
    } else {  // through a buffer: indexing acc's lanes at run time would keep acc out of registers
      alignas(32) T part[kChunk];
      for (int64_t v = 0; v < vectors; ++v) *reinterpret_cast<V*>(part + v * lanes) = acc[m][v];
      copy_short(part, count, out[m]);
    }
  }
}

// chunk_dot_shared for a run-time number of sums (1 <= outs <= kShared).
template <typename T>
inline void chunk_dot_shared_n(int64_t outs, T* const* out, int64_t count, int64_t rows,
                               const Rows<T>& a, const Rows<T>& b, int64_t x0) {
  with_count<kShared>(outs, [&](auto m) {
    chunk_dot_shared<decltype(m)::value, T>(out, count, rows, a, b, x0);
  });
}

#if defined(__AVX512F__)
// chunk_dot_shared for floats whose M rows of b are one row at the offsets 0, 1, ..., M - 1
// (b.base[m] = b.base[0] + m: the window offsets j0, j0 + s, ... of one stride phase of a window
// without dilation): two loads of the row and M in-register shifts replace the M loads, each of
// which crossed a cache line. The same products and sums, so the same results. Reads up to
// 2 * kChunk elements from each row start (the buffers hold the slack). Where `peak` is given,
// peak[x0 + x] becomes the maximum of itself and the M sums (the softmax's running maximum).
template <int64_t M, int... S>
inline void chunk_dot_shifted(float* const* out, int64_t rows, const Rows<float>& a,
                              const Rows<float>& b, int64_t x0, float* peak,
                              std::integer_sequence<int, S...>) {
  static_assert(kChunk == 16, "one vector of 16 floats per chunk");
  __m512 acc[M];
  for (int64_t m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
  const float* a_base = a.base[0] + x0;
  const float* b_base = b.base[0] + x0;
  for (int64_t r = 0; r < rows; ++r) {
    const __m512 av = _mm512_loadu_ps(a_base + a.offset[r]);
    const float* br = b_base + b.offset[r];
    const __m512i lo = _mm512_castps_si512(_mm512_loadu_ps(br));
    const __m512i hi = _mm512_castps_si512(_mm512_loadu_ps(br + kChunk));
    ((acc[S] = _mm512_fmadd_ps(av, _mm512_castsi512_ps(_mm512_alignr_epi32(hi, lo, S)), acc[S])),
     ...);
  }
  for (int64_t m = 0; m < M; ++m) _mm512_storeu_ps(out[m], acc[m]);
  if (peak) {
    __m512 top = _mm512_loadu_ps(peak + x0);
    for (int64_t m = 0; m < M; ++m) top = _mm512_max_ps(top, acc[m]);
    _mm512_storeu_ps(peak + x0, top);
  }
}

// Stores the first `count` (<= kChunk) lanes of each of the M accumulators at out[m].
template <int64_t M>
inline void store_chunks(float* const* out, int64_t count, const __m512 (&acc)[M]) {
  const __mmask16 keep = count >= kChunk ? __mmask16(0xFFFF) : __mmask16((1u << count) - 1);
  for (int64_t m = 0; m < M; ++m) _mm512_mask_storeu_ps(out[m], keep, acc[m]);
}

// weighted_sums' chunk for floats whose window offsets j of window row i read one row at the
// offsets window_offsets[i * k] + j (stride 1, no dilation): out[m][x] = sum over o = i * k + j of
// weights_o[x0 + x] * row_m_i[x0 + x + j], the M rows of window row i loaded twice and shifted in
// registers instead of loaded k times across cache lines. The same products summed in the same
// order as chunk_dot_shared, so the same results. Stores `count` (<= kChunk) outputs.
template <int64_t M, int... J>
inline void chunk_weighted_shifted(float* const* out, int64_t count,
                                   const float* weights, const int64_t* weight_offsets,
                                   const float* const* rows, const int64_t* window_offsets,
                                   int64_t x0, std::integer_sequence<int, J...>) {
  static_assert(kChunk == 16, "one vector of 16 floats per chunk");
  constexpr int64_t K = sizeof...(J);
  __m512 acc[M];
  for (int64_t m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
  for (int64_t i = 0; i < K; ++i) {
    __m512i lo[M], hi[M];
    for (int64_t m = 0; m < M; ++m) {
      const float* r = rows[m] + window_offsets[i * K] + x0;
      lo[m] = _mm512_castps_si512(_mm512_loadu_ps(r));
      hi[m] = _mm512_castps_si512(_mm512_loadu_ps(r + kChunk));
    }
    const float* w = weights + x0;
    const int64_t* wo = weight_offsets + i * K;
    auto tap = [&](auto j) {
      constexpr int shift = decltype(j)::value;
      const __m512 wv = _mm512_loadu_ps(w + wo[shift]);
      for (int64_t m = 0; m < M; ++m)
        acc[m] = _mm512_fmadd_ps(
            wv, _mm512_castsi512_ps(_mm512_alignr_epi32(hi[m], lo[m], shift)), acc[m]);
    };
    (tap(std::integral_constant<int, J>()), ...);
  }
  store_chunks(out, count, acc);
}

// window_transpose's chunk for floats at stride 1 without dilation: the gradient of window row
// i's gathered columns m0 + x, out[m][x] = sum over j of w_(i,j)[m0 + x - j] * a_m[m0 + x - j],
// the rows a_m (query-indexed, at least kChunk zeros before their start) loaded twice and shifted
// in registers instead of loaded k times across cache lines. The same products summed in the same
// order as chunk_dot_shared, so the same results. Stores `count` (<= kChunk) outputs.
template <int64_t M, int... J>
inline void chunk_transpose_shifted(float* const* out, int64_t count, const float* weights,
                                    const int64_t* weight_offsets, const float* const* rows,
                                    int64_t m0, std::integer_sequence<int, J...>) {
  static_assert(kChunk == 16, "one vector of 16 floats per chunk");
  __m512 acc[M];
  __m512i lo[M], hi[M];
  for (int64_t m = 0; m < M; ++m) {
    acc[m] = _mm512_setzero_ps();
    lo[m] = _mm512_castps_si512(_mm512_loadu_ps(rows[m] + m0 - kChunk));
    hi[m] = _mm512_castps_si512(_mm512_loadu_ps(rows[m] + m0));
  }
  auto tap = [&](auto j) {
    constexpr int back = decltype(j)::value;
    const __m512 wv = _mm512_loadu_ps(weights + weight_offsets[back] + m0 - back);
    for (int64_t m = 0; m < M; ++m) {
      __m512 a;
      if constexpr (back == 0)
        a = _mm512_castsi512_ps(hi[m]);
      else
        a = _mm512_castsi512_ps(_mm512_alignr_epi32(hi[m], lo[m], kChunk - back));
      acc[m] = _mm512_fmadd_ps(wv, a, acc[m]);
    }
  };
  (tap(std::integral_constant<int, J>()), ...);
  store_chunks(out, count, acc);
}

#elif defined(ACMIX_SHIFTED_KERNELS)
// AVX2 (two 8-float vectors per chunk of 16): lanes S .. S + 7 of the 16 lanes of (a, b), with
// t = middle(a, b) (lanes 4 .. 11); at most one shuffle each (vpalignr works within 128-bit
// halves, which t supplies across).
inline __m256 middle(__m256 a, __m256 b) { return _mm256_permute2f128_ps(a, b, 0x21); }

template <int S>
inline __m256 lanes_from(__m256 a, __m256 t, __m256 b) {
  static_assert(0 <= S && S <= 8, "a shift within the first vector");
  auto align = [](__m256 hi, __m256 lo, auto bytes) {
    return _mm256_castsi256_ps(_mm256_alignr_epi8(_mm256_castps_si256(hi),
                                                  _mm256_castps_si256(lo), decltype(bytes)::value));
  };
  if constexpr (S == 0) return a;
  else if constexpr (S < 4) return align(t, a, std::integral_constant<int, 4 * S>());
  else if constexpr (S == 4) return t;
  else if constexpr (S < 8) return align(b, t, std::integral_constant<int, 4 * (S - 4)>());
  else return b;
}

// A chunk of 16 floats in two vectors, and the row it is read from shifted by 0 .. 8 lanes.
struct Chunk2 {
  __m256 lo, hi;
};
struct Window3 {
  __m256 v0, v1, v2, t01, t12;  // lanes 0 .. 23 of a row and middle(v0, v1), middle(v1, v2)
  explicit Window3(const float* p)
      : v0(_mm256_loadu_ps(p)), v1(_mm256_loadu_ps(p + 8)), v2(_mm256_loadu_ps(p + 16)),
        t01(middle(v0, v1)), t12(middle(v1, v2)) {}
  template <int S>
  Chunk2 at() const { return {lanes_from<S>(v0, t01, v1), lanes_from<S>(v1, t12, v2)}; }
};

inline void fmadd_chunk(Chunk2& acc, const Chunk2& a, const Chunk2& b) {
  acc.lo = _mm256_fmadd_ps(a.lo, b.lo, acc.lo);
  acc.hi = _mm256_fmadd_ps(a.hi, b.hi, acc.hi);
}
inline Chunk2 load_chunk(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline Chunk2 zero_chunk() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }

// Stores the first `count` (<= kChunk) lanes of acc at out.
inline void store_chunk(float* out, int64_t count, const Chunk2& acc) {
  if (count >= kChunk) {
    _mm256_storeu_ps(out, acc.lo);
    _mm256_storeu_ps(out + 8, acc.hi);
    return;
  }
  alignas(32) float part[kChunk];
  _mm256_store_ps(part, acc.lo);
  _mm256_store_ps(part + 8, acc.hi);
  copy_short(part, count, out);
}

// chunk_dot_shifted (see the AVX-512 version) with the row's 24 lanes loaded once: shifts S < 8.
template <int64_t M, int... S>
inline void chunk_dot_shifted(float* const* out, int64_t rows, const Rows<float>& a,
                              const Rows<float>& b, int64_t x0, float* peak,
                              std::integer_sequence<int, S...>) {
  static_assert(kChunk == 16 && M <= 8, "two vectors of 8 floats per chunk, shifts below 8");
  Chunk2 acc[M];
  for (int64_t m = 0; m < M; ++m) acc[m] = zero_chunk();
  const float* a_base = a.base[0] + x0;
  const float* b_base = b.base[0] + x0;
  for (int64_t r = 0; r < rows; ++r) {
    const Chunk2 av = load_chunk(a_base + a.offset[r]);
    const Window3 row(b_base + b.offset[r]);
    (fmadd_chunk(acc[S], av, row.template at<S>()), ...);
  }
  for (int64_t m = 0; m < M; ++m) store_chunk(out[m], kChunk, acc[m]);
  if (peak) {
    Chunk2 top = load_chunk(peak + x0);
    for (int64_t m = 0; m < M; ++m) {
      top.lo = _mm256_max_ps(top.lo, acc[m].lo);
      top.hi = _mm256_max_ps(top.hi, acc[m].hi);
    }
    store_chunk(peak + x0, kChunk, top);
  }
}

// Calls f(std::integral_constant<int64_t, P>(), m) for the channels m, m + P - 1 of 0 .. M - 1
// in pairs (P = 2) and, for an odd M, the last one alone (P = 1).
template <int64_t M, typename F>
inline void in_pairs(F&& f) {
  int64_t m = 0;
  for (; m + 1 < M; m += 2) f(std::integral_constant<int64_t, 2>(), m);
  if (m < M) f(std::integral_constant<int64_t, 1>(), m);
}

// chunk_weighted_shifted (see the AVX-512 version) for P <= 2 channels at a time, each with its
// window row loaded once (five vectors), so that four sums are in flight and the 16 registers
// suffice. The same products summed in the same order as chunk_dot_shared.
template <int64_t P, int... J>
inline void weighted_pair(float* const* out, int64_t count, const float* weights,
                          const int64_t* weight_offsets, const float* const* rows,
                          const int64_t* window_offsets, int64_t x0,
                          std::integer_sequence<int, J...>) {
  constexpr int64_t K = sizeof...(J);
  Chunk2 acc[P];
  for (int64_t m = 0; m < P; ++m) acc[m] = zero_chunk();
  const float* w = weights + x0;
  for (int64_t i = 0; i < K; ++i) {
    const int64_t* wo = weight_offsets + i * K;
    const Window3 r0(rows[0] + window_offsets[i * K] + x0);
    const Window3 r1(rows[P - 1] + window_offsets[i * K] + x0);
    auto tap = [&](auto j) {
      constexpr int shift = decltype(j)::value;
      const Chunk2 wv = load_chunk(w + wo[shift]);
      fmadd_chunk(acc[0], wv, r0.template at<shift>());
      if constexpr (P == 2) fmadd_chunk(acc[1], wv, r1.template at<shift>());
    };
    (tap(std::integral_constant<int, J>()), ...);
  }
  for (int64_t m = 0; m < P; ++m) store_chunk(out[m], count, acc[m]);
}

template <int64_t M, int... J>
inline void chunk_weighted_shifted(float* const* out, int64_t count,
                                   const float* weights, const int64_t* weight_offsets,
                                   const float* const* rows, const int64_t* window_offsets,
                                   int64_t x0, std::integer_sequence<int, J...> window) {
  static_assert(kChunk == 16 && sizeof...(J) <= 8, "two vectors of 8 floats per chunk");
  in_pairs<M>([&](auto p, int64_t m) {
    weighted_pair<decltype(p)::value>(out + m, count, weights, weight_offsets, rows + m,
                                      window_offsets, x0, window);
  });
}

// chunk_transpose_shifted (see the AVX-512 version), P <= 2 channels at a time as in
// weighted_pair: lanes m0 - back .. m0 - back + 15 of a row are lanes 8 - back .. of its
// lanes m0 - 8 .. m0 + 15.
template <int64_t P, int... J>
inline void transpose_pair(float* const* out, int64_t count, const float* weights,
                           const int64_t* weight_offsets, const float* const* rows, int64_t m0,
                           std::integer_sequence<int, J...>) {
  Chunk2 acc[P];
  for (int64_t m = 0; m < P; ++m) acc[m] = zero_chunk();
  const Window3 r0(rows[0] + m0 - 8);
  const Window3 r1(rows[P - 1] + m0 - 8);
  auto tap = [&](auto j) {
    constexpr int back = decltype(j)::value;
    const Chunk2 wv = load_chunk(weights + weight_offsets[back] + m0 - back);
    fmadd_chunk(acc[0], wv, r0.template at<8 - back>());
    if constexpr (P == 2) fmadd_chunk(acc[1], wv, r1.template at<8 - back>());
  };
  (tap(std::integral_constant<int, J>()), ...);
  for (int64_t m = 0; m < P; ++m) store_chunk(out[m], count, acc[m]);
}

template <int64_t M, int... J>
inline void chunk_transpose_shifted(float* const* out, int64_t count, const float* weights,
                                    const int64_t* weight_offsets, const float* const* rows,
                                    int64_t m0, std::integer_sequence<int, J...> window) {
  static_assert(kChunk == 16 && sizeof...(J) <= 8, "two vectors of 8 floats per chunk");
  in_pairs<M>([&](auto p, int64_t m) {
    transpose_pair<decltype(p)::value>(out + m, count, weights, weight_offsets, rows + m, m0,
                                       window);
  });
}

#endif

#ifdef ACMIX_SHIFTED_KERNELS
// The window sizes the shifted kernels are compiled for.
inline bool shifted_window(int64_t kernel) { return kernel == 3 || kernel == 5 || kernel == 7; }

// Calls f(std::integral_constant<int, K>(), std::integral_constant<int, M>()) for a window size
// K of shifted_window and 1 <= outs = M <= kShared.
template <typename F>
inline void with_window_and_count(int64_t kernel, int64_t outs, F&& f) {
  auto run = [&](auto k) { with_count<kShared>(outs, [&](auto m) { f(k, m); }); };
  TORCH_CHECK(shifted_window(kernel), "acmix_mm: no shifted kernel for window size ", kernel);
  if (kernel == 7)
    run(std::integral_constant<int, 7>());
  else if (kernel == 5)
    run(std::integral_constant<int, 5>());
  else
    run(std::integral_constant<int, 3>());
}

inline void chunk_dot_shifted_n(int64_t outs, float* const* out, int64_t rows,
                                const Rows<float>& a, const Rows<float>& b, int64_t x0,
                                float* peak) {
  with_count<kShared>(outs, [&](auto n) {
    constexpr int N = decltype(n)::value;
    chunk_dot_shifted<N>(out, rows, a, b, x0, peak, std::make_integer_sequence<int, N>());
  });
}

#endif

// std::allocator with 64-byte alignment: with row lengths in whole chunks, the rows of RowWork's
// buffers start on cache lines, so whole-chunk loads do not cross lines.
template <typename T>
struct LineAligned {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  LineAligned() = default;
  template <typename U>
  LineAligned(const LineAligned<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, kAlign); }
  template <typename U>
  bool operator==(const LineAligned<U>&) const { return true; }
  template <typename U>
  bool operator!=(const LineAligned<U>&) const { return false; }
};
template <typename T>
using Buffer = std::vector<T, LineAligned<T>>;

// Per-row workspace. Query-indexed rows (scaled queries, output gradients, attention weights, logit
// gradients) hold `lead` zeros (the window's reach rounded up to a chunk), then `padded_wo`
// queries, then zeros; every row length is a whole number of chunks. Key-indexed rows hold the
// reflected window columns of one input row of keys (minus pe) or values for every channel; they
// live in a cache of slots, so consecutive output rows gather each input row once. With a
// stride s > 1 each key-indexed row is kept split into its s phases instead (columns p, p + s,
// ...), so that the queries of a chunk read their window columns at unit stride.
template <typename T>
struct RowWork {
  const Geometry& g;
  int64_t padded_wo, lead, qlen, klen, phase_len, num_slots, tick = 0;
  std::vector<int64_t> cols, rows, slot_of, slot_key, slot_age;
  std::vector<std::vector<int64_t>> phase_offsets;  // [p]: the j with j * dilation = p (mod s)
  Buffer<T> keys, values, key_phases, value_phases, query, grad, attn, dattn, total;
  Buffer<T> transposed;  // kShared rows of one phase, for window_transpose
  // Offsets for chunk_dot_shared: of the query-indexed rows of channel c (c * qlen) and of
  // window offset o's row (o * qlen); of the key / value rows of channel c in their buffer, and
  // of window offset o = i * k + j of channel 0 (set by gather).
  std::vector<int64_t> query_offsets, weight_offsets, channel_offsets, window_offsets;
  std::vector<int64_t> scratch_a, scratch_b;  // window_transpose's tables

  explicit RowWork(const Geometry& geo)
      : g(geo), rows(geo.kernel), slot_of(geo.kernel), phase_offsets(geo.stride) {
    for (int64_t j = 0; j < g.kernel; ++j)
      phase_offsets[(j * g.dilation) % g.stride].push_back(j);
    padded_wo = round_up(g.Wo, kChunk);
    const int64_t reach = (g.kernel - 1) * g.dilation;
    lead = round_up(reach, kChunk);
    qlen = lead + round_up(std::max(padded_wo, g.span), kChunk) + kChunk;
    klen = round_up(std::max(g.span, (padded_wo - 1) * g.stride + reach + 1), kChunk);
    num_slots = 2 * g.kernel;
    cols.resize(g.span);
    for (int64_t x = 0; x < g.span; ++x) cols[x] = reflect(x - g.pad, g.W);
    slot_key.assign(num_slots, -1);
    slot_age.assign(num_slots, -1);
    const int64_t full_rows = g.stride == 1 ? num_slots * g.d * klen : 0;  // else phases only
    keys.assign(full_rows + 2 * kChunk, T(0));  // slack for chunk_dot_shifted's reads
    values.assign(full_rows + 2 * kChunk, T(0));
    phase_len = g.stride == 1 ? 0 : round_up(reach / g.stride + padded_wo + 1, kChunk);
    key_phases.assign(num_slots * g.d * g.stride * phase_len + 2 * kChunk, T(0));
    value_phases.assign(num_slots * g.d * g.stride * phase_len + 2 * kChunk, T(0));
    query.assign(g.d * qlen, T(0));
    grad.assign(g.d * qlen, T(0));
    attn.assign(g.k2() * qlen, T(0));
    transposed.assign(kShared * round_up((g.span + g.stride - 1) / g.stride, kChunk), T(0));
    dattn.assign(g.k2() * qlen, T(0));
    total.assign(padded_wo, T(0));
    const int64_t channel_stride = g.stride == 1 ? klen : g.stride * phase_len;
    for (int64_t c = 0; c < g.d; ++c) {
      query_offsets.push_back(c * qlen);
      channel_offsets.push_back(c * channel_stride);
    }
    for (int64_t o = 0; o < g.k2(); ++o) weight_offsets.push_back(o * qlen);
    window_offsets.resize(g.k2());
    scratch_a.resize(g.kernel);
    scratch_b.resize(g.kernel);
  }

  T* key_row(int64_t c, int64_t i) { return keys.data() + (slot_of[i] * g.d + c) * klen; }
  T* value_row(int64_t c, int64_t i) { return values.data() + (slot_of[i] * g.d + c) * klen; }
  // The key (value) rows as the windows read them: the full rows, or their stride phases.
  const T* key_buffer() const { return g.stride == 1 ? keys.data() : key_phases.data(); }
  const T* value_buffer() const { return g.stride == 1 ? values.data() : value_phases.data(); }
  // window_offsets[o]: for every channel c, p[x] = key_row(c, i)[j * dilation + x * stride] with
  // p = key_buffer() + channel_offsets[c] + window_offsets[i * k + j] (values likewise).
  void set_window_offsets() {
    for (int64_t i = 0; i < g.kernel; ++i)
      for (int64_t j = 0; j < g.kernel; ++j) {
        const int64_t off = j * g.dilation, row = slot_of[i] * g.d;
        window_offsets[i * g.kernel + j] =
            g.stride == 1 ? row * klen + off
                          : (row * g.stride + off % g.stride) * phase_len + off / g.stride;
      }
  }
  T* query_row(int64_t c) { return query.data() + c * qlen + lead; }
  T* grad_row(int64_t c) { return grad.data() + c * qlen + lead; }
  T* attn_row(int64_t o) { return attn.data() + o * qlen + lead; }
  T* dattn_row(int64_t o) { return dattn.data() + o * qlen + lead; }

  // Fills the query rows of output row yo and points slot_of[i] at the key / value rows of its
  // window row i (bn: the batch-head slice, which keys the cache).
  void gather(const Slice<T>& q, const Slice<T>& k, const Slice<T>& v, const T* pe, T scale,
              int64_t bn, int64_t yo) {
    ++tick;
    for (int64_t c = 0; c < g.d; ++c) {
      const T* qr = q.row(c, yo * g.stride);
      T* qo = query_row(c);
      if (g.stride == 1) {  // unit stride known to the compiler, so that the loop vectorises
        for (int64_t x = 0; x < g.Wo; ++x) qo[x] = qr[x] * scale;
      } else {
        for (int64_t x = 0; x < g.Wo; ++x) qo[x] = qr[x * g.stride] * scale;
      }
    }
    for (int64_t i = 0; i < g.kernel; ++i) {
      rows[i] = reflect(yo * g.stride - g.pad + i * g.dilation, g.H);
      slot_of[i] = -1;
      for (int64_t s = 0; s < num_slots; ++s)
        if (slot_key[s] == bn * g.H + rows[i]) slot_of[i] = s;
      if (slot_of[i] >= 0) slot_age[slot_of[i]] = tick;
    }
    for (int64_t i = 0; i < g.kernel; ++i) {
      if (slot_of[i] >= 0) continue;
      int64_t oldest = 0;
      for (int64_t s = 1; s < num_slots; ++s)
        if (slot_age[s] < slot_age[oldest]) oldest = s;
      slot_of[i] = oldest;
      slot_key[oldest] = bn * g.H + rows[i];
      slot_age[oldest] = tick;
      for (int64_t j = i + 1; j < g.kernel; ++j)
        if (rows[j] == rows[i]) slot_of[j] = oldest;
      fill_slot(k, v, pe, i);
    }
    set_window_offsets();
    if (yo + 1 < g.Ho) prefetch_rows(q, k, v, pe, yo + 1);
  }

  // Calls f(r) for each input row r that output row yo's windows read and the last gathered
  // row's did not (one at stride 1).
  template <typename F>
  void for_new_rows(int64_t yo, F&& f) const {
    for (int64_t i = 0; i < g.kernel; ++i) {
      const int64_t r = reflect(yo * g.stride - g.pad + i * g.dilation, g.H);
      if (std::find(rows.begin(), rows.end(), r) == rows.end()) f(r);
    }
  }

  // Asks for the rows that gathering output row yo will read first (for_new_rows' key, value
  // and pe rows, and the query rows), while this row computes: each is a row of another channel
  // plane, more streams than the hardware prefetcher follows. Their misses were over half of
  // gather's time at 64 channels, 56x56.
  void prefetch_rows(const Slice<T>& q, const Slice<T>& k, const Slice<T>& v, const T* pe,
                     int64_t yo) const {
    for_new_rows(yo, [&](int64_t r) {
      for (int64_t c = 0; c < g.d; ++c) {
        prefetch_elements(k.row(c, r), g.W);
        prefetch_elements(v.row(c, r), g.W);
        if (pe != nullptr) prefetch_elements(pe + (c * g.H + r) * g.W, g.W);
      }
    });
    for (int64_t c = 0; c < g.d; ++c) prefetch_elements(q.row(c, yo * g.stride), g.W);
  }

  void fill_slot(const Slice<T>& k, const Slice<T>& v, const T* pe, int64_t i) {
    // Columns pad .. pad + W - 1 are the row itself; only the borders are reflected.
    const int64_t lo = std::min(g.pad, g.span), hi = std::max(lo, std::min(g.pad + g.W, g.span));
    for (int64_t c = 0; c < g.d; ++c) {
      const T* kr = k.row(c, rows[i]);
      const T* vr = v.row(c, rows[i]);
      const T* pr = pe == nullptr ? nullptr : pe + (c * g.H + rows[i]) * g.W;
      if (g.stride > 1) {
        const int64_t at = (slot_of[i] * g.d + c) * g.stride * phase_len;
        fill_phases(kr, vr, pr, key_phases.data() + at, value_phases.data() + at, lo, hi);
        continue;
      }
      T* kd = key_row(c, i);
      T* vd = value_row(c, i);
      auto reflected = [&](int64_t x) {
        kd[x] = pr == nullptr ? kr[cols[x]] : kr[cols[x]] - pr[cols[x]];
        vd[x] = vr[cols[x]];
      };
      for (int64_t x = 0; x < lo; ++x) reflected(x);
      for (int64_t x = hi; x < g.span; ++x) reflected(x);
      const T* kin = kr - g.pad;
      const T* vin = vr - g.pad;
      if (pr == nullptr) {
        for (int64_t x = lo; x < hi; ++x) kd[x] = kin[x];
      } else {
        const T* pin = pr - g.pad;
        for (int64_t x = lo; x < hi; ++x) kd[x] = kin[x] - pin[x];
      }
      for (int64_t x = lo; x < hi; ++x) vd[x] = vin[x];
    }
  }

  // The stride phases of one channel's reflected key (minus pe) and value rows, straight from
  // the input rows: phase p holds the columns p, p + s, ... below span (the columns lo .. hi - 1
  // read the row itself at stride s, the others through the reflection); the columns from span
  // on stay zero.
  void fill_phases(const T* kr, const T* vr, const T* pr, T* kd, T* vd, int64_t lo, int64_t hi) {
    const int64_t s = g.stride;
    for (int64_t p = 0; p < s; ++p, kd += phase_len, vd += phase_len) {
      const int64_t n = (g.span - p + s - 1) / s;
      const int64_t a = std::min(n, (lo - p + s - 1) / s);  // the first column >= lo
      const int64_t e = std::min(n, std::max(a, (hi - p + s - 1) / s));  // the first >= hi
      auto reflected = [&](int64_t x) {
        const int64_t col = cols[p + s * x];
        kd[x] = pr == nullptr ? kr[col] : kr[col] - pr[col];
        vd[x] = vr[col];
      };
      for (int64_t x = 0; x < a; ++x) reflected(x);
      for (int64_t x = e; x < n; ++x) reflected(x);
      const int64_t first = p + s * a - g.pad;  // input column of x = a
      if (s == 2) {
        strided_copy<2>(kr + first, pr == nullptr ? nullptr : pr + first, vr + first, s,
                        kd + a, vd + a, e - a);
      } else {
        strided_copy<0>(kr + first, pr == nullptr ? nullptr : pr + first, vr + first, s,
                        kd + a, vd + a, e - a);
      }
    }
  }

  // kd[x] = k[x * s] - p[x * s] (k alone without p), vd[x] = v[x * s] for x < n; S: s known at
  // compile time (so that the loops vectorise), or 0.
  template <int S>
  static void strided_copy(const T* k, const T* p, const T* v, int64_t s, T* kd, T* vd,
                           int64_t n) {
    const int64_t step = S > 0 ? S : s;
    if (p == nullptr) {
      for (int64_t x = 0; x < n; ++x) kd[x] = k[x * step];
    } else {
      for (int64_t x = 0; x < n; ++x) kd[x] = k[x * step] - p[x * step];
    }
    for (int64_t x = 0; x < n; ++x) vd[x] = v[x * step];
  }

  // out_rows(o)[x] = sum_c a_c[x] * window_c(o)[x] for every window offset o = i * k + j, with
  // a_c = a + query_offsets[c] (a query-indexed buffer) and windows of the key or value buffer.
  // Returns whether it also left in `peak` (padded_wo entries, -inf before the call) the maximum
  // over o of out_rows(o)[x]; where peak is null, or the kernel has no fused maximum, it did not.
  template <typename ORow>
  bool window_dots(const T* a, const T* buffer, const ORow& out_rows, T* peak = nullptr) {
    const T* a_base[1] = {a};
#ifdef ACMIX_SHIFTED_KERNELS
    if constexpr (std::is_same_v<T, float>) {
      if (g.dilation == 1) {  // offsets j = p, p + s, ... of phase p: rows one element apart
        for (int64_t i = 0; i < g.kernel; ++i)
          for (int64_t p = 0; p < std::min(g.stride, g.kernel); ++p)
            for (int64_t j0 = p; j0 < g.kernel; j0 += kShared * g.stride) {
              const int64_t outs = std::min(kShared, (g.kernel - j0 + g.stride - 1) / g.stride);
              const T* b_base[1] = {buffer + window_offsets[i * g.kernel + j0]};
              for (int64_t x0 = 0; x0 < padded_wo; x0 += kChunk) {
                T* out[kShared];
                for (int64_t m = 0; m < outs; ++m)
                  out[m] = out_rows(i * g.kernel + j0 + m * g.stride) + x0;
                chunk_dot_shifted_n(outs, out, g.d, {a_base, query_offsets.data()},
                                    {b_base, channel_offsets.data()}, x0, peak);
              }
            }
        return peak != nullptr;
      }
    }
#endif
    for (int64_t i = 0; i < g.kernel; ++i) {
      for (int64_t j0 = 0; j0 < g.kernel; j0 += kShared) {
        const int64_t outs = std::min(kShared, g.kernel - j0);
        const T* b_base[kShared];
        for (int64_t m = 0; m < outs; ++m)
          b_base[m] = buffer + window_offsets[i * g.kernel + j0 + m];
        for (int64_t x0 = 0; x0 < padded_wo; x0 += kChunk) {
          T* out[kShared];
          for (int64_t m = 0; m < outs; ++m) out[m] = out_rows(i * g.kernel + j0 + m) + x0;
          chunk_dot_shared_n<T>(outs, out, kChunk, g.d, {a_base, query_offsets.data()},
                                {b_base, channel_offsets.data()}, x0);
        }
      }
    }
    return false;
  }

  // out_rows(c)[x] = sum_o weights_o[x] * window_c(o)[x] over the window offsets o = i * k + j,
  // for every channel c; `weights` is a query-indexed buffer, the windows of the key or value
  // buffer.
  // With the shifted kernels, floats at stride 1 without dilation and k = 3, 5 or 7 take
  // chunk_weighted_shifted.
  template <typename ORow>
  void weighted_sums(const T* weights, const T* buffer, const ORow& out_rows) {
    [[maybe_unused]] bool shifted = false;
#ifdef ACMIX_SHIFTED_KERNELS
    if constexpr (std::is_same_v<T, float>) {
      shifted = g.stride == 1 && g.dilation == 1 && shifted_window(g.kernel);
    }
#endif
    const T* a_base[1] = {weights + lead};
    for (int64_t c0 = 0; c0 < g.d; c0 += kShared) {
      const int64_t outs = std::min(kShared, g.d - c0);
      const T* b_base[kShared];
      for (int64_t m = 0; m < outs; ++m) b_base[m] = buffer + channel_offsets[c0 + m];
      for (int64_t x0 = 0; x0 < padded_wo; x0 += kChunk) {
        T* out[kShared];
        for (int64_t m = 0; m < outs; ++m) out[m] = out_rows(c0 + m) + x0;
        const int64_t count = std::min(kChunk, g.Wo - x0);
#ifdef ACMIX_SHIFTED_KERNELS
        if constexpr (std::is_same_v<T, float>) {
          if (shifted) {
            with_window_and_count(g.kernel, outs, [&](auto k, auto m) {
              chunk_weighted_shifted<decltype(m)::value>(
                  out, count, a_base[0], weight_offsets.data(), b_base, window_offsets.data(),
                  x0, std::make_integer_sequence<int, decltype(k)::value>());
            });
            continue;
          }
        }
#endif
        chunk_dot_shared_n<T>(outs, out, count, g.k2(), {a_base, weight_offsets.data()},
                              {b_base, window_offsets.data()}, x0);
      }
    }
  }

  // attn <- softmax over the window of the logits of the row's queries; with normalize false,
  // attn holds the exponentials and `total` their reciprocal sums (the caller scales its sums).
  void softmax_weights(bool normalize = true) {
    T* peak = total.data();
    fill_short(peak, padded_wo, -std::numeric_limits<T>::infinity());
    if (!window_dots(query_row(0), key_buffer(), [&](int64_t o) { return attn_row(o); }, peak)) {
      copy_short(attn_row(0), padded_wo, peak);
      for (int64_t o = 1; o < g.k2(); ++o) {
        const T* a = attn_row(o);
        for (int64_t x = 0; x < padded_wo; ++x) peak[x] = std::max(peak[x], a[x]);
      }
    }
    // One chunk of queries at a time, its maximum and running sum in registers rather than
    // re-read and re-stored for every window offset; the sums add the offsets in the same order.
    for (int64_t x0 = 0; x0 < padded_wo; x0 += kChunk) {
      T top[kChunk], acc[kChunk];
      for (int64_t x = 0; x < kChunk; ++x) {
        top[x] = peak[x0 + x];
        acc[x] = T(0);
      }
      for (int64_t o = 0; o < g.k2(); ++o) {
        T* a = attn_row(o) + x0;
        for (int64_t x = 0; x < kChunk; ++x) {
          a[x] = fast_exp(a[x] - top[x]);
          acc[x] += a[x];
        }
      }
      for (int64_t x = 0; x < kChunk; ++x) total[x0 + x] = T(1) / acc[x];
      if (!normalize) continue;
      for (int64_t o = 0; o < g.k2(); ++o) {
        T* a = attn_row(o) + x0;
        for (int64_t x = 0; x < kChunk; ++x) a[x] *= total[x0 + x];
      }
    }
  }
};

template <typename T>
void forward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const T* pe,
                  T scale, const Geometry& g, at::Tensor& out) {
  const int64_t B = q.size(0), N = q.size(1);
  T* out_ptr = out.data_ptr<T>();
  at::parallel_for(0, B * N * g.Ho, 1, [&](int64_t begin, int64_t end) {
    RowWork<T> work(g);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t yo = task % g.Ho, bn = task / g.Ho, b = bn / N, n = bn % N;
      work.gather(slice<T>(q, b, n), slice<T>(k, b, n), slice<T>(v, b, n), pe, scale, bn, yo);
      work.softmax_weights(false);
      auto out_row = [&](int64_t c) { return out_ptr + ((bn * g.d + c) * g.Ho + yo) * g.Wo; };
      work.weighted_sums(work.attn.data(), work.value_buffer(), out_row);
      const T* inv = work.total.data();
      for (int64_t c = 0; c < g.d; ++c) {
        T* o = out_row(c);
        for (int64_t x = 0; x < g.Wo; ++x) o[x] *= inv[x];
      }
    }
  });
}

// Gradients of the gathered key (value) rows of window row i for the channels c0 .. c0 + outs - 1:
// dst(c)[x * s + j * dil] summed over the queries x and offsets j of w_o[x] * a(c)[x] with
// o = i * k + j (the w_o loads shared by the channels). Computed per phase p of the columns
// (p + s * m, m = 0, 1, ...) as a gather over the zero-padded query-indexed rows: the offsets with
// j * dil = p (mod s) reach column p + s * m from query m - (j * dil) / s.
template <typename T, typename ARows, typename Dst>
void window_transpose(RowWork<T>& work, const T* weights, const ARows& a_rows, int64_t i,
                      int64_t c0, int64_t outs, const Dst& dst) {
  const Geometry& g = work.g;
  // (s == 1 spelled out: integer divisions in this per-row, per-channel-block code were ~2% of
  // the backward's samples)
  const int64_t s = g.stride, len = s == 1 ? g.span : (g.span + s - 1) / s;
  const int64_t plen = round_up(len, kChunk);
#ifdef ACMIX_SHIFTED_KERNELS
  if constexpr (std::is_same_v<T, float>) {
    if (s == 1 && g.dilation == 1 && shifted_window(g.kernel)) {
      const float* b_base[kShared];
      for (int64_t m = 0; m < outs; ++m) b_base[m] = a_rows(c0 + m);
      const float* w = weights + work.lead;
      const int64_t* wo = work.weight_offsets.data() + i * g.kernel;
      for (int64_t m0 = 0; m0 < len; m0 += kChunk) {
        float* o[kShared];
        for (int64_t m = 0; m < outs; ++m) o[m] = dst(c0 + m) + m0;
        const int64_t count = std::min(kChunk, len - m0);
        with_window_and_count(g.kernel, outs, [&](auto k, auto m) {
          chunk_transpose_shifted<decltype(m)::value>(
              o, count, w, wo, b_base, m0, std::make_integer_sequence<int, decltype(k)::value>());
        });
      }
      return;
    }
  }
#endif
  for (int64_t p = 0; p < s; ++p) {
    const std::vector<int64_t>& offsets = work.phase_offsets[p];
    const int64_t rows = static_cast<int64_t>(offsets.size());
    T* out[kShared];
    for (int64_t m = 0; m < outs; ++m)
      out[m] = s == 1 ? dst(c0 + m) : work.transposed.data() + m * plen;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t j = offsets[r], back = s == 1 ? j * g.dilation : j * g.dilation / s;
      work.scratch_a[r] = (i * g.kernel + j) * work.qlen - back;
      work.scratch_b[r] = -back;
    }
    const T* a_base[1] = {weights + work.lead};
    const T* b_base[kShared];
    for (int64_t m = 0; m < outs; ++m) b_base[m] = a_rows(c0 + m);
    for (int64_t m0 = 0; m0 < len; m0 += kChunk) {
      T* o[kShared];
      for (int64_t m = 0; m < outs; ++m) o[m] = out[m] + m0;
      chunk_dot_shared_n<T>(outs, o, std::min(kChunk, len - m0), rows,
                            {a_base, work.scratch_a.data()}, {b_base, work.scratch_b.data()}, m0);
    }
    if (s > 1)
      for (int64_t m = 0; m < outs; ++m)
        for (int64_t x = 0; p + s * x < g.span; ++x) dst(c0 + m)[p + s * x] = out[m][x];
  }
}

template <typename T>
void backward_rows(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                   const at::Tensor& v, const T* pe, T scale, const Geometry& g, int64_t b,
                   int64_t n, int64_t yo_begin, int64_t yo_end, at::Tensor& grad_q,
                   at::Tensor& grad_k, at::Tensor& grad_v, RowWork<T>& work) {
  const int64_t N = q.size(1), bn = b * N + n, plane = g.H * g.W, k2 = g.k2();
  std::vector<T> gkeys(g.d * g.kernel * g.span), gvalues(g.d * g.kernel * g.span);
  std::vector<T> gq_rows(g.d * work.padded_wo);
  const T* go_base = grad_out.data_ptr<T>() + bn * g.d * g.Ho * g.Wo;
  auto base = [&](at::Tensor& t) { return t.data_ptr<T>() + b * t.stride(0) + n * t.stride(1); };
  T* gq_base = base(grad_q);
  T* gk_base = base(grad_k);
  T* gv_base = base(grad_v);
  const Slice<T> qs = slice<T>(q, b, n), ks = slice<T>(k, b, n), vs = slice<T>(v, b, n);

  for (int64_t yo = yo_begin; yo < yo_end; ++yo) {
    work.gather(qs, ks, vs, pe, scale, bn, yo);
    if (yo + 1 < yo_end) {  // the next row's output gradients and its new rows' gradients
      for (int64_t c = 0; c < g.d; ++c)
        prefetch_elements(go_base + (c * g.Ho + yo + 1) * g.Wo, g.Wo);
      work.for_new_rows(yo + 1, [&](int64_t r) {
        for (int64_t c = 0; c < g.d; ++c) {
          prefetch_elements(gk_base + c * plane + r * g.W, g.W);
          prefetch_elements(gv_base + c * plane + r * g.W, g.W);
        }
      });
    }
    work.softmax_weights();
    for (int64_t c = 0; c < g.d; ++c)
      copy_short(go_base + (c * g.Ho + yo) * g.Wo, g.Wo, work.grad_row(c));
    // dA(o) = sum_c grad_out_c * v_c(o); then dL = A * (dA - sum_o A * dA).
    work.window_dots(work.grad_row(0), work.value_buffer(),
                     [&](int64_t o) { return work.dattn_row(o); });
    T* row_total = work.total.data();
    for (int64_t x0 = 0; x0 < work.padded_wo; x0 += kChunk) {  // the sums in registers
      T acc[kChunk];
      for (int64_t x = 0; x < kChunk; ++x) acc[x] = T(0);
      for (int64_t o = 0; o < k2; ++o) {
        const T* a = work.attn_row(o) + x0;
        const T* da = work.dattn_row(o) + x0;
        for (int64_t x = 0; x < kChunk; ++x) acc[x] += a[x] * da[x];
      }
      for (int64_t x = 0; x < kChunk; ++x) row_total[x0 + x] = acc[x];
    }
    for (int64_t o = 0; o < k2; ++o) {
      const T* a = work.attn_row(o);
      T* dl = work.dattn_row(o);
      for (int64_t x = 0; x < g.Wo; ++x) dl[x] = a[x] * (dl[x] - row_total[x]);
      fill_short(dl + g.Wo, work.padded_wo - g.Wo, T(0));
    }
    // grad_q = scale * sum_o dL(o) * (k - pe)(o), written at the query positions.
    work.weighted_sums(work.dattn.data(), work.key_buffer(),
                       [&](int64_t c) { return gq_rows.data() + c * work.padded_wo; });
    for (int64_t c = 0; c < g.d; ++c) {
      T* gq = gq_base + c * plane + yo * g.stride * g.W;
      const T* src = gq_rows.data() + c * work.padded_wo;
      for (int64_t x = 0; x < g.Wo; ++x) gq[x * g.stride] = src[x] * scale;
    }
    // Gradients of the gathered key / value rows: dL * q and A * grad_out.
    for (int64_t i = 0; i < g.kernel; ++i) {
      for (int64_t c0 = 0; c0 < g.d; c0 += kShared) {
        const int64_t outs = std::min(kShared, g.d - c0);
        window_transpose(
            work, work.dattn.data(), [&](int64_t c) { return work.query_row(c); }, i, c0, outs,
            [&](int64_t c) { return gkeys.data() + (c * g.kernel + i) * g.span; });
        window_transpose(
            work, work.attn.data(), [&](int64_t c) { return work.grad_row(c); }, i, c0, outs,
            [&](int64_t c) { return gvalues.data() + (c * g.kernel + i) * g.span; });
      }
    }
    // Fold the gathered rows back through the reflection: columns pad .. pad + W - 1 are the
    // row itself (a contiguous, vectorised sum), only the borders are reflected.
    const int64_t lo = std::min(g.pad, g.span), hi = std::max(lo, std::min(g.pad + g.W, g.span));
    for (int64_t c = 0; c < g.d; ++c) {
      for (int64_t i = 0; i < g.kernel; ++i) {
        T* gk = gk_base + c * plane + work.rows[i] * g.W;
        T* gv = gv_base + c * plane + work.rows[i] * g.W;
        const T* sk = gkeys.data() + (c * g.kernel + i) * g.span;
        const T* sv = gvalues.data() + (c * g.kernel + i) * g.span;
        auto reflected = [&](int64_t x) {
          gk[work.cols[x]] += sk[x];
          gv[work.cols[x]] += sv[x];
        };
        for (int64_t x = 0; x < lo; ++x) reflected(x);
        for (int64_t x = hi; x < g.span; ++x) reflected(x);
        T* __restrict__ gk_in = gk - g.pad;
        T* __restrict__ gv_in = gv - g.pad;
        for (int64_t x = lo; x < hi; ++x) {
          gk_in[x] += sk[x];
          gv_in[x] += sv[x];
        }
      }
    }
  }
}

template <typename T>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                   const at::Tensor& v, const T* pe, T scale, const Geometry& g,
                   at::Tensor& grad_q, at::Tensor& grad_k, at::Tensor& grad_v) {
  const int64_t B = q.size(0), N = q.size(1);
  // Blocks of output rows whose key rows (window plus reflection) cannot overlap those of the
  // block after next: every second block runs in parallel without write conflicts.
  const int64_t block = std::max<int64_t>((2 * g.pad + g.stride) / g.stride, 1);
  const int64_t num_blocks = (g.Ho + block - 1) / block;
  for (int64_t parity = 0; parity < 2; ++parity) {
    const int64_t wave = (num_blocks - parity + 1) / 2;
    at::parallel_for(0, B * N * wave, 1, [&](int64_t begin, int64_t end) {
      RowWork<T> work(g);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t blk = 2 * (task % wave) + parity, bn = task / wave;
        const int64_t y0 = blk * block, y1 = std::min(g.Ho, y0 + block);
        backward_rows<T>(grad_out, q, k, v, pe, scale, g, bn / N, bn % N, y0, y1, grad_q, grad_k,
                         grad_v, work);
      }
    });
  }
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const c10::optional<at::Tensor>& pe) {
  TORCH_CHECK(q.dim() == 5, "q must be (B, N, d, H, W)");
  TORCH_CHECK(q.sizes() == k.sizes() && q.sizes() == v.sizes(), "q, k, v shapes differ");
  for (const at::Tensor* t : {&q, &k, &v})
    TORCH_CHECK(t->stride(4) == 1 && t->device().is_cpu(), "q, k, v: CPU, last stride 1");
  if (pe.has_value())
    TORCH_CHECK(pe->is_contiguous() && pe->dim() == 3 && pe->size(0) == q.size(2) &&
                    pe->size(1) == q.size(3) && pe->size(2) == q.size(4),
                "pe must be a contiguous (d, H, W) tensor");
}

}  // namespace

at::Tensor sliding_window_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const c10::optional<at::Tensor>& pe, double scale,
                                  int64_t kernel, int64_t stride, int64_t dilation) {
  check_inputs(q, k, v, pe);
  const Geometry g(q, kernel, stride, dilation);
  at::Tensor out = at::empty({q.size(0), q.size(1), g.d, g.Ho, g.Wo}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "acmix_sliding_window_forward", [&] {
    const scalar_t* pe_ptr = pe.has_value() ? pe->data_ptr<scalar_t>() : nullptr;
    forward_impl<scalar_t>(q, k, v, pe_ptr, static_cast<scalar_t>(scale), g, out);
  });
  return out;
}

std::vector<at::Tensor> sliding_window_backward(const at::Tensor& grad_out, const at::Tensor& q,
                                                const at::Tensor& k, const at::Tensor& v,
                                                const c10::optional<at::Tensor>& pe, double scale,
                                                int64_t kernel, int64_t stride, int64_t dilation,
                                                const c10::optional<at::Tensor>& grad_qkv) {
  check_inputs(q, k, v, pe);
  const Geometry g(q, kernel, stride, dilation);
  const at::Tensor go = grad_out.contiguous();
  at::Tensor grad_q, grad_k, grad_v;
  if (grad_qkv.has_value()) {  // the three gradients as views of one (B, 3, N, d, H, W) map
    const at::Tensor& all = *grad_qkv;
    TORCH_CHECK(all.is_contiguous() && all.dim() == 6 && all.size(0) == q.size(0) &&
                    all.size(1) == 3 && all.sizes().slice(2).equals(q.sizes().slice(1)) &&
                    all.scalar_type() == q.scalar_type(),
                "grad_qkv must be a contiguous (B, 3, N, d, H, W) map of q's dtype");
    grad_q = all.select(1, 0);
    grad_k = all.select(1, 1);
    grad_v = all.select(1, 2);
  } else {
    grad_q = at::empty(q.sizes(), q.options());
    grad_k = at::empty(q.sizes(), q.options());
    grad_v = at::empty(q.sizes(), q.options());
  }
  // every position of grad_q is a query's at stride 1 (written once); k and v accumulate
  if (stride != 1) grad_q.zero_();
  grad_k.zero_();
  grad_v.zero_();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "acmix_sliding_window_backward", [&] {
    const scalar_t* pe_ptr = pe.has_value() ? pe->data_ptr<scalar_t>() : nullptr;
    backward_impl<scalar_t>(go, q, k, v, pe_ptr, static_cast<scalar_t>(scale), g, grad_q, grad_k,
                            grad_v);
  });
  return {grad_q, grad_k, grad_v};
}

}  // namespace acmix_mm

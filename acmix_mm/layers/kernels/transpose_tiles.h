// Register-tiled transposition of one 2-d block, with which the conv-path kernel moves rows
// between the planar and the channels-last layout:
//
//   out[s][r] = src[r][s] + scale * add[s][r]   (add optional)
//
// with unit stride along src's and out's rows and free row strides. Floats go through 8 x 8 tiles
// transposed in AVX registers; the edges and doubles element by element.
#pragma once

#include <cstdint>

#ifdef __AVX__
#include <immintrin.h>
#endif

namespace acmix_mm {

// `rows` rows of out times `cols` columns, element by element.
template <typename T>
inline void tile_scalar(const T* src, int64_t ssr, T* out, int64_t osr, const T* add,
                        int64_t asr, T scale, int64_t rows, int64_t cols) {
  // rows: along s (out rows), cols: along r (out columns)
  for (int64_t s = 0; s < rows; ++s) {
    T* o = out + s * osr;
    if (add == nullptr) {
      for (int64_t r = 0; r < cols; ++r) o[r] = src[r * ssr + s];
    } else {
      const T* a = add + s * asr;
      for (int64_t r = 0; r < cols; ++r) o[r] = src[r * ssr + s] + scale * a[r];
    }
  }
}

#ifdef __AVX__
// One 8 x 8 float tile: out[s][r] = src[r][s] (+ scale * add[s][r]).
inline void tile8_float(const float* src, int64_t ssr, float* out, int64_t osr, const float* add,
                        int64_t asr, float scale) {
  __m256 r0 = _mm256_loadu_ps(src + 0 * ssr), r1 = _mm256_loadu_ps(src + 1 * ssr);
  __m256 r2 = _mm256_loadu_ps(src + 2 * ssr), r3 = _mm256_loadu_ps(src + 3 * ssr);
  __m256 r4 = _mm256_loadu_ps(src + 4 * ssr), r5 = _mm256_loadu_ps(src + 5 * ssr);
  __m256 r6 = _mm256_loadu_ps(src + 6 * ssr), r7 = _mm256_loadu_ps(src + 7 * ssr);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  __m256 c[8] = {_mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
                 _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
                 _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
                 _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
  if (add == nullptr) {
    for (int s = 0; s < 8; ++s) _mm256_storeu_ps(out + s * osr, c[s]);
  } else {
    const __m256 sc = _mm256_set1_ps(scale);
    for (int s = 0; s < 8; ++s)
      _mm256_storeu_ps(out + s * osr,
                       _mm256_add_ps(c[s], _mm256_mul_ps(sc, _mm256_loadu_ps(add + s * asr))));
  }
}
#endif

template <typename T>
inline void tile(const T* src, int64_t ssr, T* out, int64_t osr, const T* add, int64_t asr, T scale,
          int64_t rows, int64_t cols) {
  tile_scalar(src, ssr, out, osr, add, asr, scale, rows, cols);
}

#ifdef __AVX__
template <>
inline void tile<float>(const float* src, int64_t ssr, float* out, int64_t osr, const float* add,
                 int64_t asr, float scale, int64_t rows, int64_t cols) {
  const int64_t rows8 = rows / 8 * 8, cols8 = cols / 8 * 8;
  for (int64_t s = 0; s < rows8; s += 8)
    for (int64_t r = 0; r < cols8; r += 8)
      tile8_float(src + r * ssr + s, ssr, out + s * osr + r, osr,
                  add == nullptr ? nullptr : add + s * asr + r, asr, scale);
  if (cols8 < cols)
    tile_scalar(src + cols8 * ssr, ssr, out + cols8, osr, add == nullptr ? nullptr : add + cols8,
                asr, scale, rows8, cols - cols8);
  if (rows8 < rows)
    tile_scalar(src + rows8, ssr, out + rows8 * osr, osr,
                add == nullptr ? nullptr : add + rows8 * asr, asr, scale, rows - rows8, cols);
}
#endif

}  // namespace acmix_mm

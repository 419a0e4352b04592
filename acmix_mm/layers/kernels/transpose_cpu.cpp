// Batched transposing copy for the CPU, with an optional scaled addend:
//
//   out[b, s, r] = src[b, r, s] + scale * addend[b, s, r]
//
// The ACmix backward moves maps between the planar layout of the attention kernel and the
// channels-last layout of the conv-path kernel; PyTorch's strided copy does this at a fraction of
// the memory bandwidth. Tiles of 8 x 8 are transposed in registers (AVX) and tiles of 64 x 64 keep
// the rows of both sides in the L1 cache. Every operand has unit stride along its last axis; the
// other strides are free, so slices and strided views are written in place.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#ifdef __AVX__
#include <immintrin.h>
#endif

namespace acmix_mm {
namespace {

constexpr int64_t kTile = 64;

template <typename T>
struct Operand {
  T* ptr;
  int64_t sb, sr;  // batch and row strides; unit stride within a row
  T* row(int64_t b, int64_t r) const { return ptr + b * sb + r * sr; }
};

// out rows s0 .. s1 - 1, columns r0 .. r1 - 1 of one batch entry, element by element.
template <typename T>
void tile_scalar(const T* src, int64_t ssr, T* out, int64_t osr, const T* add, int64_t asr,
                 T scale, int64_t rows, int64_t cols) {
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
void tile(const T* src, int64_t ssr, T* out, int64_t osr, const T* add, int64_t asr, T scale,
          int64_t rows, int64_t cols) {
  tile_scalar(src, ssr, out, osr, add, asr, scale, rows, cols);
}

#ifdef __AVX__
template <>
void tile<float>(const float* src, int64_t ssr, float* out, int64_t osr, const float* add,
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

template <typename T>
void transpose_impl(const Operand<T>& src, const Operand<T>& out, const Operand<T>* add, T scale,
                    int64_t B, int64_t R, int64_t S) {
  const int64_t tiles_s = (S + kTile - 1) / kTile, tiles_r = (R + kTile - 1) / kTile;
  at::parallel_for(0, B * tiles_s * tiles_r, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (tiles_s * tiles_r), rest = task % (tiles_s * tiles_r);
      const int64_t s0 = rest / tiles_r * kTile, r0 = rest % tiles_r * kTile;
      tile<T>(src.row(b, r0) + s0, src.sr, out.row(b, s0) + r0, out.sr,
              add == nullptr ? nullptr : add->row(b, s0) + r0, add == nullptr ? 0 : add->sr,
              scale, std::min(kTile, S - s0), std::min(kTile, R - r0));
    }
  });
}

template <typename T>
Operand<T> operand(const at::Tensor& t) {
  return {t.data_ptr<T>(), t.stride(0), t.stride(1)};
}

}  // namespace

void transpose_add_(at::Tensor& out, const at::Tensor& src, const c10::optional<at::Tensor>& addend,
                    double scale) {
  TORCH_CHECK(src.dim() == 3 && out.dim() == 3, "src and out must be 3-d (B, R, S), (B, S, R)");
  const int64_t B = src.size(0), R = src.size(1), S = src.size(2);
  TORCH_CHECK(out.size(0) == B && out.size(1) == S && out.size(2) == R,
              "out must be (B, S, R) for src (B, R, S)");
  TORCH_CHECK(src.stride(2) == 1 && out.stride(2) == 1, "src and out need a unit last stride");
  TORCH_CHECK(out.scalar_type() == src.scalar_type(), "out and src must share a dtype");
  if (addend.has_value()) {
    TORCH_CHECK(addend->sizes() == out.sizes() && addend->stride(2) == 1 &&
                    addend->scalar_type() == src.scalar_type(),
                "addend must be shaped as out, with a unit last stride and out's dtype");
  }
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "acmix_transpose_add", [&] {
    const Operand<scalar_t> add = addend.has_value() ? operand<scalar_t>(*addend)
                                                     : Operand<scalar_t>{nullptr, 0, 0};
    transpose_impl<scalar_t>(operand<scalar_t>(src), operand<scalar_t>(out),
                             addend.has_value() ? &add : nullptr,
                             static_cast<scalar_t>(scale), B, R, S);
  });
}

}  // namespace acmix_mm

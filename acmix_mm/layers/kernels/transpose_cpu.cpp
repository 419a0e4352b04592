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

#include "transpose_tiles.h"

namespace acmix_mm {
namespace {

constexpr int64_t kTile = 64;

template <typename T>
struct Operand {
  T* ptr;
  int64_t sb, sr;  // batch and row strides; unit stride within a row
  T* row(int64_t b, int64_t r) const { return ptr + b * sb + r * sr; }
};

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

// The convolution path of ACmix fused for the CPU (forward only): fc, the channel reordering and
// the grouped dep_conv in one pass, with channels-last output.
//
//   mixed[b, y, x, j, c] = fc_b[j] + sum_t fc_w[j, t] * qkv[b, y, x, t, c]
//   out[b, yo, xo, c*M + m] = bias[m, c]
//       + sum_{a, e, j} weight[m, a, e, j, c] * mixed[b, yo*s + a*dil - pad, xo*s + e*dil - pad, j, c]
//
// (zero outside the map: dep_conv zero-pads the mixed maps). Each thread computes the mixed rows
// its output rows read once, into a ring of rows zero-padded left and right with the channels
// padded to the vector width, so nothing k^2 times larger than qkv is stored and no transposing
// copy is made. Semantics: conv_path / conv_path_channels_last in acmix_mm/layers/conv_path.py.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_vectors.h"

namespace acmix_mm {
namespace {

struct ConvGeometry {
  int64_t T, D, H, W, K2, kernel, M, Dp, stride, dilation, pad, Ho, Wo, lanes;
  int64_t chunks() const { return Dp / lanes; }
  int64_t row_chunk() const { return (W + 2 * pad) * K2 * lanes; }  // one chunk of a mixed row
  int64_t row_len() const { return chunks() * row_chunk(); }
  int64_t taps() const { return kernel * kernel * K2; }  // weight vectors per output m
};

// qkv[b, y, x, t, c] through arbitrary strides.
template <typename T>
struct StridedMaps {
  const T* ptr;
  int64_t sb, sy, sx, st, sc;
  const T* at(int64_t b, int64_t y, int64_t x) const { return ptr + b * sb + y * sy + x * sx; }
};

// Keeps a vector in a register (GCC would otherwise re-load it as a memory operand of every use).
template <typename V>
inline void in_register(V& v) {
#ifdef __AVX__
  asm("" : "+x"(v));
#endif
}

// Outputs j0 .. j0 + JB - 1 at XB neighbouring positions, one chunk of channels: independent
// sums in registers; each input load serves JB products and each weight broadcast XB.
template <typename T, int XB, int JB>
void mix_block(const T* src, int64_t sx, int64_t st, const T* fc_w, const T* fc_b, int64_t n_t,
               int64_t j0, T* dst, int64_t col, int64_t lanes) {
  using V = typename VecOf<T>::type;
  V acc[XB][JB];
  for (int jj = 0; jj < JB; ++jj)
    for (int xb = 0; xb < XB; ++xb) acc[xb][jj] = V{} + (fc_b ? fc_b[j0 + jj] : T(0));
  for (int64_t t = 0; t < n_t; ++t) {
    V v[XB];
    for (int xb = 0; xb < XB; ++xb) v[xb] = *reinterpret_cast<const V*>(src + xb * sx + t * st);
    for (int jj = 0; jj < JB; ++jj) {
      V w = V{} + fc_w[(j0 + jj) * n_t + t];
      in_register(w);
      for (int xb = 0; xb < XB; ++xb) acc[xb][jj] += w * v[xb];
    }
  }
  for (int xb = 0; xb < XB; ++xb)
    for (int jj = 0; jj < JB; ++jj)
      *reinterpret_cast<V*>(dst + xb * col + (j0 + jj) * lanes) = acc[xb][jj];
}

template <typename T>
using MixFn = void (*)(const T*, int64_t, int64_t, const T*, const T*, int64_t, int64_t, T*,
                       int64_t, int64_t);

// All K2 outputs j of one channel at `lanes` neighbouring positions of planar maps (stride 1
// along x), vectorised over the positions; dst[x * col + j * lanes] for position x.
template <typename T>
void mix_positions(const T* src, int64_t st, const T* fc_w, const T* fc_b, int64_t n_t,
                   int64_t k2, T* dst, int64_t col, int64_t lanes) {
  using V = typename VecOf<T>::type;
  constexpr int kJB = 3;
  for (int64_t j0 = 0; j0 < k2; j0 += kJB) {
    const int jb = static_cast<int>(std::min<int64_t>(kJB, k2 - j0));
    V acc[kJB];
    for (int jj = 0; jj < kJB; ++jj) acc[jj] = V{} + (fc_b && jj < jb ? fc_b[j0 + jj] : T(0));
    for (int64_t t = 0; t < n_t; ++t) {
      V v = *reinterpret_cast<const V*>(src + t * st);
      in_register(v);
      for (int jj = 0; jj < jb; ++jj) acc[jj] += fc_w[(j0 + jj) * n_t + t] * v;
    }
    for (int jj = 0; jj < jb; ++jj)
      for (int64_t l = 0; l < lanes; ++l) dst[l * col + (j0 + jj) * lanes] = acc[jj][l];
  }
}

// One mixed row, laid out row[((chunk * (W + 2 pad) + x + pad) * K2 + j) * lanes + lane];
// padding columns and lanes c >= d are left as they are (zero).
template <typename T>
void mix_row(const StridedMaps<T>& qkv, const T* fc_w, const T* fc_b, const ConvGeometry& g,
             int64_t b, int64_t y, T* row) {
  constexpr int kXB = 3, kJB = 3;
  static const MixFn<T> blocks[kXB][kJB] = {
      {mix_block<T, 1, 1>, mix_block<T, 1, 2>, mix_block<T, 1, 3>},
      {mix_block<T, 2, 1>, mix_block<T, 2, 2>, mix_block<T, 2, 3>},
      {mix_block<T, 3, 1>, mix_block<T, 3, 2>, mix_block<T, 3, 3>}};
  const int64_t L = g.lanes, col = g.K2 * L;
  const int64_t full = qkv.sc == 1 ? g.D / L : 0;  // chunks done with vectors
  for (int64_t ch = 0; ch < full; ++ch)
    for (int64_t x = 0; x < g.W; x += kXB) {
      const int xb = static_cast<int>(std::min<int64_t>(kXB, g.W - x));
      T* dst = row + ch * g.row_chunk() + (x + g.pad) * col;
      for (int64_t j = 0; j < g.K2; j += kJB)
        blocks[xb - 1][std::min<int64_t>(kJB, g.K2 - j) - 1](
            qkv.at(b, y, x) + ch * L, qkv.sx, qkv.st, fc_w, fc_b, g.T, j, dst, col, L);
    }
  const int64_t x_vec = full == 0 && qkv.sx == 1 ? g.W / L * L : 0;  // planar maps (ResNet)
  for (int64_t c = 0; c < g.D && x_vec; ++c)
    for (int64_t x = 0; x < x_vec; x += L)
      mix_positions(qkv.at(b, y, x) + c * qkv.sc, qkv.st, fc_w, fc_b, g.T, g.K2,
                    row + (c / L) * g.row_chunk() + (x + g.pad) * col + c % L, col, L);
  for (int64_t x = x_vec; x < g.W; ++x) {
    const T* src = qkv.at(b, y, x);
    for (int64_t c = full * L; c < g.D; ++c) {
      T* dst = row + (c / L) * g.row_chunk() + (x + g.pad) * col + c % L;
      for (int64_t j = 0; j < g.K2; ++j) {
        T acc = fc_b ? fc_b[j] : T(0);
        for (int64_t t = 0; t < g.T; ++t) acc += fc_w[j * g.T + t] * src[t * qkv.st + c * qkv.sc];
        dst[j * L] = acc;
      }
    }
  }
}

// PX neighbouring output positions times MB of the M outputs per group, one chunk of channels:
// the sums stay in registers; each input load serves MB products and each weight load PX.
template <typename T, int PX, int MB>
void output_block(const T* const* rows, const T* weight, const T* bias, const ConvGeometry& g,
                  int64_t xo, int64_t m0, int64_t ch, T* out) {
  using V = typename VecOf<T>::type;
  const int64_t L = g.lanes, col = g.K2 * L;
  V acc[PX][MB];
  for (int mi = 0; mi < MB; ++mi) {
    const V b = *reinterpret_cast<const V*>(bias + (m0 + mi) * g.Dp + ch * L);
    for (int p = 0; p < PX; ++p) acc[p][mi] = b;
  }
  const T* w_chunk = weight + (ch * g.M + m0) * g.taps() * L;
  for (int64_t a = 0; a < g.kernel; ++a) {
    if (!rows[a]) continue;  // above or below the map
    for (int64_t e = 0; e < g.kernel; ++e) {
      const T* in = rows[a] + ch * g.row_chunk() + (xo * g.stride + e * g.dilation) * col;
      const T* w = w_chunk + (a * g.kernel + e) * col;
      for (int64_t j = 0; j < g.K2; ++j) {
        V iv[PX];
        for (int p = 0; p < PX; ++p) iv[p] = *reinterpret_cast<const V*>(in + p * g.stride * col + j * L);
        for (int mi = 0; mi < MB; ++mi) {
          V wv = *reinterpret_cast<const V*>(w + mi * g.taps() * L + j * L);
          in_register(wv);
          for (int p = 0; p < PX; ++p) acc[p][mi] += wv * iv[p];
        }
      }
    }
  }
  // channel c * M + m of the output: interleave the MB sums through a small buffer
  alignas(32) T sums[PX][MB][32 / sizeof(T)];
  for (int p = 0; p < PX; ++p)
    for (int mi = 0; mi < MB; ++mi) *reinterpret_cast<V*>(sums[p][mi]) = acc[p][mi];
  const int64_t lanes = std::min<int64_t>(L, g.D - ch * L), C = g.D * g.M;
  for (int p = 0; p < PX; ++p) {
    T* o = out + (xo + p) * C + ch * L * g.M + m0;
    for (int64_t l = 0; l < lanes; ++l)
      for (int mi = 0; mi < MB; ++mi) o[l * g.M + mi] = sums[p][mi][l];
  }
}

template <typename T>
using BlockFn = void (*)(const T* const*, const T*, const T*, const ConvGeometry&, int64_t,
                         int64_t, int64_t, T*);

// One output row: rows[a] is the mixed row of kernel row a, or null outside the map.
template <typename T>
void output_row(const T* const* rows, const T* weight, const T* bias, const ConvGeometry& g,
                T* out) {
  constexpr int kPX = 3, kMB = 3;
  static const BlockFn<T> blocks[kPX][kMB] = {
      {output_block<T, 1, 1>, output_block<T, 1, 2>, output_block<T, 1, 3>},
      {output_block<T, 2, 1>, output_block<T, 2, 2>, output_block<T, 2, 3>},
      {output_block<T, 3, 1>, output_block<T, 3, 2>, output_block<T, 3, 3>}};
  for (int64_t ch = 0; ch < g.chunks(); ++ch)
    for (int64_t xo = 0; xo < g.Wo; xo += kPX) {
      const int px = static_cast<int>(std::min<int64_t>(kPX, g.Wo - xo));
      for (int64_t m0 = 0; m0 < g.M; m0 += kMB) {
        const int mb = static_cast<int>(std::min<int64_t>(kMB, g.M - m0));
        blocks[px - 1][mb - 1](rows, weight, bias, g, xo, m0, ch, out);
      }
    }
}

template <typename T>
void conv_path_impl(const StridedMaps<T>& qkv, const T* fc_w, const T* fc_b, const T* weight,
                    const T* bias, const ConvGeometry& g, int64_t batch, T* out) {
  const int64_t ring = (g.kernel - 1) * g.dilation + 1;
  at::parallel_for(0, batch * g.Ho, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> cache(ring * g.row_len(), T(0));  // padding columns and lanes stay zero
    std::vector<int64_t> held(ring, -1);              // b * H + y of the row in each slot
    std::vector<const T*> rows(g.kernel);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / g.Ho, yo = task % g.Ho;
      for (int64_t a = 0; a < g.kernel; ++a) {
        const int64_t y = yo * g.stride + a * g.dilation - g.pad;
        if (y < 0 || y >= g.H) {
          rows[a] = nullptr;
          continue;
        }
        T* slot = cache.data() + (y % ring) * g.row_len();
        if (held[y % ring] != b * g.H + y) {
          mix_row(qkv, fc_w, fc_b, g, b, y, slot);
          held[y % ring] = b * g.H + y;
        }
        rows[a] = slot;
      }
      output_row(rows.data(), weight, bias, g, out + task * g.Wo * g.D * g.M);
    }
  });
}

}  // namespace

at::Tensor conv_path_forward(const at::Tensor& qkv, const at::Tensor& fc_weight,
                             const c10::optional<at::Tensor>& fc_bias, const at::Tensor& weight,
                             const at::Tensor& bias, int64_t stride, int64_t dilation) {
  TORCH_CHECK(qkv.dim() == 5 && qkv.device().is_cpu(), "qkv must be a CPU (B, H, W, T, d) tensor");
  TORCH_CHECK(weight.dim() == 6 && weight.is_contiguous() && bias.is_contiguous() &&
                  fc_weight.is_contiguous(),
              "weight (Dp / lanes, M, k, k, K2, lanes), bias (M, Dp) and fc_weight (K2, T) must be contiguous");
  ConvGeometry g;
  g.H = qkv.size(1), g.W = qkv.size(2), g.T = qkv.size(3), g.D = qkv.size(4);
  g.M = weight.size(1), g.kernel = weight.size(2), g.K2 = weight.size(4);
  g.Dp = weight.size(0) * weight.size(5);
  g.stride = stride, g.dilation = dilation, g.pad = dilation * (g.kernel / 2);
  g.lanes = qkv.element_size() == 4 ? kLanes<float> : kLanes<double>;
  g.Ho = (g.H - 1) / stride + 1, g.Wo = (g.W - 1) / stride + 1;
  TORCH_CHECK(g.kernel % 2 == 1 && weight.size(3) == g.kernel, "dep_conv kernel must be odd, square");
  TORCH_CHECK(fc_weight.size(0) == g.K2 && fc_weight.size(1) == g.T, "fc_weight must be (K2, T)");
  TORCH_CHECK(bias.size(0) == g.M && bias.size(1) == g.Dp, "bias must be (M, Dp)");
  const at::Tensor fc_b_tensor = fc_bias.has_value() ? fc_bias->contiguous() : at::Tensor();
  at::Tensor out = at::empty({qkv.size(0), g.Ho, g.Wo, g.D * g.M}, qkv.options());
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "acmix_conv_path_forward", [&] {
    TORCH_CHECK(weight.size(5) == g.lanes && g.Dp == round_up(g.D, g.lanes),
                "weight must hold d rounded up to chunks of ", g.lanes, " lanes");
    const StridedMaps<scalar_t> maps{qkv.data_ptr<scalar_t>(), qkv.stride(0), qkv.stride(1),
                                     qkv.stride(2), qkv.stride(3), qkv.stride(4)};
    const scalar_t* fc_b = fc_b_tensor.defined() ? fc_b_tensor.data_ptr<scalar_t>() : nullptr;
    conv_path_impl<scalar_t>(maps, fc_weight.data_ptr<scalar_t>(), fc_b, weight.data_ptr<scalar_t>(),
                             bias.data_ptr<scalar_t>(), g, qkv.size(0), out.data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace acmix_mm

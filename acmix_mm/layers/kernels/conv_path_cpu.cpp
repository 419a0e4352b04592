// The convolution path of ACmix fused for the CPU (forward only): fc, the channel reordering and
// the grouped dep_conv in one pass, with channels-last output.
//
//   mixed[b, y, x, j, c] = fc_b[j] + sum_t fc_w[j, t] * qkv[b, y, x, t, c]
//   out[b, yo, xo, c*M + m] = bias[m, c]
//       + sum_{a, e, j} weight[m, a, e, j, c]
//                       * mixed[b, yo*s + a*dil - pad, xo*s + e*dil - pad, j, c]
//
// (zero outside the map: dep_conv zero-pads the mixed maps). Each thread computes the mixed rows
// its output rows read once, into a ring of rows zero-padded left and right with the channels
// padded to the vector width (64 bytes where built for AVX-512, else 32), so nothing k^2 times
// larger than qkv is stored and no transposing copy is made. Planar rows of at least
// kPlanarRowsMinWidth outputs at stride 1 are computed along the rows instead, one channel at a
// time (conv_path_planar_rows). Semantics: conv_path / conv_path_channels_last in
// acmix_mm/layers/conv_path.py.
#include <torch/extension.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu_vectors.h"
#include "kernels.h"
#include "transpose_tiles.h"

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

// Calls f(A, B) with A, B std::integral_constant<int, 1 .. 3> for runtime a, b: the shape of a
// register block (the blocks at the ends of a loop are the smaller ones).
template <typename F>
inline void with_block_shape(int64_t a, int64_t b, F&& f) {
  using One = std::integral_constant<int, 1>;
  using Two = std::integral_constant<int, 2>;
  using Three = std::integral_constant<int, 3>;
  switch ((a - 1) * 3 + b - 1) {
    case 0: return f(One(), One());
    case 1: return f(One(), Two());
    case 2: return f(One(), Three());
    case 3: return f(Two(), One());
    case 4: return f(Two(), Two());
    case 5: return f(Two(), Three());
    case 6: return f(Three(), One());
    case 7: return f(Three(), Two());
    default: return f(Three(), Three());
  }
}

// Keeps a vector in a register (GCC would otherwise re-load it as a memory operand of every use).
template <typename V>
inline void in_register(V& v) {
#ifdef __AVX__
#ifdef __AVX512F__
  asm("" : "+v"(v));  // any of the 32 registers
#else
  asm("" : "+x"(v));
#endif
#endif
}

// acc[xb][jj] = fc_b[j0 + jj] + sum_t fc_w[(j0 + jj) * n_t + t] * src[xb * sx + t * st], each
// a vector over neighbouring lanes: XB x JB independent sums in registers, each input load serving
// JB products and each weight broadcast XB. The operand that several products share is pinned in
// a register: the weight where XB > 1, else the input. (V is named, not deduced: a deduced
// vector type loses its 4-byte alignment, and the loads would then fault on unaligned rows.)
template <typename T, int XB, int JB>
inline void mix_sums(typename WideOf<T>::type (&acc)[XB][JB], const T* src, int64_t sx,
                     int64_t st, const T* fc_w, const T* fc_b, int64_t n_t, int64_t j0) {
  using V = typename WideOf<T>::type;
  for (int jj = 0; jj < JB; ++jj)
    for (int xb = 0; xb < XB; ++xb) acc[xb][jj] = V{} + (fc_b ? fc_b[j0 + jj] : T(0));
  for (int64_t t = 0; t < n_t; ++t) {
    V v[XB];
    for (int xb = 0; xb < XB; ++xb) v[xb] = *reinterpret_cast<const V*>(src + xb * sx + t * st);
    if constexpr (XB == 1) in_register(v[0]);
    for (int jj = 0; jj < JB; ++jj) {
      V w = V{} + fc_w[(j0 + jj) * n_t + t];
      if constexpr (XB > 1) in_register(w);
      for (int xb = 0; xb < XB; ++xb) acc[xb][jj] += w * v[xb];
    }
  }
}

// Outputs j0 .. j0 + JB - 1 at XB neighbouring positions, one chunk of channels (mix_sums),
// stored at dst[xb * col + j * lanes].
template <typename T, int XB, int JB>
void mix_block(const T* src, int64_t sx, int64_t st, const T* fc_w, const T* fc_b, int64_t n_t,
               int64_t j0, T* dst, int64_t col, int64_t lanes) {
  using V = typename WideOf<T>::type;
  V acc[XB][JB];
  mix_sums<T, XB, JB>(acc, src, sx, st, fc_w, fc_b, n_t, j0);
  for (int xb = 0; xb < XB; ++xb)
    for (int jj = 0; jj < JB; ++jj)
      *reinterpret_cast<V*>(dst + xb * col + (j0 + jj) * lanes) = acc[xb][jj];
}

// Outputs j0 .. j0 + JB - 1 of one channel at `lanes` neighbouring positions of planar maps
// (stride 1 along x), vectorised over the positions (mix_sums); dst[x * col + j * lanes] for
// position x.
template <typename T, int JB>
void mix_positions_block(const T* src, int64_t st, const T* fc_w, const T* fc_b, int64_t n_t,
                         int64_t j0, T* dst, int64_t col, int64_t lanes) {
  using V = typename WideOf<T>::type;
  V acc[1][JB];
  mix_sums<T, 1, JB>(acc, src, 0, st, fc_w, fc_b, n_t, j0);
  for (int jj = 0; jj < JB; ++jj)
    for (int64_t l = 0; l < lanes; ++l) dst[l * col + (j0 + jj) * lanes] = acc[0][jj][l];
}

// All K2 outputs j of one channel at `lanes` neighbouring positions (see mix_positions_block), in
// blocks of up to 9 (a 3x3 kernel's taps at once).
template <typename T>
void mix_positions(const T* src, int64_t st, const T* fc_w, const T* fc_b, int64_t n_t,
                   int64_t k2, T* dst, int64_t col, int64_t lanes) {
  constexpr int kJB = 9;
  for (int64_t j0 = 0; j0 < k2; j0 += kJB)
    with_count<kJB>(k2 - j0, [&](auto JB) {
      mix_positions_block<T, JB()>(src, st, fc_w, fc_b, n_t, j0, dst, col, lanes);
    });
}

// One mixed row, laid out row[((chunk * (W + 2 pad) + x + pad) * K2 + j) * lanes + lane];
// padding columns and lanes c >= d are left as they are (zero). `from_memory`: the maps come from
// the map itself rather than a row just transposed into the cache.
template <typename T>
void mix_row(const StridedMaps<T>& qkv, const T* fc_w, const T* fc_b, const ConvGeometry& g,
             int64_t b, int64_t y, T* row, bool from_memory) {
  // 27 sums fill 27 of AVX-512's 32 vector registers; AVX2 has 16
  constexpr int kXB = 3, kJB = 3, kWideJB = ACMIX_WIDE_BYTES == 64 ? 9 : 3;
  const int64_t L = g.lanes, col = g.K2 * L;
  const int64_t full = qkv.sc == 1 ? g.D / L : 0;  // chunks done with vectors
  auto block = [&](int64_t ch, int64_t x) {
    const int xb = static_cast<int>(std::min<int64_t>(kXB, g.W - x));
    const T* src = qkv.at(b, y, x) + ch * L;
    T* dst = row + ch * g.row_chunk() + (x + g.pad) * col;
    int64_t j = 0;
    for (; j + kWideJB <= g.K2; j += kWideJB)  // 27 sums: fewer loads per product
      with_count<kXB>(xb, [&](auto XB) {
        mix_block<T, XB(), kWideJB>(src, qkv.sx, qkv.st, fc_w, fc_b, g.T, j, dst, col, L);
      });
    for (; j < g.K2; j += kJB)
      with_block_shape(xb, std::min<int64_t>(kJB, g.K2 - j), [&](auto XB, auto JB) {
        mix_block<T, XB(), JB()>(src, qkv.sx, qkv.st, fc_w, fc_b, g.T, j, dst, col, L);
      });
  };
  if (from_memory) {
    // positions outside, chunks inside: each position's maps are used while in the first-level
    // cache, in one sweep along the row, and the positions two blocks ahead are asked for (chunk
    // by chunk, the loads read half a cache line of each map per pass and waited on memory)
    const int64_t span = (g.T - 1) * qkv.st + g.D;  // one position's maps
    for (int64_t x = 0; x < g.W && full; x += kXB) {
      for (int64_t p = x + 2 * kXB; p < std::min<int64_t>(x + 3 * kXB, g.W); ++p)
        prefetch_elements(qkv.at(b, y, p), span);
      for (int64_t ch = 0; ch < full; ++ch) block(ch, x);
    }
  } else {
    for (int64_t ch = 0; ch < full; ++ch)
      for (int64_t x = 0; x < g.W; x += kXB) block(ch, x);
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

// One output row: channel c of position x at ptr[x * sx + c * sc]; where `add` is set (same
// strides), the row stores sum + scale * add.
template <typename T>
struct OutRow {
  T* ptr;
  const T* add;
  T scale;
  int64_t sx, sc;
};

// PX neighbouring output positions times MB of the M outputs per group, one chunk of channels:
// the sums stay in registers; each input load serves MB products and each weight load PX.
template <typename T, int PX, int MB>
void output_block(const T* const* rows, const T* weight, const T* bias, const ConvGeometry& g,
                  int64_t xo, int64_t m0, int64_t ch, const OutRow<T>& out) {
  using V = typename WideOf<T>::type;
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
        for (int p = 0; p < PX; ++p)
          iv[p] = *reinterpret_cast<const V*>(in + p * g.stride * col + j * L);
        for (int mi = 0; mi < MB; ++mi) {
          V wv = *reinterpret_cast<const V*>(w + mi * g.taps() * L + j * L);
          in_register(wv);
          for (int p = 0; p < PX; ++p) acc[p][mi] += wv * iv[p];
        }
      }
    }
  }
  // channel c * M + m of the output: interleave the MB sums through a small buffer
  alignas(ACMIX_WIDE_BYTES) T sums[PX][MB][kWideLanes<T>];
  for (int p = 0; p < PX; ++p)
    for (int mi = 0; mi < MB; ++mi) *reinterpret_cast<V*>(sums[p][mi]) = acc[p][mi];
  const int64_t lanes = std::min<int64_t>(L, g.D - ch * L);
  for (int p = 0; p < PX; ++p) {
    const int64_t at = (xo + p) * out.sx + (ch * L * g.M + m0) * out.sc;
    T* o = out.ptr + at;
    if (out.add) {
      const T* a = out.add + at;
      for (int64_t l = 0; l < lanes; ++l)
        for (int mi = 0; mi < MB; ++mi) {
          const int64_t i = (l * g.M + mi) * out.sc;
          o[i] = sums[p][mi][l] + out.scale * a[i];
        }
    } else {
      for (int64_t l = 0; l < lanes; ++l)
        for (int mi = 0; mi < MB; ++mi) o[(l * g.M + mi) * out.sc] = sums[p][mi][l];
    }
  }
}

// One output row: rows[a] is the mixed row of kernel row a, or null outside the map. Outputs per
// group come in blocks of 4 (the heads of ACmix's usual 4: 12 sums in registers), then of 3.
template <typename T>
void output_row(const T* const* rows, const T* weight, const T* bias, const ConvGeometry& g,
                const OutRow<T>& out) {
  constexpr int kPX = 3, kMB = 3, kWide = 4;
  for (int64_t ch = 0; ch < g.chunks(); ++ch)
    for (int64_t xo = 0; xo < g.Wo; xo += kPX) {
      const int px = static_cast<int>(std::min<int64_t>(kPX, g.Wo - xo));
      int64_t m0 = 0;
      for (; m0 + kWide <= g.M; m0 += kWide)
        with_count<kPX>(px, [&](auto PX) {
          output_block<T, PX(), kWide>(rows, weight, bias, g, xo, m0, ch, out);
        });
      for (; m0 < g.M; m0 += kMB) {
        const int mb = static_cast<int>(std::min<int64_t>(kMB, g.M - m0));
        with_block_shape(px, mb, [&](auto PX, auto MB) {
          output_block<T, PX(), MB()>(rows, weight, bias, g, xo, m0, ch, out);
        });
      }
    }
}

// Row y of image b of planar maps (unit stride along x), transposed to channels-last (W, T, D).
template <typename T>
void row_to_channels_last(const StridedMaps<T>& qkv, const ConvGeometry& g, int64_t b, int64_t y,
                          T* dst) {
  const int64_t td = g.T * g.D;
  for (int64_t t = 0; t < g.T; ++t)  // (D, W) at row stride sc -> (W, D) at row stride T*D
    tile<T>(qkv.at(b, y, 0) + t * qkv.st, qkv.sc, dst + t * g.D, td, nullptr, 0, T(0), g.W, g.D);
}

// The mixed rows of one thread's output rows, each computed once into a ring of slots. A row of
// planar maps (unit stride along x, as the ResNet variant's) is first transposed to channels-last
// in registers, so that fc runs over whole vectors of channels as for channels-last maps; with
// at least one vector of channels (D >= lanes: below that, mixing the planar row directly over
// positions is faster). With keep_maps the transposed rows are kept in a ring of their own, for
// the backward's use of the row it mixed (maps_row).
template <typename T>
class MixedRows {
 public:
  MixedRows(const StridedMaps<T>& qkv, const T* fc_w, const T* fc_b, const ConvGeometry& g,
            bool keep_maps = false)
      : qkv_(qkv), fc_w_(fc_w), fc_b_(fc_b), g_(g), ring_((g.kernel - 1) * g.dilation + 1),
        cache_(ring_ * g.row_len(), T(0)), held_(ring_, -1),
        planar_(qkv.sx == 1 && qkv.sc != 1 && g.D >= g.lanes),
        maps_ring_(keep_maps ? ring_ : 1),
        maps_(planar_ || keep_maps ? maps_ring_ * g.W * g.T * g.D : 0),
        maps_held_(maps_ring_, -1) {}

  // Mixed row y of image b (padded coordinates), or null outside the map.
  const T* row(int64_t b, int64_t y) {
    if (y < 0 || y >= g_.H) return nullptr;
    T* slot = cache_.data() + (y % ring_) * g_.row_len();
    if (held_[y % ring_] != b * g_.H + y) {
      if (planar_) {
        const int64_t td = g_.T * g_.D;
        const StridedMaps<T> row_maps{maps_row(b, y), 0, 0, td, g_.D, 1};
        mix_row(row_maps, fc_w_, fc_b_, g_, 0, 0, slot, false);
      } else {
        mix_row(qkv_, fc_w_, fc_b_, g_, b, y, slot, true);
      }
      held_[y % ring_] = b * g_.H + y;
    }
    return slot;
  }

  // Asks for the input rows that row(b, y) will read, where that row is still to be made from
  // planar maps: T * D rows of channel planes, more streams than the hardware prefetcher follows.
  void prefetch(int64_t b, int64_t y) const {
    if (y < 0 || y >= g_.H || held_[y % ring_] == b * g_.H + y || qkv_.sx != 1 || qkv_.sc == 1)
      return;
    for (int64_t t = 0; t < g_.T; ++t)
      for (int64_t c = 0; c < g_.D; ++c)
        prefetch_elements(qkv_.at(b, y, 0) + t * qkv_.st + c * qkv_.sc, g_.W);
  }

  // Row y of image b of planar maps as channels-last (W, T, D) (row_to_channels_last), made once
  // while it stays in the ring.
  const T* maps_row(int64_t b, int64_t y) {
    T* slot = maps_.data() + (y % maps_ring_) * g_.W * g_.T * g_.D;
    if (maps_held_[y % maps_ring_] != b * g_.H + y) {
      row_to_channels_last(qkv_, g_, b, y, slot);
      maps_held_[y % maps_ring_] = b * g_.H + y;
    }
    return slot;
  }

 private:
  const StridedMaps<T>& qkv_;
  const T* fc_w_;
  const T* fc_b_;
  const ConvGeometry& g_;
  int64_t ring_;
  std::vector<T> cache_;  // padding columns and lanes stay zero
  std::vector<int64_t> held_;  // b * H + y of the row in each slot
  bool planar_;
  int64_t maps_ring_;
  std::vector<T> maps_;  // (W, T, D) rows of planar maps, transposed
  std::vector<int64_t> maps_held_;
};

// Asks for the n columns of each of the C channel rows of a planar output row (and its addend's).
template <typename T>
void prefetch_planar_row(const OutRow<T>& row, int64_t C, int64_t n) {
  for (int64_t c = 0; c < C; ++c) {
    prefetch_elements(row.ptr + c * row.sc, n);
    if (row.add && row.add != row.ptr) prefetch_elements(row.add + c * row.sc, n);
  }
}

// The output (and the optional addend, same strides): element (b, yo, xo, c) at
// b * sb + yo * sy + xo * sx + c * sc.
template <typename T>
struct OutMap {
  T* ptr;
  const T* add;
  T scale;
  int64_t sb, sy, sx, sc;
  OutRow<T> row(int64_t b, int64_t yo) const {
    const int64_t at = b * sb + yo * sy;
    return {ptr + at, add ? add + at : nullptr, scale, sx, sc};
  }
};

// ---------------------------------------------------------------------------------------------
// Planar maps at stride 1 with rows of at least kPlanarRowsMinWidth outputs (the ResNet variant's
// inference, and the forward of its training path, at 56x56 and at detection sizes): each task is
// one channel c of one image, vectorised along the rows, so that neither qkv nor the output is
// transposed and no mixed row of all channels has to stay in the cache. A task keeps its
// channel's mixed rows, row[j * wp + pad + x] with zeros around the map, in a ring; each row is
// mixed once. Narrower rows fill too few lanes (a 7-wide row 7 of 16) and take conv_path_impl's
// channels-last vectors (the two were even at 25 to 34 wide, this path 0.5x-0.82x the time at
// 42 to 160 wide, 1.05x-1.5x at 7 to 14).

// n_t <= kMaxPlanarMaps maps (3 * heads) per mixed row: stack buffers in mix_planar_row.
constexpr int64_t kMaxPlanarMaps = 64;

inline bool takes_planar_rows(const ConvGeometry& g, int64_t qkv_sx, int64_t out_sx) {
  return qkv_sx == 1 && out_sx == 1 && g.stride == 1 && g.T <= kMaxPlanarMaps &&
         g.Wo >= kPlanarRowsMinWidth;
}

// The K2 mixed rows of one channel of one map row: row[j * wp + pad + x] = fc_b[j] +
// sum_t fc_w[j, t] * src[t][x] for x < W, two vectors of positions at a time; the lanes past the
// map are zeroed again (the padding lanes stay zero).
template <typename T>
void mix_planar_row(const T* const* src, int64_t n_t, const T* fc_w, const T* fc_b,
                    const ConvGeometry& g, int64_t wp, T* row) {
  using V = typename WideOf<T>::type;
  constexpr int64_t L = kWideLanes<T>;
  constexpr int kJB = 9;  // 2 x 9 sums in registers
  const int64_t full = g.W / L * L;  // positions read as whole vectors from the maps
  T tail[kMaxPlanarMaps * L];  // the rest of each map's row, zero-padded to a vector
  if (full < g.W)
    for (int64_t t = 0; t < n_t; ++t) {
      fill_short(tail + t * L, L, T(0));
      copy_short(src[t] + full, g.W - full, tail + t * L);
    }
  for (int64_t x0 = 0; x0 < g.W; x0 += 2 * L)
    with_count<2>(x0 + L < g.W ? 2 : 1, [&](auto XB) {
      for (int64_t j0 = 0; j0 < g.K2; j0 += kJB)
        with_count<kJB>(g.K2 - j0, [&](auto JB) {
          V acc[XB()][JB()];
          for (int jj = 0; jj < JB(); ++jj)
            for (int p = 0; p < XB(); ++p) acc[p][jj] = V{} + (fc_b ? fc_b[j0 + jj] : T(0));
          for (int64_t t = 0; t < n_t; ++t) {
            V v[XB()];
            for (int p = 0; p < XB(); ++p) {
              const int64_t x = x0 + p * L;
              v[p] = *reinterpret_cast<const V*>(x < full ? src[t] + x : tail + t * L);
            }
            for (int jj = 0; jj < JB(); ++jj) {
              V w = V{} + fc_w[(j0 + jj) * n_t + t];
              in_register(w);
              for (int p = 0; p < XB(); ++p) acc[p][jj] += w * v[p];
            }
          }
          for (int jj = 0; jj < JB(); ++jj)
            for (int p = 0; p < XB(); ++p)
              *reinterpret_cast<V*>(row + (j0 + jj) * wp + g.pad + x0 + p * L) = acc[p][jj];
        });
    });
  if (full < g.W)
    for (int64_t j = 0; j < g.K2; ++j) fill_short(row + j * wp + g.pad + g.W, full + L - g.W, T(0));
}

// PX vectors of output positions from x0 times outputs m0 .. m0 + MB - 1 of channel c of one
// output row: bias[mi] + sum over (a, e, j) of w[m, a, e, j] * rows[a][j * wp + x + e * dil]
// (plus scale times the addend where there is one), stored at (c * M + m) * sc + x. w: the
// channel's taps, (M, k, k, K2); bias: its biases from m0.
template <typename T, int PX, int MB>
void planar_rows_block(const T* const* rows, const T* w, const T* bias, const ConvGeometry& g,
                       int64_t wp, int64_t x0, int64_t m0, int64_t c, const OutRow<T>& out) {
  using V = typename WideOf<T>::type;
  constexpr int64_t L = kWideLanes<T>;
  const int64_t taps = g.taps();
  V acc[PX][MB];
  for (int mi = 0; mi < MB; ++mi)
    for (int p = 0; p < PX; ++p) acc[p][mi] = V{} + bias[mi];
  for (int64_t a = 0; a < g.kernel; ++a) {
    if (!rows[a]) continue;  // above or below the map
    for (int64_t e = 0; e < g.kernel; ++e) {
      const T* in = rows[a] + x0 + e * g.dilation;
      const T* wt = w + m0 * taps + (a * g.kernel + e) * g.K2;
      for (int64_t j = 0; j < g.K2; ++j) {
        V iv[PX];
        for (int p = 0; p < PX; ++p) iv[p] = *reinterpret_cast<const V*>(in + j * wp + p * L);
        for (int mi = 0; mi < MB; ++mi) {
          const T wv = wt[mi * taps + j];
          for (int p = 0; p < PX; ++p) acc[p][mi] += wv * iv[p];
        }
      }
    }
  }
  for (int mi = 0; mi < MB; ++mi) {
    const int64_t at = (c * g.M + m0 + mi) * out.sc;
    for (int p = 0; p < PX; ++p) {
      const int64_t x = x0 + p * L, n = std::min<int64_t>(L, g.Wo - x);
      T* o = out.ptr + at + x;
      const T* add = out.add ? out.add + at + x : nullptr;
      if (n == L) {
        V r = acc[p][mi];
        if (add) r += out.scale * *reinterpret_cast<const V*>(add);
        *reinterpret_cast<V*>(o) = r;
      } else {
        alignas(ACMIX_WIDE_BYTES) T sums[L];
        *reinterpret_cast<V*>(sums) = acc[p][mi];
        for (int64_t l = 0; l < n; ++l) o[l] = add ? sums[l] + out.scale * add[l] : sums[l];
      }
    }
  }
}

// conv_path_impl for planar maps and output at stride 1 (see kPlanarRowsMinWidth).
template <typename T>
void conv_path_planar_rows(const StridedMaps<T>& qkv, const T* fc_w, const T* fc_b,
                           const T* weight, const T* bias, const ConvGeometry& g, int64_t batch,
                           const OutMap<T>& out) {
  constexpr int64_t L = kWideLanes<T>;
  // 4 x 4 sums of AVX-512's 32 registers; 2 x 4 of AVX2's 16
  constexpr int kPX = ACMIX_WIDE_BYTES == 64 ? 4 : 2, kMB = 4;
  const int64_t wp = round_up(g.W, L) + (g.kernel - 1) * g.dilation;
  const int64_t ring = (g.kernel - 1) * g.dilation + 1, taps = g.taps();
  at::parallel_for(0, batch * g.D, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> cache(ring * g.K2 * wp, T(0));  // padding lanes stay zero
    std::vector<int64_t> held(ring);
    std::vector<T> w(g.M * taps), b(g.M);
    std::vector<const T*> src(g.T), rows(g.kernel);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.D, c = task % g.D;
      for (int64_t m = 0; m < g.M; ++m) {  // channel c's lane of the packed weight
        const T* packed = weight + ((c / g.lanes) * g.M + m) * taps * g.lanes + c % g.lanes;
        for (int64_t i = 0; i < taps; ++i) w[m * taps + i] = packed[i * g.lanes];
        b[m] = bias[m * g.Dp + c];
      }
      std::fill(held.begin(), held.end(), -1);
      for (int64_t yo = 0; yo < g.Ho; ++yo) {
        for (int64_t a = 0; a < g.kernel; ++a) {
          const int64_t y = yo + a * g.dilation - g.pad;
          rows[a] = nullptr;
          if (y < 0 || y >= g.H) continue;
          T* slot = cache.data() + (y % ring) * g.K2 * wp;
          if (held[y % ring] != y) {
            for (int64_t t = 0; t < g.T; ++t) src[t] = qkv.at(n, y, 0) + t * qkv.st + c * qkv.sc;
            mix_planar_row(src.data(), g.T, fc_w, fc_b, g, wp, slot);
            held[y % ring] = y;
          }
          rows[a] = slot;
        }
        const OutRow<T> row = out.row(n, yo);
        for (int64_t x0 = 0; x0 < g.Wo; x0 += kPX * L)
          with_count<kPX>((std::min<int64_t>(kPX * L, g.Wo - x0) + L - 1) / L, [&](auto PX) {
            for (int64_t m0 = 0; m0 < g.M; m0 += kMB)
              with_count<kMB>(g.M - m0, [&](auto MB) {
                planar_rows_block<T, PX(), MB()>(rows.data(), w.data(), b.data() + m0, g, wp,
                                                 x0, m0, c, row);
              });
          });
      }
    }
  });
}

template <typename T>
void conv_path_impl(const StridedMaps<T>& qkv, const T* fc_w, const T* fc_b, const T* weight,
                    const T* bias, const ConvGeometry& g, int64_t batch, const OutMap<T>& out) {
  // A planar output row (unit stride along x) of at least one 8-wide tile is made channels-last
  // first and then transposed in register tiles, with the addend added: no store strided by a
  // plane per channel.
  if (takes_planar_rows(g, qkv.sx, out.sx)) {
    conv_path_planar_rows(qkv, fc_w, fc_b, weight, bias, g, batch, out);
    return;
  }
  const bool planar = out.sc != 1 && out.sx == 1 && g.Wo >= 8;
  const int64_t C = g.D * g.M;
  at::parallel_for(0, batch * g.Ho, 1, [&](int64_t begin, int64_t end) {
    MixedRows<T> mixed(qkv, fc_w, fc_b, g);
    std::vector<const T*> rows(g.kernel);
    std::vector<T> row_buffer(planar ? g.Wo * C : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / g.Ho, yo = task % g.Ho;
      for (int64_t a = 0; a < g.kernel; ++a)
        rows[a] = mixed.row(b, yo * g.stride + a * g.dilation - g.pad);
      const OutRow<T> row = out.row(b, yo);
      if (task + 1 < end && yo + 1 < g.Ho) {  // the next row's new input rows and its output
        for (int64_t a = 0; a < g.kernel; ++a)
          mixed.prefetch(b, (yo + 1) * g.stride + a * g.dilation - g.pad);
        if (planar) prefetch_planar_row(out.row(b, yo + 1), C, g.Wo);
      }
      if (!planar) {
        output_row(rows.data(), weight, bias, g, row);
        continue;
      }
      output_row(rows.data(), weight, bias, g, OutRow<T>{row_buffer.data(), nullptr, T(0), C, 1});
      tile<T>(row_buffer.data(), C, row.ptr, row.sc, row.add, row.sc, row.scale, C, g.Wo);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Backward (dep_conv's gradients through its stride-1 form): the gradient rows are de-interleaved
// from the output's channel order c * M + m into
// row[((chunk * (Wo + 2 pad) + xo + pad) * M + m) * lanes], zero-padded left and right, so that
// every sum below runs over whole vectors.

// The output gradient of the stride-1 dep_conv: element (b, yo, xo, c) at
// ptr[b * sb + (yo / step) * sy + (xo / step) * sx + c * sc] where yo and xo are multiples of step,
// zero elsewhere (a strided dep_conv's gradient placed at its positions).
template <typename T>
struct GradMap {
  const T* ptr;
  int64_t sb, sy, sx, sc, step;
};

template <typename T>
void deinterleave_row(const GradMap<T>& go, const ConvGeometry& g, int64_t b, int64_t yo, T* row) {
  constexpr int64_t L = kWideLanes<T>;
  const int64_t wp = g.Wo + 2 * g.pad, M = g.M, cols = (g.Wo - 1) / go.step + 1;
  const T* src_row = go.ptr + b * go.sb + yo / go.step * go.sy;
  for (int64_t ch = 0; ch < g.chunks(); ++ch) {
    const int64_t lanes = std::min<int64_t>(L, g.D - ch * L);
    T* dst_row = row + (ch * wp + g.pad) * M * L;
    if (go.sc == 1) {  // channels-last: one position's channels at a time
      for (int64_t k = 0; k < cols; ++k) {
        const T* src = src_row + k * go.sx + ch * L * M;
        T* dst = dst_row + k * go.step * M * L;
        for (int64_t m = 0; m < M; ++m)
          for (int64_t l = 0; l < lanes; ++l) dst[m * L + l] = src[l * M + m];
      }
    } else {  // planar: one channel's row at a time
      for (int64_t m = 0; m < M; ++m)
        for (int64_t l = 0; l < lanes; ++l) {
          const T* src = src_row + ((ch * L + l) * M + m) * go.sc;
          T* dst = dst_row + m * L + l;
          for (int64_t k = 0; k < cols; ++k) dst[k * go.step * M * L] = src[k * go.sx];
        }
    }
  }
}

// grad_weight[chunk, m0 + mi, a, e, j0 + jj] += sum_xo go[xo, m0 + mi] * mixed[xo + e*dil, j0 + jj]
template <typename T, int MB, int JB>
void weight_grad_block(const T* go_row, const T* mixed_row, const ConvGeometry& g, int64_t a,
                       int64_t e, int64_t ch, int64_t m0, int64_t j0, T* grad_w) {
  using V = typename WideOf<T>::type;
  const int64_t L = g.lanes, col = g.K2 * L;
  V acc[MB][JB];
  zero(acc);
  const T* go = go_row + (ch * (g.Wo + 2 * g.pad) + g.pad) * g.M * L + m0 * L;
  const T* mx = mixed_row + ch * g.row_chunk() + e * g.dilation * col + j0 * L;
  for (int64_t xo = 0; xo < g.Wo; ++xo) {
    V gv[MB], mv[JB];
    for (int mi = 0; mi < MB; ++mi) gv[mi] = *reinterpret_cast<const V*>(go + (xo * g.M + mi) * L);
    for (int jj = 0; jj < JB; ++jj) mv[jj] = *reinterpret_cast<const V*>(mx + xo * col + jj * L);
    for (int mi = 0; mi < MB; ++mi)
      for (int jj = 0; jj < JB; ++jj) acc[mi][jj] += gv[mi] * mv[jj];
  }
  for (int mi = 0; mi < MB; ++mi) {
    T* w = grad_w + ((ch * g.M + m0 + mi) * g.taps() + (a * g.kernel + e) * g.K2 + j0) * L;
    for (int jj = 0; jj < JB; ++jj) *reinterpret_cast<V*>(w + jj * L) += acc[mi][jj];
  }
}

// grad_mixed[x + p, j0 + jj] =
//     sum_{a, e, m} weight[m, a, e, j0 + jj] * go_a[x + p + pad - e*dil, m]
template <typename T, int PX, int JB>
void mixed_grad_block(const T* const* go_rows, const T* weight, const ConvGeometry& g,
                      int64_t ch, int64_t x, int64_t j0, T* grad_mixed) {
  using V = typename WideOf<T>::type;
  const int64_t L = g.lanes, wp = g.Wo + 2 * g.pad;
  V acc[PX][JB];
  zero(acc);
  for (int64_t a = 0; a < g.kernel; ++a) {
    if (!go_rows[a]) continue;
    for (int64_t e = 0; e < g.kernel; ++e) {
      // padded column of output x + p - e*dil + pad
      const T* go = go_rows[a] + (ch * wp + x + 2 * g.pad - e * g.dilation) * g.M * L;
      const T* w = weight + (ch * g.M * g.taps() + (a * g.kernel + e) * g.K2 + j0) * L;
      for (int64_t m = 0; m < g.M; ++m) {
        V gv[PX], wv[JB];
        for (int p = 0; p < PX; ++p) gv[p] = *reinterpret_cast<const V*>(go + (p * g.M + m) * L);
        for (int jj = 0; jj < JB; ++jj)
          wv[jj] = *reinterpret_cast<const V*>(w + m * g.taps() * L + jj * L);
        for (int p = 0; p < PX; ++p)
          for (int jj = 0; jj < JB; ++jj) acc[p][jj] += gv[p] * wv[jj];
      }
    }
  }
  for (int p = 0; p < PX; ++p)
    for (int jj = 0; jj < JB; ++jj)
      *reinterpret_cast<V*>(grad_mixed + ((ch * g.W + x + p) * g.K2 + j0 + jj) * L) = acc[p][jj];
}

// Per-thread partial sums of the parameter gradients.
template <typename T>
struct ParamGrads {
  std::vector<T> weight, bias, fc_w, fc_b;  // packed weight, (M, Dp), (K2, T, lanes), (K2, lanes)
  explicit ParamGrads(const ConvGeometry& g)
      : weight(g.chunks() * g.M * g.taps() * g.lanes, T(0)), bias(g.M * g.Dp, T(0)),
        fc_w(g.K2 * g.T * g.lanes, T(0)), fc_b(g.K2 * g.lanes, T(0)) {}
  void add_to(ParamGrads& total) const {
    for (auto [src, dst] : {std::pair{&weight, &total.weight}, std::pair{&bias, &total.bias},
                            std::pair{&fc_w, &total.fc_w}, std::pair{&fc_b, &total.fc_b}})
      for (size_t i = 0; i < src->size(); ++i) (*dst)[i] += (*src)[i];
  }
};

// One chunk of channels of position x, t = t0 .. t0 + TB - 1 (zero beyond d).
template <typename T, int TB>
inline void load_maps(const T* src, int64_t st, int64_t lanes, typename WideOf<T>::type* in) {
  using V = typename WideOf<T>::type;
  for (int tt = 0; tt < TB; ++tt) {
    if (lanes == kWideLanes<T>) {
      in[tt] = *reinterpret_cast<const V*>(src + tt * st);
    } else {
      in[tt] = V{};
      for (int64_t l = 0; l < lanes; ++l) in[tt][l] = src[tt * st + l];
    }
  }
}

// fc_w's gradient [j0 + jj, t0 + tt] (per lane) += sum over the row's positions and chunks of
// grad_mixed[x, j] * qkv[x, t]: TB x JB sums in registers.
template <typename T, int TB, int JB>
void fc_weight_grad_block(const T* grad_mixed, const StridedMaps<T>& qkv, const ConvGeometry& g,
                          int64_t b, int64_t y, int64_t t0, int64_t j0, T* grad_fc_w) {
  using V = typename WideOf<T>::type;
  constexpr int64_t L = kWideLanes<T>;
  V acc[TB][JB];
  zero(acc);
  for (int64_t ch = 0; ch < g.chunks(); ++ch) {
    const int64_t lanes = std::min<int64_t>(L, g.D - ch * L);
    const T* gm = grad_mixed + ch * g.W * g.K2 * L + j0 * L;
    for (int64_t x = 0; x < g.W; ++x) {
      V in[TB], gv[JB];
      load_maps<T, TB>(qkv.at(b, y, x) + t0 * qkv.st + ch * L, qkv.st, lanes, in);
      for (int jj = 0; jj < JB; ++jj)
        gv[jj] = *reinterpret_cast<const V*>(gm + (x * g.K2 + jj) * L);
      for (int tt = 0; tt < TB; ++tt)
        for (int jj = 0; jj < JB; ++jj) acc[tt][jj] += in[tt] * gv[jj];
    }
  }
  for (int tt = 0; tt < TB; ++tt)
    for (int jj = 0; jj < JB; ++jj)
      *reinterpret_cast<V*>(grad_fc_w + ((j0 + jj) * g.T + t0 + tt) * L) += acc[tt][jj];
}

// grad_qkv[t0 + tt, c] = sum_j fc_w[j, t0 + tt] grad_mixed[j, c] of one position and chunk of
// channels, the TB sums in registers.
template <typename T, int TB>
inline void through_fc_block(const T* gx, const T* fc_w, const ConvGeometry& g, int64_t t0,
                             int64_t lanes, T* dst) {
  using V = typename WideOf<T>::type;
  V acc[TB];
  for (int tt = 0; tt < TB; ++tt) acc[tt] = V{};
  for (int64_t j = 0; j < g.K2; ++j) {
    const V gv = *reinterpret_cast<const V*>(gx + j * g.lanes);
    for (int tt = 0; tt < TB; ++tt) acc[tt] += fc_w[j * g.T + t0 + tt] * gv;
  }
  for (int tt = 0; tt < TB; ++tt) {
    if (lanes == g.lanes) {
      *reinterpret_cast<V*>(dst + (t0 + tt) * g.D) = acc[tt];
    } else {
      for (int64_t l = 0; l < lanes; ++l) dst[(t0 + tt) * g.D + l] = acc[tt][l];
    }
  }
}

// Through fc for one row: grad_qkv[x, t, c] = sum_j fc_w[j, t] grad_mixed[x, j, c], and fc's
// gradients summed over the row's positions (per lane; the lanes are summed at the end).
template <typename T>
void fc_grads_row(const T* grad_mixed, const StridedMaps<T>& qkv, const T* fc_w,
                  const ConvGeometry& g, int64_t b, int64_t y, T* grad_qkv, ParamGrads<T>& part) {
  using V = typename WideOf<T>::type;
  constexpr int kB = 3, kTB = 6;
  const int64_t L = g.lanes;
  for (int64_t x = 0; x < g.W; ++x)
    for (int64_t ch = 0; ch < g.chunks(); ++ch) {
      const int64_t lanes = std::min<int64_t>(L, g.D - ch * L);
      const T* gx = grad_mixed + (ch * g.W + x) * g.K2 * L;
      for (int64_t j = 0; j < g.K2; ++j)
        *reinterpret_cast<V*>(part.fc_b.data() + j * L) += *reinterpret_cast<const V*>(gx + j * L);
      T* dst = grad_qkv + x * g.T * g.D + ch * L;
      for (int64_t t0 = 0; t0 < g.T; t0 += kTB)
        with_count<kTB>(std::min<int64_t>(kTB, g.T - t0), [&](auto TB) {
          through_fc_block<T, TB()>(gx, fc_w, g, t0, lanes, dst);
        });
    }
  for (int64_t t0 = 0; t0 < g.T; t0 += kB)
    for (int64_t j0 = 0; j0 < g.K2; j0 += kB)
      with_block_shape(std::min<int64_t>(kB, g.T - t0), std::min<int64_t>(kB, g.K2 - j0),
                       [&](auto TB, auto JB) {
                         fc_weight_grad_block<T, TB(), JB()>(grad_mixed, qkv, g, b, y, t0, j0,
                                                             part.fc_w.data());
                       });
}

// The de-interleaved gradient rows of one thread's rows, each made once into a ring of slots (the
// columns between a step's stay zero).
template <typename T>
class GradRows {
 public:
  GradRows(const GradMap<T>& go, const ConvGeometry& g)
      : go_(go), g_(g), ring_((g.kernel - 1) * g.dilation + 1),
        size_(g.chunks() * (g.Wo + 2 * g.pad) * g.M * g.lanes), cache_(ring_ * size_, T(0)),
        held_(ring_, -1) {}

  // Asks for the planar rows that row(b, yo) will read, where it is still to be made.
  void prefetch(int64_t b, int64_t yo) const {
    if (yo < 0 || yo >= g_.Ho || yo % go_.step != 0 || held_[yo % ring_] == b * g_.Ho + yo ||
        go_.sc == 1 || go_.sx != 1)
      return;
    const T* src_row = go_.ptr + b * go_.sb + yo / go_.step * go_.sy;
    for (int64_t c = 0; c < g_.D * g_.M; ++c)
      prefetch_elements(src_row + c * go_.sc, (g_.Wo - 1) / go_.step + 1);
  }

  // Gradient row yo of image b, or null outside the map and for the rows between a step's.
  const T* row(int64_t b, int64_t yo) {
    if (yo < 0 || yo >= g_.Ho || yo % go_.step != 0) return nullptr;
    T* slot = cache_.data() + (yo % ring_) * size_;
    if (held_[yo % ring_] != b * g_.Ho + yo) {
      deinterleave_row(go_, g_, b, yo, slot);
      held_[yo % ring_] = b * g_.Ho + yo;
    }
    return slot;
  }

 private:
  const GradMap<T>& go_;
  const ConvGeometry& g_;
  int64_t ring_, size_;
  std::vector<T> cache_;  // padding columns and lanes stay zero
  std::vector<int64_t> held_;
};

// Where the gradient of qkv goes: channels-last (B, H, W, T, D), or planar (B, T, D, H, W) plus
// scale times the addends (each holding T / count of the maps, planar, contiguous).
template <typename T>
struct QkvGrad {
  T* ptr;
  bool planar;
  std::vector<const T*> addends;
  T scale;
};

// Row r of the planar gradient from its channels-last row (W, T, D), plus the addends.
template <typename T>
void store_planar_row(const T* row, const QkvGrad<T>& out, const ConvGeometry& g, int64_t b,
                      int64_t r) {
  const int64_t plane = g.H * g.W, td = g.T * g.D;
  const int64_t per = out.addends.empty() ? 1 : g.T / static_cast<int64_t>(out.addends.size());
  for (int64_t t = 0; t < g.T; ++t) {
    const T* add = out.addends.empty()
                       ? nullptr
                       : out.addends[t / per] + ((b * per + t % per) * g.D * g.H + r) * g.W;
    tile<T>(row + t * g.D, td, out.ptr + ((b * g.T + t) * g.D * g.H + r) * g.W, plane, add, plane,
            out.scale, g.D, g.W);
  }
}

// Asks for the rows of planar gradient row r and of its addends (store_planar_row's).
template <typename T>
void prefetch_planar_rows(const QkvGrad<T>& out, const ConvGeometry& g, int64_t b, int64_t r) {
  const int64_t per = out.addends.empty() ? 1 : g.T / static_cast<int64_t>(out.addends.size());
  for (int64_t t = 0; t < g.T; ++t)
    for (int64_t c = 0; c < g.D; ++c) {
      prefetch_elements(out.ptr + (((b * g.T + t) * g.D + c) * g.H + r) * g.W, g.W);
      if (!out.addends.empty())
        prefetch_elements(
            out.addends[t / per] + (((b * per + t % per) * g.D + c) * g.H + r) * g.W, g.W);
    }
}

// One pass over the rows r (stride 1, so output row r sits over input row r): the gradients of
// dep_conv's weight and bias from output row r, those of qkv and fc from input row r. Rows of
// planar maps are transposed to channels-last first, once for mixing and fc's gradients alike.
template <typename T>
void backward_impl(const GradMap<T>& go, const StridedMaps<T>& qkv, const T* fc_w, const T* fc_b,
                   const T* weight, const ConvGeometry& g, int64_t batch, const QkvGrad<T>& out,
                   ParamGrads<T>& total) {
  using V = typename WideOf<T>::type;
  constexpr int kB = 3;
  const int64_t L = g.lanes, wp = g.Wo + 2 * g.pad;
  std::mutex lock;
  at::parallel_for(0, batch * g.H, 1, [&](int64_t begin, int64_t end) {
    MixedRows<T> mixed(qkv, fc_w, fc_b, g, out.planar);
    GradRows<T> grads(go, g);
    ParamGrads<T> part(g);
    std::vector<const T*> go_rows(g.kernel);
    std::vector<T> grad_mixed(g.chunks() * g.W * g.K2 * L);
    const int64_t td = g.T * g.D;
    std::vector<T> grad_row(out.planar ? g.W * td : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / g.H, r = task % g.H;
      for (int64_t a = 0; a < g.kernel; ++a) go_rows[a] = grads.row(b, r + g.pad - a * g.dilation);
      if (task + 1 < end && r + 1 < g.H) {  // the rows that row r + 1 reads first
        for (int64_t a = 0; a < g.kernel; ++a) {
          grads.prefetch(b, r + 1 + g.pad - a * g.dilation);
          mixed.prefetch(b, r + 1 + a * g.dilation - g.pad);
        }
        if (out.planar) prefetch_planar_rows(out, g, b, r + 1);
      }
      const T* go_row = go_rows[g.kernel / 2];  // output row r
      for (int64_t ch = 0; ch < g.chunks() && go_row; ++ch)
        for (int64_t m = 0; m < g.M; ++m) {
          V sum = {};
          for (int64_t xo = 0; xo < g.Wo; ++xo)
            sum += *reinterpret_cast<const V*>(go_row + ((ch * wp + xo + g.pad) * g.M + m) * L);
          *reinterpret_cast<V*>(part.bias.data() + m * g.Dp + ch * L) += sum;
        }
      for (int64_t a = 0; a < g.kernel && go_row; ++a) {
        const T* row = mixed.row(b, r + a * g.dilation - g.pad);
        if (!row) continue;
        for (int64_t e = 0; e < g.kernel; ++e)
          for (int64_t ch = 0; ch < g.chunks(); ++ch)
            for (int64_t m0 = 0; m0 < g.M; m0 += kB)
              for (int64_t j0 = 0; j0 < g.K2; j0 += kB)
                with_block_shape(std::min<int64_t>(kB, g.M - m0), std::min<int64_t>(kB, g.K2 - j0),
                                 [&](auto MB, auto JB) {
                                   weight_grad_block<T, MB(), JB()>(go_row, row, g, a, e, ch, m0,
                                                                    j0, part.weight.data());
                                 });
      }
      for (int64_t ch = 0; ch < g.chunks(); ++ch)
        for (int64_t x = 0; x < g.W; x += kB)
          for (int64_t j0 = 0; j0 < g.K2; j0 += kB)
            with_block_shape(std::min<int64_t>(kB, g.W - x), std::min<int64_t>(kB, g.K2 - j0),
                             [&](auto PX, auto JB) {
                               mixed_grad_block<T, PX(), JB()>(go_rows.data(), weight, g, ch, x,
                                                               j0, grad_mixed.data());
                             });
      if (out.planar) {  // row r is in the ring where the loop above mixed it
        fc_grads_row(grad_mixed.data(), StridedMaps<T>{mixed.maps_row(b, r), 0, 0, td, g.D, 1},
                     fc_w, g, 0, 0, grad_row.data(), part);
        store_planar_row(grad_row.data(), out, g, b, r);
      } else {
        fc_grads_row(grad_mixed.data(), qkv, fc_w, g, b, r, out.ptr + task * g.W * td, part);
      }
    }
    std::lock_guard<std::mutex> guard(lock);
    part.add_to(total);
  });
}

// The sizes of a call, checked: qkv (B, H, W, T, d), fc_weight (K2, T), packed weight
// (d_pad / lanes, M, k, k, K2, lanes).
ConvGeometry geometry(const at::Tensor& qkv, const at::Tensor& fc_weight, const at::Tensor& weight,
                      int64_t stride, int64_t dilation) {
  TORCH_CHECK(qkv.dim() == 5 && qkv.device().is_cpu(), "qkv must be a CPU (B, H, W, T, d) tensor");
  TORCH_CHECK(weight.dim() == 6 && weight.is_contiguous() && fc_weight.is_contiguous(),
              "weight (d_pad / lanes, M, k, k, K2, lanes) and fc_weight (K2, T) must be "
              "contiguous");
  TORCH_CHECK(weight.scalar_type() == qkv.scalar_type() &&
                  fc_weight.scalar_type() == qkv.scalar_type(),
              "qkv, fc_weight and weight must have one dtype");
  ConvGeometry g;
  g.H = qkv.size(1), g.W = qkv.size(2), g.T = qkv.size(3), g.D = qkv.size(4);
  g.M = weight.size(1), g.kernel = weight.size(2), g.K2 = weight.size(4);
  g.lanes = kVectorBytes / qkv.element_size();
  g.Dp = weight.size(0) * weight.size(5);
  g.stride = stride, g.dilation = dilation, g.pad = dilation * (g.kernel / 2);
  g.Ho = (g.H - 1) / stride + 1, g.Wo = (g.W - 1) / stride + 1;
  TORCH_CHECK(g.kernel % 2 == 1 && weight.size(3) == g.kernel,
              "dep_conv kernel must be odd, square");
  TORCH_CHECK(fc_weight.size(0) == g.K2 && fc_weight.size(1) == g.T, "fc_weight must be (K2, T)");
  TORCH_CHECK(weight.size(5) == g.lanes && g.Dp == round_up(g.D, g.lanes),
              "weight must hold d rounded up to chunks of ", g.lanes, " lanes");
  return g;
}

template <typename T>
StridedMaps<T> strided_maps(const at::Tensor& qkv) {
  return {qkv.data_ptr<T>(), qkv.stride(0), qkv.stride(1), qkv.stride(2), qkv.stride(3),
          qkv.stride(4)};
}

}  // namespace

at::Tensor conv_path_forward(const at::Tensor& qkv, const at::Tensor& fc_weight,
                             const c10::optional<at::Tensor>& fc_bias, const at::Tensor& weight,
                             const at::Tensor& bias, int64_t stride, int64_t dilation,
                             const c10::optional<at::Tensor>& addend, double addend_scale,
                             bool in_place) {
  const ConvGeometry g = geometry(qkv, fc_weight, weight, stride, dilation);
  TORCH_CHECK(bias.is_contiguous() && bias.size(0) == g.M && bias.size(1) == g.Dp,
              "bias must be a contiguous (M, d_pad)");
  TORCH_CHECK(!in_place || (addend.has_value() && addend->is_contiguous()),
              "in_place needs a contiguous addend");
  const at::Tensor fc_b_tensor = fc_bias.has_value() ? fc_bias->contiguous() : at::Tensor();
  at::Tensor out, add;
  if (addend.has_value()) {  // (B, C, Ho, Wo) planar, the output likewise
    TORCH_CHECK(addend->dim() == 4 && addend->size(0) == qkv.size(0) &&
                    addend->size(1) == g.D * g.M && addend->size(2) == g.Ho &&
                    addend->size(3) == g.Wo && addend->scalar_type() == qkv.scalar_type(),
                "addend must be (B, d * M, H_out, W_out) of the maps' dtype");
    add = addend->contiguous();
    // in place: every output element is written once, right after its addend is read
    if (in_place) at::assert_no_overlap(add, qkv);
    out = in_place ? add : at::empty_like(add);
  } else {
    out = at::empty({qkv.size(0), g.Ho, g.Wo, g.D * g.M}, qkv.options());
  }
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "acmix_conv_path_forward", [&] {
    const scalar_t* fc_b = fc_b_tensor.defined() ? fc_b_tensor.data_ptr<scalar_t>() : nullptr;
    OutMap<scalar_t> map{out.data_ptr<scalar_t>(), nullptr, static_cast<scalar_t>(addend_scale),
                         out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
    if (add.defined()) {  // (B, C, Ho, Wo)
      map.add = add.data_ptr<scalar_t>();
      map.sy = out.stride(2), map.sx = out.stride(3), map.sc = out.stride(1);
    }
    conv_path_impl<scalar_t>(strided_maps<scalar_t>(qkv), fc_weight.data_ptr<scalar_t>(), fc_b,
                             weight.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(), g,
                             qkv.size(0), map);
  });
  return out;
}

std::vector<at::Tensor> conv_path_backward(const at::Tensor& grad_out, const at::Tensor& qkv,
                                           const at::Tensor& fc_weight,
                                           const c10::optional<at::Tensor>& fc_bias,
                                           const at::Tensor& weight, int64_t stride,
                                           int64_t dilation, const std::vector<at::Tensor>& addends,
                                           double addend_scale, bool in_place) {
  const ConvGeometry g = geometry(qkv, fc_weight, weight, 1, dilation);
  TORCH_CHECK(stride >= 1, "stride must be >= 1");
  // planar: unit stride along W (with addends always: at H = W = 1 both layouts coincide)
  const bool planar = !addends.empty() || qkv.stride(4) != 1;
  TORCH_CHECK(!planar || qkv.stride(2) == 1 || g.W == 1,
              "qkv (B, H, W, T, d) needs a unit stride along d (channels-last) or W (planar)");
  const int64_t ho = (g.H - 1) / stride + 1, wo = (g.W - 1) / stride + 1;
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == qkv.size(0) && grad_out.size(1) == ho &&
                  grad_out.size(2) == wo && grad_out.size(3) == g.D * g.M &&
                  grad_out.scalar_type() == qkv.scalar_type(),
              "grad_out must be (B, H_out, W_out, d * M) of the maps' dtype");
  TORCH_CHECK(addends.empty() || g.T % static_cast<int64_t>(addends.size()) == 0,
              "the addends must split T evenly");
  for (const at::Tensor& a : addends)
    TORCH_CHECK(a.is_contiguous() && a.dim() == 5 && a.size(0) == qkv.size(0) &&
                    a.size(1) * static_cast<int64_t>(addends.size()) == g.T &&
                    a.size(2) == g.D && a.size(3) == g.H && a.size(4) == g.W &&
                    a.scalar_type() == qkv.scalar_type(),
                "each addend must be a contiguous (B, T / len(addends), d, H, W) of qkv's dtype");
  // In place: each element of the gradient is written once, right after its addend is read.
  TORCH_CHECK(!in_place || addends.size() == 1, "in_place needs exactly one addend");
  const at::Tensor fc_b_tensor = fc_bias.has_value() ? fc_bias->contiguous() : at::Tensor();
  at::Tensor grad_qkv =
      in_place ? addends[0].permute({0, 3, 4, 1, 2})
      : planar ? at::empty({qkv.size(0), g.T, g.D, g.H, g.W}, qkv.options()).permute({0, 3, 4, 1, 2})
               : at::empty({qkv.size(0), g.H, g.W, g.T, g.D}, qkv.options());
  at::Tensor grad_weight = at::empty(weight.sizes(), qkv.options());
  at::Tensor grad_bias = at::empty({g.M, g.Dp}, qkv.options());
  at::Tensor grad_fc_w = at::empty({g.K2, g.T}, qkv.options());
  at::Tensor grad_fc_b = at::empty({g.K2}, qkv.options());
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "acmix_conv_path_backward", [&] {
    using T = scalar_t;
    const T* fc_b = fc_b_tensor.defined() ? fc_b_tensor.data_ptr<T>() : nullptr;
    const GradMap<T> go{grad_out.data_ptr<T>(), grad_out.stride(0), grad_out.stride(1),
                        grad_out.stride(2), grad_out.stride(3), stride};
    QkvGrad<T> out{grad_qkv.data_ptr<T>(), planar, {}, static_cast<T>(addend_scale)};
    for (const at::Tensor& a : addends) out.addends.push_back(a.data_ptr<T>());
    ParamGrads<T> total(g);
    backward_impl<T>(go, strided_maps<T>(qkv), fc_weight.data_ptr<T>(), fc_b, weight.data_ptr<T>(),
                     g, qkv.size(0), out, total);
    std::copy(total.weight.begin(), total.weight.end(), grad_weight.data_ptr<T>());
    std::copy(total.bias.begin(), total.bias.end(), grad_bias.data_ptr<T>());
    T* gfw = grad_fc_w.data_ptr<T>();
    T* gfb = grad_fc_b.data_ptr<T>();
    for (int64_t j = 0; j < g.K2; ++j) {
      gfb[j] = 0;
      for (int64_t l = 0; l < g.lanes; ++l) gfb[j] += total.fc_b[j * g.lanes + l];
      for (int64_t t = 0; t < g.T; ++t) {
        gfw[j * g.T + t] = 0;
        for (int64_t l = 0; l < g.lanes; ++l)
          gfw[j * g.T + t] += total.fc_w[(j * g.T + t) * g.lanes + l];
      }
    }
  });
  return {grad_qkv, grad_fc_w, grad_fc_b, grad_weight, grad_bias};
}

std::vector<at::Tensor> conv_path_pack(const at::Tensor& weight,
                                       const c10::optional<at::Tensor>& bias,
                                       const at::Tensor& scale, int64_t d) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) % d == 0 && weight.size(2) == weight.size(3),
              "weight must be dep_conv's (d * M, K2, k, k)");
  TORCH_CHECK(scale.numel() == 1 || scale.numel() == weight.size(0),
              "scale must have 1 or d * M elements");
  const int64_t c_out = weight.size(0), K2 = weight.size(1), k = weight.size(2), M = c_out / d;
  const int64_t L = kVectorBytes / weight.element_size(), chunks = (d + L - 1) / L;
  const int64_t taps = k * k * K2;
  const at::Tensor w = weight.contiguous(), sc = scale.to(weight.scalar_type()).contiguous();
  at::Tensor packed = at::empty({chunks, M, k, k, K2, L}, weight.options());
  at::Tensor packed_bias = at::zeros({M, chunks * L}, weight.options());
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "acmix_conv_path_pack", [&] {
    using T = scalar_t;
    const T* src = w.data_ptr<T>();
    const T* s_ptr = sc.data_ptr<T>();
    const int64_t s_step = sc.numel() == 1 ? 0 : 1;
    T* dst = packed.data_ptr<T>();
    // written in order, one (chunk, m) block of taps * L per task: lane l of chunk ch is output
    // channel (ch * L + l) * M + m, its taps (a, e, j) read from weight[o, j, a, e]; lanes past
    // d are zeros
    at::parallel_for(0, chunks * M, std::max<int64_t>(1, 16384 / (taps * L)),
                     [&](int64_t begin, int64_t end) {
      T scales[64];
      const T* rows[64];
      for (int64_t block = begin; block < end; ++block) {
        const int64_t ch = block / M, m = block % M;
        const int64_t lanes = std::min(L, d - ch * L);
        for (int64_t l = 0; l < lanes; ++l) {
          const int64_t o = (ch * L + l) * M + m;
          scales[l] = s_ptr[o * s_step];
          rows[l] = src + o * K2 * k * k;
        }
        T* out = dst + block * taps * L;
        for (int64_t a = 0; a < k; ++a)
          for (int64_t e = 0; e < k; ++e)
            for (int64_t j = 0; j < K2; ++j, out += L) {
              const int64_t tap = (j * k + a) * k + e;
              for (int64_t l = 0; l < lanes; ++l) out[l] = rows[l][tap] * scales[l];
              for (int64_t l = lanes; l < L; ++l) out[l] = T(0);
            }
      }
    });
    if (bias.has_value()) {
      const at::Tensor b = bias->to(weight.scalar_type()).contiguous();
      const T* b_ptr = b.data_ptr<T>();
      T* pb = packed_bias.data_ptr<T>();
      for (int64_t c = 0; c < d; ++c)
        for (int64_t m = 0; m < M; ++m)
          pb[m * chunks * L + c] = b_ptr[c * M + m] * s_ptr[(c * M + m) * s_step];
    }
  });
  return {packed, packed_bias};
}

std::vector<at::Tensor> conv_path_unpack(const at::Tensor& grad_packed,
                                         const at::Tensor& grad_packed_bias, int64_t d) {
  TORCH_CHECK(grad_packed.dim() == 6 && grad_packed.is_contiguous() &&
                  grad_packed.size(2) == grad_packed.size(3) &&
                  grad_packed.size(0) * grad_packed.size(5) >= d,
              "grad_packed must be a contiguous (chunks, M, k, k, K2, lanes) of conv_path_pack");
  const int64_t chunks = grad_packed.size(0), M = grad_packed.size(1), k = grad_packed.size(2);
  const int64_t K2 = grad_packed.size(4), L = grad_packed.size(5), taps = k * k * K2;
  TORCH_CHECK(grad_packed_bias.is_contiguous() && grad_packed_bias.dim() == 2 &&
                  grad_packed_bias.size(0) == M && grad_packed_bias.size(1) == chunks * L,
              "grad_packed_bias must be a contiguous (M, chunks * lanes)");
  at::Tensor weight = at::empty({d * M, K2, k, k}, grad_packed.options());
  at::Tensor bias = at::empty({d * M}, grad_packed.options());
  AT_DISPATCH_FLOATING_TYPES(grad_packed.scalar_type(), "acmix_conv_path_unpack", [&] {
    using T = scalar_t;
    const T* src = grad_packed.data_ptr<T>();
    const T* src_b = grad_packed_bias.data_ptr<T>();
    T* dst = weight.data_ptr<T>();
    T* dst_b = bias.data_ptr<T>();
    for (int64_t c = 0; c < d; ++c)  // conv_path_pack's loops, reading where it writes
      for (int64_t m = 0; m < M; ++m) {
        const int64_t o = c * M + m;
        const T* in = src + ((c / L) * M + m) * taps * L + c % L;
        for (int64_t j = 0; j < K2; ++j)
          for (int64_t a = 0; a < k; ++a)
            for (int64_t e = 0; e < k; ++e)
              dst[((o * K2 + j) * k + a) * k + e] = in[((a * k + e) * K2 + j) * L];
        dst_b[o] = src_b[m * chunks * L + c];
      }
  });
  return {weight, bias};
}

}  // namespace acmix_mm

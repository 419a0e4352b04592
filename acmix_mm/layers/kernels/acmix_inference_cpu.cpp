// ACmix's stage II for inference on the CPU in one call: the positional term, the sliding-window
// attention and the conv path (which adds rate1 times the attention as it writes its result over
// it), without the Python, dispatcher and weight-packing steps between them (at small maps these
// cost as much as the kernels). Semantics: ACmix.mix_paths in acmix_mm/layers/acmix.py.
#include <torch/extension.h>

#include <cmath>
#include <vector>

#include "kernels.h"

namespace acmix_mm {

at::Tensor stage_position_term(const at::Tensor& qkv, const at::Tensor& grid,
                               const at::Tensor& conv_p_weight, const at::Tensor& conv_p_bias,
                               int64_t heads) {
  TORCH_CHECK(qkv.dim() == 4 && qkv.is_contiguous() && qkv.size(1) % (3 * heads) == 0,
              "qkv must be a contiguous (B, 3C, H, W) with C a multiple of heads");
  const int64_t H = qkv.size(2), W = qkv.size(3), d = qkv.size(1) / (3 * heads);
  TORCH_CHECK(grid.dim() == 2 && grid.size(0) == 2 && grid.size(1) == H * W,
              "grid must be (2, H * W)");
  // conv_p of the grid; only pe(o) enters the logits (see ACmix.position_term)
  return at::addmm(conv_p_bias.view({-1, 1}), conv_p_weight.view({-1, 2}), grid).view({d, H, W});
}

at::Tensor acmix_mix_paths(const at::Tensor& qkv, const at::Tensor& grid,
                           const at::Tensor& conv_p_weight, const at::Tensor& conv_p_bias,
                           const at::Tensor& fc_weight, const c10::optional<at::Tensor>& fc_bias,
                           const at::Tensor& dep_weight, const c10::optional<at::Tensor>& dep_bias,
                           double rate1, const at::Tensor& rate2, int64_t heads,
                           int64_t kernel_att, int64_t stride, int64_t dilation) {
  const at::Tensor pe = stage_position_term(qkv, grid, conv_p_weight, conv_p_bias, heads);
  const int64_t B = qkv.size(0), C = qkv.size(1) / 3, H = qkv.size(2), W = qkv.size(3);
  const int64_t d = C / heads;
  const at::Tensor split = qkv.view({B, 3, heads, d, H, W});
  const at::Tensor att =
      sliding_window_forward(split.select(1, 0), split.select(1, 1), split.select(1, 2), pe,
                             std::pow(static_cast<double>(d), -0.5), kernel_att, stride, dilation);
  const std::vector<at::Tensor> packed = conv_path_pack(dep_weight, dep_bias, rate2, d);
  const at::Tensor fc_w = fc_weight.reshape({fc_weight.size(0), -1}).contiguous();
  const at::Tensor maps = qkv.view({B, 3 * heads, d, H, W}).permute({0, 3, 4, 1, 2});
  return conv_path_forward(maps, fc_w, fc_bias, packed[0], packed[1], stride, dilation,
                           att.view({B, C, att.size(3), att.size(4)}), rate1,
                           /*in_place=*/true);
}

}  // namespace acmix_mm

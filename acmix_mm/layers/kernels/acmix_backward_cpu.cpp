// ACmix's stage II backward on the CPU in one call: from the recomputed qkv and the output's
// gradient, the gradients of qkv and of every stage II parameter (rate1, rate2, conv_p, fc,
// dep_conv), without the Python, dispatcher and weight (un)packing steps between the kernels (at
// small maps these cost as much as the kernels). Semantics: acmix_backward in
// acmix_mm/layers/acmix_recompute.py, which runs this where the C++ kernels do.
#include <torch/extension.h>

#include <cmath>
#include <vector>

#include "kernels.h"

namespace acmix_mm {

std::vector<at::Tensor> acmix_stage_backward(
    const at::Tensor& grad_out, const at::Tensor& qkv, const at::Tensor& grid,
    const at::Tensor& conv_p_weight, const at::Tensor& conv_p_bias, const at::Tensor& fc_weight,
    const c10::optional<at::Tensor>& fc_bias, const at::Tensor& dep_weight,
    const c10::optional<at::Tensor>& dep_bias, double rate1, const at::Tensor& rate2,
    int64_t heads, int64_t kernel_att, int64_t stride, int64_t dilation) {
  const at::Tensor pe = stage_position_term(qkv, grid, conv_p_weight, conv_p_bias, heads);
  const int64_t B = qkv.size(0), C = qkv.size(1) / 3, H = qkv.size(2), W = qkv.size(3);
  const int64_t d = C / heads;
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == B && grad_out.size(1) == C,
              "grad_out must be (B, C, H_out, W_out)");
  const at::Tensor go = grad_out.contiguous();
  const at::Tensor split = qkv.view({B, 3, heads, d, H, W});
  const at::Tensor v = split.select(1, 2);
  // The attention's gradients of q, k and v in one map, into which the conv path's are added.
  at::Tensor grad_all = at::empty({B, 3, heads, d, H, W}, qkv.options());
  sliding_window_backward(go.view({B, heads, d, go.size(2), go.size(3)}), split.select(1, 0),
                          split.select(1, 1), v, pe, std::pow(static_cast<double>(d), -0.5),
                          kernel_att, stride, dilation, grad_all);
  // the logits hold -pe(o) beside k(o): pe's gradient is minus the keys' summed over B and N.
  // Summed per image: one reduction over a (B, N, ...) slice of grad_all, whose B and N strides
  // do not merge, ran ~10x slower (60 ms against 6 at 128 channels, 200x336, batch 2).
  const at::Tensor grad_k = grad_all.select(1, 1);
  at::Tensor grad_pe = grad_k.select(0, 0).sum(0);
  for (int64_t b = 1; b < B; ++b) grad_pe.add_(grad_k.select(0, b).sum(0));
  grad_pe = grad_pe.neg_().mul_(rate1).view({d, H * W});
  // <grad_out, attention> = <grad_v, v> (the attention is linear in v), read before grad_v is
  // overwritten with the whole gradient below
  const at::Tensor grad_rate1 = at::vdot(grad_all.select(1, 2).flatten(), v.flatten()).view({1});
  const at::Tensor packed = conv_path_pack(dep_weight, c10::nullopt, rate2, d)[0];
  const int64_t k2 = fc_weight.size(0);
  const at::Tensor fc_w = fc_weight.reshape({k2, -1}).contiguous();
  const std::vector<at::Tensor> conv = conv_path_backward(
      go.permute({0, 2, 3, 1}), qkv.view({B, 3 * heads, d, H, W}).permute({0, 3, 4, 1, 2}), fc_w,
      fc_bias, packed, stride, dilation, {grad_all.view({B, 3 * heads, d, H, W})}, rate1,
      /*in_place=*/true);
  // gradients of the packed (rate2-scaled) dep_conv weight and bias, in dep_conv's layout
  const std::vector<at::Tensor> dep = conv_path_unpack(conv[3], conv[4], d);
  // dep_conv is linear in its weight and bias: <grad_out, conv> = <grad_w, w> + <grad_b, b>
  at::Tensor grad_rate2 = at::vdot(dep[0].flatten(), dep_weight.flatten());
  if (dep_bias.has_value()) grad_rate2 = grad_rate2 + at::vdot(dep[1], *dep_bias);
  const at::Tensor r2 = rate2.to(qkv.scalar_type());
  return {grad_all.view({B, 3 * C, H, W}),
          grad_rate1,
          grad_rate2.view({1}),
          at::mm(grad_pe, grid.t()).view(conv_p_weight.sizes()),
          grad_pe.sum(1),
          conv[1].view(fc_weight.sizes()),
          fc_bias.has_value() ? conv[2] : at::Tensor(),
          dep[0].mul_(r2),
          dep_bias.has_value() ? dep[1].mul_(r2) : at::Tensor()};
}

}  // namespace acmix_mm

// The C++ CPU kernels' entry points (defined in sliding_window_cpu.cpp, conv_path_cpu.cpp,
// acmix_inference_cpu.cpp and acmix_backward_cpu.cpp; bound to Python in extension.cpp).
#pragma once

#include <torch/extension.h>

#include <vector>

namespace acmix_mm {
// conv_path_forward's planar output rows at stride 1 from this width up are computed by
// positions, one channel at a time (conv_path_planar_rows in conv_path_cpu.cpp); narrower rows,
// other strides and channels-last maps by channels.
constexpr int64_t kPlanarRowsMinWidth = 32;

at::Tensor sliding_window_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const c10::optional<at::Tensor>& pe, double scale,
                                  int64_t kernel, int64_t stride, int64_t dilation);
std::vector<at::Tensor> sliding_window_backward(const at::Tensor& grad_out, const at::Tensor& q,
                                                const at::Tensor& k, const at::Tensor& v,
                                                const c10::optional<at::Tensor>& pe, double scale,
                                                int64_t kernel, int64_t stride, int64_t dilation,
                                                const c10::optional<at::Tensor>& grad_qkv);
at::Tensor conv_path_forward(const at::Tensor& qkv, const at::Tensor& fc_weight,
                             const c10::optional<at::Tensor>& fc_bias, const at::Tensor& weight,
                             const at::Tensor& bias, int64_t stride, int64_t dilation,
                             const c10::optional<at::Tensor>& addend, double addend_scale,
                             bool in_place);
std::vector<at::Tensor> conv_path_backward(const at::Tensor& grad_out, const at::Tensor& qkv,
                                           const at::Tensor& fc_weight,
                                           const c10::optional<at::Tensor>& fc_bias,
                                           const at::Tensor& weight, int64_t stride,
                                           int64_t dilation, const std::vector<at::Tensor>& addends,
                                           double addend_scale, bool in_place);
std::vector<at::Tensor> conv_path_pack(const at::Tensor& weight,
                                       const c10::optional<at::Tensor>& bias,
                                       const at::Tensor& scale, int64_t d);
std::vector<at::Tensor> conv_path_unpack(const at::Tensor& grad_packed,
                                         const at::Tensor& grad_packed_bias, int64_t d);
// conv_p of the positional grid (2, H * W) as (d, H, W), after checking qkv (B, 3C, H, W) and the
// grid: stage II's first step, forward and backward (acmix_inference_cpu.cpp).
at::Tensor stage_position_term(const at::Tensor& qkv, const at::Tensor& grid,
                               const at::Tensor& conv_p_weight, const at::Tensor& conv_p_bias,
                               int64_t heads);
at::Tensor acmix_mix_paths(const at::Tensor& qkv, const at::Tensor& grid,
                           const at::Tensor& conv_p_weight, const at::Tensor& conv_p_bias,
                           const at::Tensor& fc_weight, const c10::optional<at::Tensor>& fc_bias,
                           const at::Tensor& dep_weight, const c10::optional<at::Tensor>& dep_bias,
                           double rate1, const at::Tensor& rate2, int64_t heads,
                           int64_t kernel_att, int64_t stride, int64_t dilation);
std::vector<at::Tensor> acmix_stage_backward(
    const at::Tensor& grad_out, const at::Tensor& qkv, const at::Tensor& grid,
    const at::Tensor& conv_p_weight, const at::Tensor& conv_p_bias, const at::Tensor& fc_weight,
    const c10::optional<at::Tensor>& fc_bias, const at::Tensor& dep_weight,
    const c10::optional<at::Tensor>& dep_bias, double rate1, const at::Tensor& rate2,
    int64_t heads, int64_t kernel_att, int64_t stride, int64_t dilation);
}  // namespace acmix_mm

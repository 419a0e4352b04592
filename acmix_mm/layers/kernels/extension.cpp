// Python bindings of the C++ CPU kernels (one extension module, built by cpu_extension.py).
#include <torch/extension.h>

#include <vector>

namespace acmix_mm {
at::Tensor sliding_window_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const c10::optional<at::Tensor>& pe, double scale,
                                  int64_t kernel, int64_t stride, int64_t dilation);
std::vector<at::Tensor> sliding_window_backward(const at::Tensor& grad_out, const at::Tensor& q,
                                                const at::Tensor& k, const at::Tensor& v,
                                                const c10::optional<at::Tensor>& pe, double scale,
                                                int64_t kernel, int64_t stride, int64_t dilation);
at::Tensor conv_path_forward(const at::Tensor& qkv, const at::Tensor& fc_weight,
                             const c10::optional<at::Tensor>& fc_bias, const at::Tensor& weight,
                             const at::Tensor& bias, int64_t stride, int64_t dilation,
                             const c10::optional<at::Tensor>& addend, double addend_scale);
std::vector<at::Tensor> conv_path_backward(const at::Tensor& grad_out, const at::Tensor& qkv,
                                           const at::Tensor& fc_weight,
                                           const c10::optional<at::Tensor>& fc_bias,
                                           const at::Tensor& weight, int64_t stride,
                                           int64_t dilation, const std::vector<at::Tensor>& addends,
                                           double addend_scale);
std::vector<at::Tensor> conv_path_pack(const at::Tensor& weight,
                                       const c10::optional<at::Tensor>& bias,
                                       const at::Tensor& scale, int64_t d);
at::Tensor acmix_mix_paths(const at::Tensor& qkv, const at::Tensor& grid,
                           const at::Tensor& conv_p_weight, const at::Tensor& conv_p_bias,
                           const at::Tensor& fc_weight, const c10::optional<at::Tensor>& fc_bias,
                           const at::Tensor& dep_weight, const c10::optional<at::Tensor>& dep_bias,
                           double rate1, const at::Tensor& rate2, int64_t heads,
                           int64_t kernel_att, int64_t stride, int64_t dilation);
}  // namespace acmix_mm

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("sliding_window_forward", &acmix_mm::sliding_window_forward,
        "ACmix sliding-window attention, forward (CPU)");
  m.def("sliding_window_backward", &acmix_mm::sliding_window_backward,
        "ACmix sliding-window attention, backward (CPU)");
  m.def("conv_path_forward", &acmix_mm::conv_path_forward,
        "ACmix convolution path (fc, reordering, dep_conv) fused, forward (CPU)");
  m.def("conv_path_backward", &acmix_mm::conv_path_backward,
        "ACmix convolution path, gradients of qkv (plus scaled addends), fc and dep_conv (CPU)");
  m.def("conv_path_pack", &acmix_mm::conv_path_pack,
        "dep_conv's weight and bias, times a scale, in the conv-path kernel's layout (CPU)");
  m.def("acmix_mix_paths", &acmix_mm::acmix_mix_paths,
        "ACmix stage II for inference: positional term, attention and conv path (CPU)");
}

// Python bindings of the C++ CPU kernels (one extension module, built by cpu_extension.py).
#include <torch/extension.h>

#include "cpu_vectors.h"
#include "kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // bytes per vector of the conv-path kernel: its packed weight holds channels in chunks of
  // vector_bytes / element_size lanes (pack_weight in conv_path_op.py)
  m.attr("vector_bytes") = acmix_mm::kVectorBytes;
  // conv_path_forward's planar rows from this width up take the by-position kernel
  m.attr("planar_rows_min_width") = acmix_mm::kPlanarRowsMinWidth;
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
  m.def("conv_path_unpack", &acmix_mm::conv_path_unpack,
        "the inverse of conv_path_pack (scale 1): dep_conv's layout of a packed weight and bias");
  m.def("acmix_mix_paths", &acmix_mm::acmix_mix_paths,
        "ACmix stage II for inference: positional term, attention and conv path (CPU)");
  m.def("acmix_stage_backward", &acmix_mm::acmix_stage_backward,
        "ACmix stage II backward: gradients of qkv and of the stage's parameters (CPU)");
}

"""The convolution path of ACmix as one fused C++ CPU kernel, for inference.

``fc``, the channel reordering and the grouped ``dep_conv`` run in one pass over the projected maps
(:file:`conv_path_cpu.cpp`), without the transposed copy or mkldnn's slow grouped convolution. It
has no backward: :func:`fused_conv_path_applies` says when it may run (no gradient needed, CPU,
float32/float64, the C++ extension built, not traced, ``ACMIX_MM_KERNEL`` not ``python``);
elsewhere :mod:`acmix_mm.layers.conv_path` composes PyTorch operators with the same numbers.
"""
import os
from typing import Optional

import torch

from .cpu_extension import load_cpu_extension
from .sliding_window_op import CPP_DTYPES


def fused_conv_path_applies(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether :func:`fused_conv_path` may compute the conv path of these tensors."""
    present = [t for t in tensors if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in present):
        return False
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False  # a traced graph must see the operators (FLOP counting, export)
    if os.environ.get('ACMIX_MM_KERNEL', 'auto') == 'python':
        return False
    first = present[0]
    return (first.device.type == 'cpu' and first.dtype in CPP_DTYPES
            and all(t.dtype == first.dtype for t in present) and load_cpu_extension() is not None)


def fused_conv_path(maps: torch.Tensor, fc_weight: torch.Tensor, fc_bias: Optional[torch.Tensor],
                    weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int,
                    dilation: int) -> torch.Tensor:
    """``dep_conv(reorder(fc(maps)))`` of every position, channels-last.

    Args:
        maps: ``(B, H, W, T, d)``, any strides: ``T = 3N`` maps of ``d`` channels.
        fc_weight: ``(k^2, T)``; fc_bias: ``(k^2,)`` or None.
        weight: ``dep_conv``'s ``(d * M, k^2, k, k)`` (``M`` outputs per group); bias:
            ``(d * M,)`` or None.
        stride, dilation: ``dep_conv``'s (its padding is ``dilation * (k // 2)``).

    Returns:
        ``(B, H_out, W_out, d * M)``, contiguous.
    """
    d = maps.shape[-1]
    c_out, k2, k, _ = weight.shape
    m = c_out // d
    lanes = 32 // maps.element_size()
    d_pad = -(-d // lanes) * lanes
    # (d * M, k^2, k, k) -> (chunks, M, k, k, k^2, lanes): channels zero-padded to whole vectors
    packed = weight.reshape(d, m, k2, k, k).permute(1, 3, 4, 2, 0)
    packed = torch.nn.functional.pad(packed, (0, d_pad - d)).view(m, k, k, k2, -1, lanes)
    packed = packed.permute(4, 0, 1, 2, 3, 5).contiguous()
    bias = torch.zeros(c_out, dtype=maps.dtype) if bias is None else bias
    packed_bias = torch.nn.functional.pad(bias.reshape(d, m).t(), (0, d_pad - d)).contiguous()
    return load_cpu_extension().conv_path_forward(maps, fc_weight.reshape(k2, -1).contiguous(),
                                                  fc_bias, packed, packed_bias, stride, dilation)

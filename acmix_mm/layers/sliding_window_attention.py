"""Sliding-window attention of the ResNet variant of ACmix (after SASA), without unfolding.

Every query attends to the ``k x k`` window of the reflection-padded keys centred on it. The
reference materialises all ``k**2`` shifted copies of the keys and values (``nn.Unfold``); here a
fused kernel (C++ on the CPU, Triton on CUDA, a PyTorch fallback elsewhere; see
:mod:`.kernels.sliding_window_op`) visits the window in place and recomputes the softmax in the
backward, so no tensor ``k**2`` times the feature map is ever stored.
"""
from typing import Optional

import torch

from .kernels.sliding_window_op import sliding_window_attention_op
from .kernels.sliding_window_python import (output_size, reflect_indices, reflect_pad2d,
                                            sliding_window_attention_unfolded)

__all__ = ['sliding_window_attention', 'output_size', 'reflect_indices', 'reflect_pad2d']


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: int,
                             stride: int = 1, dilation: int = 1, pe: Optional[torch.Tensor] = None,
                             scale: float = 1.0) -> torch.Tensor:
    """Softmax attention of every (strided) query over its reflection-padded window.

    The logit of query ``p`` and window position ``o`` is
    ``scale * sum_c q_c(p) * (k_c(o) - pe_c(o))``.

    Args:
        q: ``(B, N, d, H, W)`` (``N`` heads) or ``(B, d, H, W)``; only the positions
            ``(i*stride, j*stride)`` are queries. Any strides with the last one 1, e.g. views
            of one ``qkv`` tensor.
        k: same shape as ``q``.
        v: same shape as ``q``.
        kernel: odd window size ``k_att``.
        stride: query stride.
        dilation: spacing of the window positions.
        pe: ``(d, H, W)`` positional term subtracted from the keys, shared by batch and heads.
        scale: logit scale.

    Returns:
        ``(B, N, d, ceil(H / stride), ceil(W / stride))``, or without ``N`` for 4-d input.
    """
    if q.dim() not in (4, 5) or k.shape != q.shape or v.shape != q.shape:
        raise ValueError('q, k, v must share a shape (B, N, d, H, W) or (B, d, H, W), got '
                         f'{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}')
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f'kernel must be a positive odd int, got {kernel}')
    if stride < 1 or dilation < 1:
        raise ValueError(f'stride and dilation must be >= 1, got {stride}, {dilation}')
    if pe is not None and pe.shape != q.shape[-3:]:
        raise ValueError(f'pe must have shape {tuple(q.shape[-3:])} (d, H, W), got '
                         f'{tuple(pe.shape)}')
    squeeze = q.dim() == 4
    if squeeze:
        q, k, v = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    if pe is not None:
        pe = pe.contiguous()
    # ONNX export records a decomposition into standard operators, not the custom op
    op = (sliding_window_attention_unfolded if torch.onnx.is_in_onnx_export() else
          sliding_window_attention_op)
    out = op(q, k, v, pe, float(scale), int(kernel), int(stride), int(dilation))
    return out.squeeze(1) if squeeze else out

"""Sliding-window attention of the ResNet variant of ACmix (after SASA), without unfolding.

Every query attends to the ``k x k`` window of the reflection-padded keys centred on it. The
reference materialises all ``k**2`` shifted copies of the keys and values (``nn.Unfold``); here the
window is visited one offset at a time through strided views, so no tensor ``k**2`` times the
feature map is ever built.
"""
from typing import Tuple

import torch
import torch.nn.functional as F


def reflect_indices(size: int, pad: int, device: torch.device) -> torch.Tensor:
    """Source indices of a reflection padding of ``pad`` on both sides of an axis of ``size``.

    Equal to ``F.pad(..., mode='reflect')`` where torch allows it (``pad < size``), and keeps
    reflecting (period ``2 * (size - 1)``) where it does not; a size-1 axis is replicated.

    Returns:
        Long tensor of shape ``(size + 2 * pad,)``.
    """
    idx = torch.arange(-pad, size + pad, device=device)
    if size == 1:
        return torch.zeros_like(idx)
    period = 2 * (size - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= size, period - idx, idx)


def reflect_pad2d(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflection padding of the last two axes by ``pad``, valid for any spatial size."""
    if pad == 0:
        return x
    h, w = x.shape[-2:]
    if pad < h and pad < w:
        return F.pad(x, (pad, pad, pad, pad), mode='reflect')
    x = x.index_select(-2, reflect_indices(h, pad, x.device))
    return x.index_select(-1, reflect_indices(w, pad, x.device))


def output_size(size: int, stride: int) -> int:
    """Queries sit at ``0, stride, 2*stride, ...``: ``ceil(size / stride)`` of them."""
    return -(-size // stride)


def _window_views(padded: torch.Tensor, out_hw: Tuple[int, int], kernel: int, stride: int,
                  dilation: int):
    """Yields the strided view of ``padded`` seen by every query, one window offset at a time."""
    ho, wo = out_hw
    for i in range(kernel):
        for j in range(kernel):
            y, x = i * dilation, j * dilation
            yield padded[..., y:y + (ho - 1) * stride + 1:stride, x:x + (wo - 1) * stride + 1:stride]


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: int,
                             stride: int = 1, dilation: int = 1) -> torch.Tensor:
    """Softmax attention of every (strided) query over its reflection-padded window.

    The logit of query ``p`` and window position ``o`` is ``sum_c q_c(p) * k_c(o)``; ACmix folds
    its positional terms into ``k`` before calling this (see :class:`ACmix`).

    Args:
        q: ``(B, d, H, W)``, already scaled; only the positions ``(i*stride, j*stride)`` are used.
        k: ``(B, d, H, W)``.
        v: ``(B, d, H, W)``.
        kernel: odd window size ``k_att``.
        stride: query stride.
        dilation: spacing of the window positions.

    Returns:
        ``(B, d, ceil(H / stride), ceil(W / stride))``.
    """
    h, w = q.shape[-2:]
    out_hw = (output_size(h, stride), output_size(w, stride))
    q = q[..., ::stride, ::stride]
    pad = dilation * (kernel - 1) // 2
    k_pad, v_pad = reflect_pad2d(k, pad), reflect_pad2d(v, pad)
    logits = torch.stack([(q * k_o).sum(1) for k_o in _window_views(k_pad, out_hw, kernel, stride,
                                                                     dilation)], dim=1)
    attn = logits.softmax(dim=1)  # (B, k^2, H_out, W_out)
    out = torch.zeros_like(q)
    for o, v_o in enumerate(_window_views(v_pad, out_hw, kernel, stride, dilation)):
        out = out + attn[:, o:o + 1] * v_o
    return out

"""Pure-PyTorch sliding-window attention: the fallback every compiled kernel must match.

Visits the ``k x k`` window one offset at a time through strided views of the reflection-padded
keys and values, so no tensor ``k**2`` times the feature map is built; autograd stores the
per-offset products, which the compiled kernels avoid by recomputing.
"""
from typing import Iterator, List, Optional, Tuple

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
        lead = x.shape[:-3]
        padded = F.pad(x.reshape(-1, *x.shape[-3:]), (pad, pad, pad, pad), mode='reflect')
        return padded.view(*lead, *padded.shape[1:])
    x = x.index_select(-2, reflect_indices(h, pad, x.device))
    return x.index_select(-1, reflect_indices(w, pad, x.device))


def output_size(size: int, stride: int) -> int:
    """Queries sit at ``0, stride, 2*stride, ...``: ``ceil(size / stride)`` of them (floor
    division of non-negative numbers only: ONNX export turns ``//`` into a truncating ``Div``)."""
    return (size + stride - 1) // stride


def _window_views(padded: torch.Tensor, out_hw: Tuple[int, int], kernel: int, stride: int,
                  dilation: int) -> Iterator[torch.Tensor]:
    """Yields the strided view of ``padded`` seen by every query, one window offset at a time."""
    ho, wo = out_hw
    for i in range(kernel):
        for j in range(kernel):
            y, x = i * dilation, j * dilation
            yield padded[..., y:y + (ho - 1) * stride + 1:stride, x:x + (wo - 1) * stride + 1:stride]


def sliding_window_attention_python(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                    pe: Optional[torch.Tensor], scale: float, kernel: int,
                                    stride: int, dilation: int) -> torch.Tensor:
    """See :func:`acmix_mm.layers.sliding_window_attention` for the arguments and shapes."""
    h, w = q.shape[-2:]
    out_hw = (output_size(h, stride), output_size(w, stride))
    q = q[..., ::stride, ::stride] * scale
    if pe is not None:
        k = k - pe
    pad = dilation * (kernel - 1) // 2
    k_pad, v_pad = reflect_pad2d(k, pad), reflect_pad2d(v, pad)
    logits = torch.stack([(q * k_o).sum(-3) for k_o in _window_views(k_pad, out_hw, kernel, stride,
                                                                      dilation)], dim=-3)
    attn = logits.softmax(dim=-3).unsqueeze(-3)  # (..., k^2, 1, H_out, W_out)
    out = torch.zeros_like(q)
    for o, v_o in enumerate(_window_views(v_pad, out_hw, kernel, stride, dilation)):
        out = out + attn[..., o, :, :, :] * v_o
    return out


def sliding_window_attention_unfolded(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                      pe: Optional[torch.Tensor], scale: float, kernel: int,
                                      stride: int, dilation: int) -> torch.Tensor:
    """:func:`sliding_window_attention_python` from a handful of standard operators, for export.

    The ``k**2`` window copies of the keys and values (what ``nn.Unfold`` gives; ONNX has no
    ``Im2Col``) come from one convolution with one-hot kernels each, which copies exactly; so an
    exported graph has about ten nodes per attention instead of several per window offset. Holds
    ``k**2`` times the keys and values, as the reference does: for inference and export.
    """
    b, n, d, h, w = q.shape
    k2 = kernel * kernel
    pad = dilation * (kernel - 1) // 2
    one_hot = torch.eye(k2, dtype=q.dtype, device=q.device).view(k2, 1, kernel, kernel)

    def windows(t: torch.Tensor) -> torch.Tensor:  # (B, N, d, k^2, H_out, W_out)
        t = reflect_pad2d(t, pad)
        out = F.conv2d(t.reshape(-1, 1, t.shape[-2], t.shape[-1]), one_hot, stride=stride,
                       dilation=dilation)
        return out.view(b, n, d, k2, out.shape[-2], out.shape[-1])

    q = q[..., ::stride, ::stride] * scale
    if pe is not None:
        k = k - pe
    attn = (q.unsqueeze(3) * windows(k)).sum(2).softmax(2)  # (B, N, k^2, H_out, W_out)
    return (attn.unsqueeze(2) * windows(v)).sum(3)


def _unpad_reflect(grad_padded: torch.Tensor, h: int, w: int, pad: int) -> torch.Tensor:
    """Adjoint of :func:`reflect_pad2d`: sums the gradient of every padded position into the
    position it was copied from."""
    if pad == 0:
        return grad_padded
    device = grad_padded.device
    rows = grad_padded.new_zeros(*grad_padded.shape[:-2], h, grad_padded.shape[-1])
    rows.index_add_(-2, reflect_indices(h, pad, device), grad_padded)
    out = rows.new_zeros(*rows.shape[:-1], w)
    return out.index_add_(-1, reflect_indices(w, pad, device), rows)


def sliding_window_attention_python_backward(
        grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        pe: Optional[torch.Tensor], scale: float, kernel: int, stride: int,
        dilation: int) -> List[torch.Tensor]:
    """Gradients of :func:`sliding_window_attention_python` for q, k, v (and pe when given),
    recomputing the softmax from the inputs.

    Args:
        grad_out: ``(B, N, d, H_out, W_out)``; others as the forward.

    Returns:
        ``[grad_q, grad_k, grad_v]`` of shape ``(B, N, d, H, W)``, then ``grad_pe`` ``(d, H, W)``
        when ``pe`` is given.
    """
    h, w = q.shape[-2:]
    out_hw = (output_size(h, stride), output_size(w, stride))
    q_s = q[..., ::stride, ::stride] * scale
    k_eff = k - pe if pe is not None else k
    pad = dilation * (kernel - 1) // 2
    k_pad, v_pad = reflect_pad2d(k_eff, pad), reflect_pad2d(v, pad)
    k_views = list(_window_views(k_pad, out_hw, kernel, stride, dilation))
    v_views = list(_window_views(v_pad, out_hw, kernel, stride, dilation))
    attn = torch.stack([(q_s * k_o).sum(-3) for k_o in k_views], dim=-3).softmax(dim=-3)
    d_attn = torch.stack([(grad_out * v_o).sum(-3) for v_o in v_views], dim=-3)
    d_logits = attn * (d_attn - (attn * d_attn).sum(-3, keepdim=True))  # (..., k^2, H_o, W_o)

    grad_q_s = torch.zeros_like(q_s)
    grad_k_pad, grad_v_pad = torch.zeros_like(k_pad), torch.zeros_like(v_pad)
    views = zip(_window_views(grad_k_pad, out_hw, kernel, stride, dilation),
                _window_views(grad_v_pad, out_hw, kernel, stride, dilation), k_views)
    for o, (gk_o, gv_o, k_o) in enumerate(views):
        d_o, a_o = d_logits[..., o:o + 1, :, :], attn[..., o:o + 1, :, :]
        grad_q_s += d_o * k_o
        gk_o += d_o * q_s
        gv_o += a_o * grad_out
    grad_q = torch.zeros_like(q)
    grad_q[..., ::stride, ::stride] = grad_q_s * scale
    grad_k = _unpad_reflect(grad_k_pad, h, w, pad)
    grads = [grad_q, grad_k, _unpad_reflect(grad_v_pad, h, w, pad)]
    return grads + ([] if pe is None else [-grad_k.sum((0, 1))])

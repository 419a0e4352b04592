"""Triton sliding-window attention: forward and recomputing backward.

Matches :func:`sliding_window_python.sliding_window_attention_python`. Each program handles one
``(b, n)`` slice and a tile of ``BLOCK_P`` output positions with all ``d`` channels
(``BLOCK_D = next_power_of_2(d)``), walks the ``k x k`` window offset by offset, computes the
reflected source indices in-kernel and keeps an online softmax in fp32 registers. Nothing of size
``k**2`` times the feature map is stored: the backward recomputes the softmax (one pass for its
max, normaliser and ``sum_o A * dA``, one pass for the gradients) and scatters the key and value
gradients with fp32 atomics, since reflection sends several window slots to one position.
``pe`` is folded into the keys (``k - pe``) on the host before either kernel runs.
"""
from typing import Optional, Tuple

import torch

try:
    import triton
    import triton.language as tl
    TRITON_AVAILABLE = True
except ImportError:  # pragma: no cover
    triton = tl = None
    TRITON_AVAILABLE = False

if TRITON_AVAILABLE:

    @triton.jit
    def _reflect(t, size, ONE_BOUNCE: tl.constexpr):
        """Generalised reflection of the integer index ``t`` onto ``[0, size)``.

        ``ONE_BOUNCE``: ``t`` lies in ``[1 - size, 2 * size - 2]``, so one reflection suffices.
        """
        period = 2 * size - 2
        if ONE_BOUNCE:
            t = tl.abs(t)
        else:
            period = tl.maximum(period, 1)
            t = t % period
            t = tl.where(t < 0, t + period, t)
        return tl.where(t >= size, period - t, t)

    @triton.jit
    def _query_tile(D, H, W, HO, WO, STRIDE: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_P: tl.constexpr):
        """This program's (b, n) slice and tile of queries: the slice's offset in the inputs and
        in the outputs, the channel offsets, the mask, and the query coordinates."""
        bn = tl.program_id(1).to(tl.int64)
        hw = H * W
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        c = tl.arange(0, BLOCK_D)
        mask = (c < D)[:, None] & (p < HO * WO)[None, :]
        out_off = bn * D * HO * WO + c[:, None] * (HO * WO) + p[None, :]
        return bn * D * hw, out_off, c[:, None] * hw, mask, (p // WO) * STRIDE, (p % WO) * STRIDE

    @triton.jit
    def _fwd_kernel(q_ptr, k_ptr, v_ptr, out_ptr, scale, D, H, W, HO, WO,
                    KERNEL: tl.constexpr, STRIDE: tl.constexpr, DILATION: tl.constexpr,
                    ONE_BOUNCE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr):
        PAD: tl.constexpr = DILATION * (KERNEL - 1) // 2
        in_base, out_off, chan, mask, yq, xq = _query_tile(D, H, W, HO, WO, STRIDE, BLOCK_D,
                                                           BLOCK_P)

        q = tl.load(q_ptr + in_base + chan + (yq * W + xq)[None, :], mask=mask, other=0.)
        q = q.to(tl.float32) * (scale * 1.4426950408889634)
        m = tl.full([BLOCK_P], float('-inf'), tl.float32)
        l = tl.zeros([BLOCK_P], tl.float32)
        acc = tl.zeros([BLOCK_D, BLOCK_P], tl.float32)
        for i in range(KERNEL):
            row = _reflect(yq - PAD + i * DILATION, H, ONE_BOUNCE) * W
            for j in tl.static_range(KERNEL):
                off = chan + (row + _reflect(xq - PAD + j * DILATION, W, ONE_BOUNCE))[None, :]
                key = tl.load(k_ptr + in_base + off, mask=mask, other=0.).to(tl.float32)
                logit = tl.sum(q * key, axis=0)
                m_new = tl.maximum(m, logit)
                alpha = tl.exp2(m - m_new)
                e = tl.exp2(logit - m_new)
                l = l * alpha + e
                val = tl.load(v_ptr + in_base + off, mask=mask, other=0.).to(tl.float32)
                acc = acc * alpha[None, :] + e[None, :] * val
                m = m_new

        out = acc / l[None, :]
        tl.store(out_ptr + out_off, out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _bwd_kernel(q_ptr, k_ptr, v_ptr, g_ptr, gq_ptr, gk_ptr, gv_ptr, scale,
                    D, H, W, HO, WO,
                    KERNEL: tl.constexpr, STRIDE: tl.constexpr, DILATION: tl.constexpr,
                    ONE_BOUNCE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr):
        PAD: tl.constexpr = DILATION * (KERNEL - 1) // 2
        LOG2E: tl.constexpr = 1.4426950408889634
        in_base, g_off, chan, mask, yq, xq = _query_tile(D, H, W, HO, WO, STRIDE, BLOCK_D,
                                                         BLOCK_P)
        q_off = chan + (yq * W + xq)[None, :]

        q = tl.load(q_ptr + in_base + q_off, mask=mask, other=0.).to(tl.float32) * scale
        g = tl.load(g_ptr + g_off, mask=mask, other=0.).to(tl.float32)

        m = tl.full([BLOCK_P], float('-inf'), tl.float32)
        l = tl.zeros([BLOCK_P], tl.float32)
        s = tl.zeros([BLOCK_P], tl.float32)
        for i in range(KERNEL):
            row = _reflect(yq - PAD + i * DILATION, H, ONE_BOUNCE) * W
            for j in tl.static_range(KERNEL):
                off = chan + (row + _reflect(xq - PAD + j * DILATION, W, ONE_BOUNCE))[None, :]
                key = tl.load(k_ptr + in_base + off, mask=mask, other=0.).to(tl.float32)
                val = tl.load(v_ptr + in_base + off, mask=mask, other=0.).to(tl.float32)
                logit = tl.sum(q * key, axis=0) * LOG2E
                d_attn = tl.sum(g * val, axis=0)
                m_new = tl.maximum(m, logit)
                alpha = tl.exp2(m - m_new)
                e = tl.exp2(logit - m_new)
                l = l * alpha + e
                s = s * alpha + e * d_attn
                m = m_new

        inv_l = 1.0 / l
        delta = s * inv_l
        gq = tl.zeros([BLOCK_D, BLOCK_P], tl.float32)
        for i in range(KERNEL):
            row = _reflect(yq - PAD + i * DILATION, H, ONE_BOUNCE) * W
            for j in tl.static_range(KERNEL):
                off = chan + (row + _reflect(xq - PAD + j * DILATION, W, ONE_BOUNCE))[None, :]
                key = tl.load(k_ptr + in_base + off, mask=mask, other=0.).to(tl.float32)
                val = tl.load(v_ptr + in_base + off, mask=mask, other=0.).to(tl.float32)
                attn = tl.exp2(tl.sum(q * key, axis=0) * LOG2E - m) * inv_l
                d_logit = attn * (tl.sum(g * val, axis=0) - delta)
                gq += d_logit[None, :] * key
                tl.atomic_add(gk_ptr + in_base + off, d_logit[None, :] * q, mask=mask,
                              sem='relaxed')
                tl.atomic_add(gv_ptr + in_base + off, attn[None, :] * g, mask=mask,
                              sem='relaxed')

        tl.store(gq_ptr + in_base + q_off, gq * scale, mask=mask)


def _block_sizes(d: int) -> Tuple[int, int, int]:
    """``(BLOCK_D, BLOCK_P, num_warps)`` for ``d`` channels."""
    block_d = triton.next_power_of_2(d)
    return block_d, max(16, 512 // block_d), 4


def _prepare(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pe: Optional[torch.Tensor],
             kernel: int, stride: int, dilation: int):
    """Contiguous ``q``, ``k - pe``, ``v``, the output size and the kernels' constexprs."""
    if not TRITON_AVAILABLE:
        raise RuntimeError('triton is not installed')
    if q.dim() != 5 or kernel % 2 != 1 or stride < 1 or dilation < 1:
        raise ValueError(f'expected (B, N, d, H, W) inputs, odd kernel, stride >= 1 and '
                         f'dilation >= 1; got {tuple(q.shape)}, {kernel}, {stride}, {dilation}')
    h, w = q.shape[-2:]
    pad = dilation * (kernel - 1) // 2
    key = k if pe is None else k - pe
    consts = dict(KERNEL=kernel, STRIDE=stride, DILATION=dilation,
                  ONE_BOUNCE=pad < h and pad < w)
    return (q.contiguous(), key.contiguous(), v.contiguous(), -(-h // stride), -(-w // stride),
            consts)


def sliding_window_attention_triton_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                            pe: Optional[torch.Tensor], scale: float,
                                            kernel: int, stride: int,
                                            dilation: int) -> torch.Tensor:
    """Sliding-window attention forward.

    Args:
        q, k, v: ``(B, N, d, H, W)``; only the queries at ``(i*stride, j*stride)`` are read.
        pe: ``(d, H, W)`` subtracted from the keys, or None.
        scale: logit multiplier.
        kernel: odd window size; stride: query stride; dilation: window spacing.

    Returns:
        ``(B, N, d, ceil(H / stride), ceil(W / stride))`` in the dtype of ``q``.
    """
    q, key, v, ho, wo, consts = _prepare(q, k, v, pe, kernel, stride, dilation)
    b, n, d, h, w = q.shape
    out = torch.empty((b, n, d, ho, wo), device=q.device, dtype=q.dtype)
    if out.numel() == 0:
        return out
    block_d, block_p, num_warps = _block_sizes(d)
    grid = (triton.cdiv(ho * wo, block_p), b * n)
    with torch.cuda.device_of(q):
        _fwd_kernel[grid](q, key, v, out, float(scale), d, h, w, ho, wo, **consts,
                          BLOCK_D=block_d, BLOCK_P=block_p, num_warps=num_warps)
    return out


def sliding_window_attention_triton_backward(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    pe: Optional[torch.Tensor], scale: float, kernel: int, stride: int, dilation: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Gradients of :func:`sliding_window_attention_triton_forward`, recomputing the softmax.

    Args:
        grad_out: ``(B, N, d, ceil(H / stride), ceil(W / stride))``.
        q, k, v, pe, scale, kernel, stride, dilation: as in the forward.

    Returns:
        ``grad_q``, ``grad_k``, ``grad_v`` of shape ``(B, N, d, H, W)`` in the dtype of ``q``
        (``grad_q`` is zero off the query positions) and ``grad_pe`` of shape ``(d, H, W)``,
        or None when ``pe`` is None.
    """
    q, key, v, ho, wo, consts = _prepare(q, k, v, pe, kernel, stride, dilation)
    b, n, d, h, w = q.shape
    grads = [torch.zeros((b, n, d, h, w), device=q.device, dtype=torch.float32)
             for _ in range(3)]
    if grad_out.numel() > 0:
        block_d, block_p, num_warps = _block_sizes(d)
        grid = (triton.cdiv(ho * wo, block_p), b * n)
        with torch.cuda.device_of(q):
            _bwd_kernel[grid](q, key, v, grad_out.contiguous(), grads[0], grads[1], grads[2],
                              float(scale), d, h, w, ho, wo, **consts,
                              BLOCK_D=block_d, BLOCK_P=block_p, num_warps=num_warps)
    grad_pe = None if pe is None else grads[1].sum((0, 1)).neg().to(pe.dtype)
    grad_q, grad_k, grad_v = (g.to(q.dtype) for g in grads)
    return grad_q, grad_k, grad_v, grad_pe

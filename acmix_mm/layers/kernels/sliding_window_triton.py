"""Triton sliding-window attention: forward and a gather-only backward.

Matches :func:`sliding_window_python.sliding_window_attention_python`. Every program owns a 2-d
tile of ``BLOCK_Y x BLOCK_X`` positions of one ``(b, n)`` slice; up to ``d = 32`` all channels of a
position sit in one thread (128 positions, 4 warps), so the sum over channels needs no exchange
between threads. The tile walks the ``k x k`` window offset by offset: the rows of keys
and values it reads are shared by its neighbouring queries and come from the cache, the softmax is
online in float32 registers, reflection and the positional term ``pe`` are applied in-kernel, and
the inputs may be strided views of one ``qkv`` tensor (no copies).

The backward runs two kernels and no atomics. The query kernel recomputes the softmax in one pass,
accumulating ``sum e * (g . v) * k`` and ``sum e * k`` beside the normaliser, so that
``grad_q = scale * (A - delta * B) / l``; it stores ``lse`` and ``delta = g . out`` per query. The
key kernel owns a tile of key positions and gathers, for every window slot, the query that sees the
key through it (and, at the borders, the queries that see it through the reflection), recomputing
``attn = exp2(logit - lse)``. Maps smaller than the window's reach (several reflections) take the
PyTorch backward.

Float16 and bfloat16 heads of up to 32 channels take the halo kernels instead: a program loads
the keys and values its tile's windows reach once and computes logits and ``probs @ v`` as matrix
products over that halo (tensor cores); float32 and wider heads take the gather kernels above.

:func:`attention_mix_forward` / :func:`attention_mix_backward` add the ACmix layer's epilogue:
``out = rate * attention + addend``, with ``grad_rate = sum(delta)``.
"""
from typing import NamedTuple, Optional, Sequence, Tuple

import torch

try:
    import triton
    import triton.language as tl
    TRITON_AVAILABLE = True
except ImportError:  # pragma: no cover
    triton = tl = None
    TRITON_AVAILABLE = False

# Shapes and strides vary from layer to layer: compiling a variant for each divisibility of them
# would multiply the compilations for no speed (the window's loads are gathers anyway).
_SIZES = ['s_b', 's_n', 's_c', 'N', 'D', 'H', 'W', 'HO', 'WO']
_GRAD_SIZES = _SIZES + ['gs_b', 'gs_n', 'gs_c']
_HALO_GRAD_SIZES = _GRAD_SIZES + ['as_b', 'as_n', 'as_c']

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
    def _tile(ROWS, COLS, BLOCK_X: tl.constexpr, BLOCK_P: tl.constexpr):
        """Row and column of every position of this program's ``BLOCK_P // BLOCK_X x BLOCK_X``
        tile of a ``ROWS x COLS`` map, and which of them lie inside it."""
        BLOCK_Y: tl.constexpr = BLOCK_P // BLOCK_X
        tiles_x = tl.cdiv(COLS, BLOCK_X)
        pid = tl.program_id(0)
        p = tl.arange(0, BLOCK_P)
        y = (pid // tiles_x) * BLOCK_Y + p // BLOCK_X
        x = (pid % tiles_x) * BLOCK_X + p % BLOCK_X
        return y, x, (y < ROWS) & (x < COLS)

    @triton.jit
    def _slice_base(N, s_b, s_n):
        """Offset of this program's ``(b, n)`` slice in a tensor of strides ``s_b, s_n``."""
        bn = tl.program_id(1)
        return (bn // N).to(tl.int64) * s_b + (bn % N).to(tl.int64) * s_n

    @triton.jit
    def _query_tile(N, D, H, W, HO, WO, s_b, s_n, s_c, BLOCK_D: tl.constexpr,
                    BLOCK_X: tl.constexpr, BLOCK_P: tl.constexpr):
        """The gather kernels' tile of queries, ``[channels, positions]``: output coordinates and
        mask, channel indices and mask, the slice's offset, and channel offsets in q/k/v and pe."""
        yo, xo, pmask = _tile(HO, WO, BLOCK_X, BLOCK_P)
        c = tl.arange(0, BLOCK_D)
        mask = (c < D)[:, None] & pmask[None, :]
        return (yo, xo, pmask, c, mask, _slice_base(N, s_b, s_n), c[:, None].to(tl.int64) * s_c,
                c[:, None] * (H * W))

    @triton.jit
    def _key(k_ptr, pe_ptr, k_base, chan, pe_chan, pos, mask, HAS_PE: tl.constexpr):
        """``k - pe`` at the flat positions ``pos``, in float32."""
        key = tl.load(k_ptr + k_base + chan + pos[None, :], mask=mask, other=0.).to(tl.float32)
        if HAS_PE:
            key -= tl.load(pe_ptr + pe_chan + pos[None, :], mask=mask, other=0.).to(tl.float32)
        return key

    @triton.jit(do_not_specialize=_SIZES)
    def _fwd_kernel(q_ptr, k_ptr, v_ptr, pe_ptr, add_ptr, rate_ptr, out_ptr, scale,
                    s_b, s_n, s_c, N, D, H, W, HO, WO,
                    KERNEL: tl.constexpr, STRIDE: tl.constexpr, DILATION: tl.constexpr,
                    ONE_BOUNCE: tl.constexpr, HAS_PE: tl.constexpr, HAS_ADD: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_P: tl.constexpr):
        PAD: tl.constexpr = DILATION * (KERNEL - 1) // 2
        yo, xo, pmask, c, mask, base, chan, pe_chan = _query_tile(
            N, D, H, W, HO, WO, s_b, s_n, s_c, BLOCK_D, BLOCK_X, BLOCK_P)
        yq, xq = yo * STRIDE, xo * STRIDE

        q = tl.load(q_ptr + base + chan + (yq * W + xq)[None, :], mask=mask, other=0.)
        q = q.to(tl.float32) * (scale * 1.4426950408889634)
        m = tl.full([BLOCK_P], float('-inf'), tl.float32)
        l = tl.zeros([BLOCK_P], tl.float32)
        acc = tl.zeros([BLOCK_D, BLOCK_P], tl.float32)
        for i in range(KERNEL):
            row = _reflect(yq - PAD + i * DILATION, H, ONE_BOUNCE) * W
            for j in range(KERNEL):
                pos = row + _reflect(xq - PAD + j * DILATION, W, ONE_BOUNCE)
                key = _key(k_ptr, pe_ptr, base, chan, pe_chan, pos, mask, HAS_PE)
                logit = tl.sum(q * key, axis=0)
                m_new = tl.maximum(m, logit)
                alpha = tl.exp2(m - m_new)
                e = tl.exp2(logit - m_new)
                l = l * alpha + e
                val = tl.load(v_ptr + base + chan + pos[None, :], mask=mask, other=0.)
                acc = acc * alpha[None, :] + e[None, :] * val.to(tl.float32)
                m = m_new

        out = acc / l[None, :]
        out_off = (tl.program_id(1).to(tl.int64) * D + c[:, None]) * (HO * WO) \
            + (yo * WO + xo)[None, :]
        if HAS_ADD:
            out = out * tl.load(rate_ptr).to(tl.float32) \
                + tl.load(add_ptr + out_off, mask=mask, other=0.).to(tl.float32)
        tl.store(out_ptr + out_off, out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit(do_not_specialize=_GRAD_SIZES)
    def _bwd_query_kernel(q_ptr, k_ptr, v_ptr, pe_ptr, g_ptr, rate_ptr, gq_ptr, lse_ptr,
                          delta_ptr, scale, s_b, s_n, s_c, gs_b, gs_n, gs_c, N, D, H, W, HO, WO,
                          KERNEL: tl.constexpr, STRIDE: tl.constexpr, DILATION: tl.constexpr,
                          ONE_BOUNCE: tl.constexpr, HAS_PE: tl.constexpr,
                          HAS_RATE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_X: tl.constexpr,
                          BLOCK_P: tl.constexpr):
        """``grad_q``, and ``lse`` (log2 units) and ``delta = g . out`` of every query."""
        PAD: tl.constexpr = DILATION * (KERNEL - 1) // 2
        yo, xo, pmask, c, mask, base, chan, pe_chan = _query_tile(
            N, D, H, W, HO, WO, s_b, s_n, s_c, BLOCK_D, BLOCK_X, BLOCK_P)
        yq, xq = yo * STRIDE, xo * STRIDE
        bn = tl.program_id(1).to(tl.int64)
        qp = yo * WO + xo
        g_off = (bn * D + c[:, None]) * (HO * WO) + qp[None, :]

        q = tl.load(q_ptr + base + chan + (yq * W + xq)[None, :], mask=mask, other=0.)
        q = q.to(tl.float32) * (scale * 1.4426950408889634)
        g = tl.load(g_ptr + g_off, mask=mask, other=0.).to(tl.float32)
        m = tl.full([BLOCK_P], float('-inf'), tl.float32)
        l = tl.zeros([BLOCK_P], tl.float32)
        s = tl.zeros([BLOCK_P], tl.float32)
        acc_gk = tl.zeros([BLOCK_D, BLOCK_P], tl.float32)  # sum e * (g . v) * k
        acc_k = tl.zeros([BLOCK_D, BLOCK_P], tl.float32)  # sum e * k
        for i in range(KERNEL):
            row = _reflect(yq - PAD + i * DILATION, H, ONE_BOUNCE) * W
            for j in range(KERNEL):
                pos = row + _reflect(xq - PAD + j * DILATION, W, ONE_BOUNCE)
                key = _key(k_ptr, pe_ptr, base, chan, pe_chan, pos, mask, HAS_PE)
                val = tl.load(v_ptr + base + chan + pos[None, :], mask=mask, other=0.)
                logit = tl.sum(q * key, axis=0)
                d_attn = tl.sum(g * val.to(tl.float32), axis=0)
                m_new = tl.maximum(m, logit)
                alpha = tl.exp2(m - m_new)
                e = tl.exp2(logit - m_new)
                l = l * alpha + e
                s = s * alpha + e * d_attn
                acc_gk = acc_gk * alpha[None, :] + (e * d_attn)[None, :] * key
                acc_k = acc_k * alpha[None, :] + e[None, :] * key
                m = m_new

        delta = s / l
        grad_q = (acc_gk - delta[None, :] * acc_k) * (scale / l)[None, :]
        if HAS_RATE:
            grad_q *= tl.load(rate_ptr).to(tl.float32)
        gq_off = _slice_base(N, gs_b, gs_n) + c[:, None].to(tl.int64) * gs_c \
            + (yq * W + xq)[None, :]
        tl.store(gq_ptr + gq_off, grad_q.to(gq_ptr.dtype.element_ty), mask=mask)
        tl.store(lse_ptr + bn * (HO * WO) + qp, m + tl.log2(l), mask=pmask)
        tl.store(delta_ptr + bn * (HO * WO) + qp, delta, mask=pmask)

    @triton.jit
    def _source(y, size, R: tl.constexpr):
        """An unreflected index that reflects onto ``y`` (``R`` = 0: itself, 1: mirrored at the
        start, 2: mirrored at the end), and whether it differs from ``y``'s own (R = 0 always)."""
        if R == 0:
            return y, y >= 0
        elif R == 1:
            return -y, y > 0
        else:
            return 2 * size - 2 - y, y < size - 1

    @triton.jit
    def _query_of(t, tap, n_out, STRIDE: tl.constexpr):
        """The query index whose window tap ``tap`` (already times dilation, minus the padding)
        lands on the unreflected index ``t``, and whether that query exists."""
        num = t - tap
        ok = num >= 0
        num = tl.where(ok, num, 0)
        o = num // STRIDE
        return o, ok & (o * STRIDE == num) & (o < n_out)

    @triton.jit
    def _gather_tap(acc_k, acc_v, key, val, q_ptr, g_ptr, lse_ptr, delta_ptr, base, chan, bn,
                    c, y, x, tap_y, tap_x, H, W, HO, WO, D, q2scale,
                    RY: tl.constexpr, RX: tl.constexpr, STRIDE: tl.constexpr):
        """Adds the gradient that window tap ``(tap_y, tap_x)`` of one query sends to each key of
        the tile, the query being the one that reaches the key through reflection ``(RY, RX)``."""
        ty, ok_y = _source(y, H, RY)
        tx, ok_x = _source(x, W, RX)
        oy, ok_qy = _query_of(ty, tap_y, HO, STRIDE)
        ox, ok_qx = _query_of(tx, tap_x, WO, STRIDE)
        ok = ok_y & ok_x & ok_qy & ok_qx
        mask = (c < D)[:, None] & ok[None, :]
        qp = oy * WO + ox
        q = tl.load(q_ptr + base + chan + (oy * STRIDE * W + ox * STRIDE)[None, :], mask=mask,
                    other=0.).to(tl.float32)
        g = tl.load(g_ptr + (bn * D + c[:, None]) * (HO * WO) + qp[None, :], mask=mask,
                    other=0.).to(tl.float32)
        lse = tl.load(lse_ptr + bn * (HO * WO) + qp, mask=ok, other=0.)
        delta = tl.load(delta_ptr + bn * (HO * WO) + qp, mask=ok, other=0.)
        attn = tl.where(ok, tl.exp2(tl.sum(q * key, axis=0) * q2scale - lse), 0.)
        d_logit = attn * (tl.sum(g * val, axis=0) - delta)
        return acc_k + d_logit[None, :] * q, acc_v + attn[None, :] * g

    @triton.jit(do_not_specialize=_GRAD_SIZES)
    def _bwd_key_kernel(q_ptr, k_ptr, v_ptr, pe_ptr, g_ptr, rate_ptr, lse_ptr, delta_ptr, gk_ptr,
                        gv_ptr, scale, s_b, s_n, s_c, gs_b, gs_n, gs_c, N, D, H, W, HO, WO,
                        KERNEL: tl.constexpr, STRIDE: tl.constexpr, DILATION: tl.constexpr,
                        HAS_PE: tl.constexpr, HAS_RATE: tl.constexpr, BLOCK_D: tl.constexpr,
                        BLOCK_X: tl.constexpr, BLOCK_P: tl.constexpr):
        """``grad_k`` and ``grad_v`` of a tile of key positions, gathered from the queries."""
        PAD: tl.constexpr = DILATION * (KERNEL - 1) // 2
        BLOCK_Y: tl.constexpr = BLOCK_P // BLOCK_X
        y, x, pmask = _tile(H, W, BLOCK_X, BLOCK_P)
        c = tl.arange(0, BLOCK_D)
        mask = (c < D)[:, None] & pmask[None, :]
        base = _slice_base(N, s_b, s_n)
        chan = c[:, None].to(tl.int64) * s_c
        bn = tl.program_id(1).to(tl.int64)
        pos = y * W + x
        key = _key(k_ptr, pe_ptr, base, chan, c[:, None] * (H * W), pos, mask, HAS_PE)
        val = tl.load(v_ptr + base + chan + pos[None, :], mask=mask, other=0.).to(tl.float32)
        q2scale = scale * 1.4426950408889634

        # Whether the tile reaches the rows / columns that reflection copies (runtime scalars).
        tiles_x = tl.cdiv(W, BLOCK_X)
        y0 = (tl.program_id(0) // tiles_x) * BLOCK_Y
        x0 = (tl.program_id(0) % tiles_x) * BLOCK_X
        rows_reflected = (y0 <= PAD) | (y0 + BLOCK_Y - 1 >= H - 1 - PAD)
        cols_reflected = (x0 <= PAD) | (x0 + BLOCK_X - 1 >= W - 1 - PAD)

        acc_k = tl.zeros([BLOCK_D, BLOCK_P], tl.float32)
        acc_v = tl.zeros([BLOCK_D, BLOCK_P], tl.float32)
        for i in range(KERNEL):
            tap_y = i * DILATION - PAD
            for j in range(KERNEL):
                tap_x = j * DILATION - PAD
                args = (key, val, q_ptr, g_ptr, lse_ptr, delta_ptr, base, chan, bn, c, y,
                        x, tap_y, tap_x, H, W, HO, WO, D, q2scale)
                acc_k, acc_v = _gather_tap(acc_k, acc_v, *args, 0, 0, STRIDE)
                if cols_reflected:
                    acc_k, acc_v = _gather_tap(acc_k, acc_v, *args, 0, 1, STRIDE)
                    acc_k, acc_v = _gather_tap(acc_k, acc_v, *args, 0, 2, STRIDE)
                if rows_reflected:
                    acc_k, acc_v = _gather_tap(acc_k, acc_v, *args, 1, 0, STRIDE)
                    acc_k, acc_v = _gather_tap(acc_k, acc_v, *args, 2, 0, STRIDE)
                    if cols_reflected:
                        acc_k, acc_v = _gather_tap(acc_k, acc_v, *args, 1, 1, STRIDE)
                        acc_k, acc_v = _gather_tap(acc_k, acc_v, *args, 1, 2, STRIDE)
                        acc_k, acc_v = _gather_tap(acc_k, acc_v, *args, 2, 1, STRIDE)
                        acc_k, acc_v = _gather_tap(acc_k, acc_v, *args, 2, 2, STRIDE)

        acc_k *= scale
        if HAS_RATE:
            rate = tl.load(rate_ptr).to(tl.float32)
            acc_k *= rate
            acc_v *= rate
        g_off = _slice_base(N, gs_b, gs_n) + c[:, None].to(tl.int64) * gs_c + pos[None, :]
        tl.store(gk_ptr + g_off, acc_k.to(gk_ptr.dtype.element_ty), mask=mask)
        tl.store(gv_ptr + g_off, acc_v.to(gv_ptr.dtype.element_ty), mask=mask)


    @triton.jit
    def _halo(H, W, HO, WO, STRIDE: tl.constexpr, PAD: tl.constexpr, ONE_BOUNCE: tl.constexpr,
              BLOCK_X: tl.constexpr, BLOCK_P: tl.constexpr, HALO_X: tl.constexpr,
              HALO_N: tl.constexpr, HALO: tl.constexpr):
        """This program's query tile and the halo of key positions its windows reach.

        Returns the queries' output coordinates and mask, their local coordinates, the halo's
        flat source positions (reflected), its local coordinates and mask.
        """
        yo, xo, pmask = _tile(HO, WO, BLOCK_X, BLOCK_P)
        BLOCK_Y: tl.constexpr = BLOCK_P // BLOCK_X
        tiles_x = tl.cdiv(WO, BLOCK_X)
        y0 = (tl.program_id(0) // tiles_x) * BLOCK_Y
        x0 = (tl.program_id(0) % tiles_x) * BLOCK_X
        p = tl.arange(0, BLOCK_P)
        h = tl.arange(0, HALO)
        hy, hx = h // HALO_X, h % HALO_X
        ry = _reflect(y0 * STRIDE - PAD + hy, H, ONE_BOUNCE)
        rx = _reflect(x0 * STRIDE - PAD + hx, W, ONE_BOUNCE)
        ry = tl.minimum(tl.maximum(ry, 0), H - 1)  # rows only masked queries reach
        rx = tl.minimum(tl.maximum(rx, 0), W - 1)
        return yo, xo, pmask, p // BLOCK_X, p % BLOCK_X, ry * W + rx, hy, hx, h < HALO_N

    @triton.jit
    def _window_mask(py, px, hy, hx, hmask, STRIDE: tl.constexpr, PAD: tl.constexpr,
                     DILATION: tl.constexpr):
        """``[queries, halo]``: whether the halo entry is a window position of the query."""
        ry = hy[None, :] - (py * STRIDE)[:, None]
        rx = hx[None, :] - (px * STRIDE)[:, None]
        return ((ry >= 0) & (ry <= 2 * PAD) & (ry % DILATION == 0) & (rx >= 0)
                & (rx <= 2 * PAD) & (rx % DILATION == 0) & hmask[None, :])

    @triton.jit
    def _halo_probs(q_ptr, k_ptr, v_ptr, pe_ptr, base, scale, s_c, D, H, W, HO, WO,
                    KERNEL: tl.constexpr, STRIDE: tl.constexpr, DILATION: tl.constexpr,
                    ONE_BOUNCE: tl.constexpr, HAS_PE: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_X: tl.constexpr, BLOCK_P: tl.constexpr, HALO_X: tl.constexpr,
                    HALO_N: tl.constexpr, HALO: tl.constexpr, IEEE: tl.constexpr):
        """Softmax probabilities ``[queries, halo]`` (zero off the windows and for masked
        queries), with the loaded q (unscaled), k - pe and v of the halo."""
        PAD: tl.constexpr = DILATION * (KERNEL - 1) // 2
        yo, xo, pmask, py, px, pos_h, hy, hx, hmask = _halo(
            H, W, HO, WO, STRIDE, PAD, ONE_BOUNCE, BLOCK_X, BLOCK_P, HALO_X, HALO_N, HALO)
        c = tl.arange(0, BLOCK_D)
        cmask = c < D
        chan = c[None, :].to(tl.int64) * s_c
        qmask = pmask[:, None] & cmask[None, :]
        q = tl.load(q_ptr + base + chan + (yo * STRIDE * W + xo * STRIDE)[:, None], mask=qmask,
                    other=0.)
        kvmask = hmask[:, None] & cmask[None, :]
        key = tl.load(k_ptr + base + chan + pos_h[:, None], mask=kvmask, other=0.)
        if HAS_PE:
            key = (key.to(tl.float32) - tl.load(pe_ptr + c[None, :] * (H * W) + pos_h[:, None],
                                                mask=kvmask, other=0.).to(tl.float32))
        key = key.to(q.dtype)
        val = tl.load(v_ptr + base + chan + pos_h[:, None], mask=kvmask, other=0.)
        if IEEE:
            logits = tl.dot(q, tl.trans(key), input_precision='ieee')
        else:
            logits = tl.dot(q, tl.trans(key))
        logits *= scale * 1.4426950408889634
        inside = _window_mask(py, px, hy, hx, hmask, STRIDE, PAD, DILATION)
        logits = tl.where(inside, logits, float('-inf'))
        e = tl.exp2(logits - tl.max(logits, axis=1)[:, None])
        probs = e / tl.sum(e, axis=1)[:, None]
        probs = tl.where(pmask[:, None], probs, 0.)
        return probs, q, key, val, yo, xo, pmask, qmask, kvmask, pos_h, c

    @triton.jit(do_not_specialize=_SIZES)
    def _fwd_halo_kernel(q_ptr, k_ptr, v_ptr, pe_ptr, add_ptr, rate_ptr, out_ptr, scale,
                         s_b, s_n, s_c, N, D, H, W, HO, WO,
                         KERNEL: tl.constexpr, STRIDE: tl.constexpr, DILATION: tl.constexpr,
                         ONE_BOUNCE: tl.constexpr, HAS_PE: tl.constexpr, HAS_ADD: tl.constexpr,
                         BLOCK_D: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_P: tl.constexpr,
                         HALO_X: tl.constexpr, HALO_N: tl.constexpr, HALO: tl.constexpr,
                         IEEE: tl.constexpr):
        """Forward of a tile of queries from its halo: logits and ``probs @ v`` as two matrix
        products over the halo, masked to each query's window."""
        base = _slice_base(N, s_b, s_n)
        probs, q, key, val, yo, xo, pmask, qmask, kvmask, pos_h, c = _halo_probs(
            q_ptr, k_ptr, v_ptr, pe_ptr, base, scale, s_c, D, H, W, HO, WO, KERNEL, STRIDE,
            DILATION, ONE_BOUNCE, HAS_PE, BLOCK_D, BLOCK_X, BLOCK_P, HALO_X, HALO_N, HALO, IEEE)
        if IEEE:
            out = tl.dot(probs.to(val.dtype), val, input_precision='ieee')
        else:
            out = tl.dot(probs.to(val.dtype), val)
        out_off = (tl.program_id(1).to(tl.int64) * D + c[None, :]) * (HO * WO) \
            + (yo * WO + xo)[:, None]
        if HAS_ADD:
            out = out * tl.load(rate_ptr).to(tl.float32) \
                + tl.load(add_ptr + out_off, mask=qmask, other=0.).to(tl.float32)
        tl.store(out_ptr + out_off, out.to(out_ptr.dtype.element_ty), mask=qmask)

    @triton.jit(do_not_specialize=_HALO_GRAD_SIZES)
    def _bwd_halo_kernel(q_ptr, k_ptr, v_ptr, pe_ptr, g_ptr, rate_ptr, gq_ptr, gk_ptr, gv_ptr,
                         delta_ptr, scale, s_b, s_n, s_c, gs_b, gs_n, gs_c, as_b, as_n, as_c,
                         N, D, H, W, HO, WO,
                         KERNEL: tl.constexpr, STRIDE: tl.constexpr, DILATION: tl.constexpr,
                         ONE_BOUNCE: tl.constexpr, HAS_PE: tl.constexpr, HAS_RATE: tl.constexpr,
                         BLOCK_D: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_P: tl.constexpr,
                         HALO_X: tl.constexpr, HALO_N: tl.constexpr, HALO: tl.constexpr,
                         IEEE: tl.constexpr):
        """All gradients of a tile of queries in one pass over its halo; the halo's key and value
        gradients are added atomically (halos overlap, reflection repeats positions)."""
        base = _slice_base(N, s_b, s_n)
        probs, q, key, val, yo, xo, pmask, qmask, kvmask, pos_h, c = _halo_probs(
            q_ptr, k_ptr, v_ptr, pe_ptr, base, scale, s_c, D, H, W, HO, WO, KERNEL, STRIDE,
            DILATION, ONE_BOUNCE, HAS_PE, BLOCK_D, BLOCK_X, BLOCK_P, HALO_X, HALO_N, HALO, IEEE)
        bn = tl.program_id(1).to(tl.int64)
        g_off = (bn * D + c[None, :]) * (HO * WO) + (yo * WO + xo)[:, None]
        g = tl.load(g_ptr + g_off, mask=qmask, other=0.).to(val.dtype)
        if IEEE:
            d_probs = tl.dot(g, tl.trans(val), input_precision='ieee')
        else:
            d_probs = tl.dot(g, tl.trans(val))
        delta = tl.sum(probs * d_probs, axis=1)
        d_logits = probs * (d_probs - delta[:, None])
        factor = scale
        if HAS_RATE:
            rate = tl.load(rate_ptr).to(tl.float32)
            factor = scale * rate
        else:
            rate = 1.0
        d_logits = d_logits.to(key.dtype)
        probs = probs.to(val.dtype)
        if IEEE:
            grad_q = tl.dot(d_logits, key, input_precision='ieee')
            grad_k = tl.dot(tl.trans(d_logits), q, input_precision='ieee')
            grad_v = tl.dot(tl.trans(probs), g, input_precision='ieee')
        else:
            grad_q = tl.dot(d_logits, key)
            grad_k = tl.dot(tl.trans(d_logits), q)
            grad_v = tl.dot(tl.trans(probs), g)
        g_chan = c[None, :].to(tl.int64) * gs_c
        tl.store(gq_ptr + _slice_base(N, gs_b, gs_n) + g_chan
                 + (yo * STRIDE * W + xo * STRIDE)[:, None],
                 (grad_q * factor).to(gq_ptr.dtype.element_ty), mask=qmask)
        acc_off = _slice_base(N, as_b, as_n) + c[None, :].to(tl.int64) * as_c + pos_h[:, None]
        tl.atomic_add(gk_ptr + acc_off, grad_k * factor, mask=kvmask, sem='relaxed')
        tl.atomic_add(gv_ptr + acc_off, grad_v * rate, mask=kvmask, sem='relaxed')
        tl.store(delta_ptr + bn * (HO * WO) + yo * WO + xo, delta, mask=pmask)


class _Launch(NamedTuple):
    """Shapes, strides and launch parameters shared by the kernels of one call."""
    n: int
    d: int
    h: int
    w: int
    ho: int
    wo: int
    strides: Tuple[int, int, int]
    consts: dict
    one_bounce: bool


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: int, stride: int,
                  dilation: int) -> None:
    if not TRITON_AVAILABLE:
        raise RuntimeError('triton is not installed')
    if q.dim() != 5 or kernel % 2 != 1 or stride < 1 or dilation < 1:
        raise ValueError(f'expected (B, N, d, H, W) inputs, odd kernel, stride >= 1 and '
                         f'dilation >= 1; got {tuple(q.shape)}, {kernel}, {stride}, {dilation}')


def shared_strides(*tensors: torch.Tensor) -> Optional[Tuple[int, int, int]]:
    """The ``(b, n, c)`` strides of ``(B, N, d, H, W)`` tensors whose maps are contiguous rows
    (strides ``(W, 1)``) and whose strides agree, else None."""
    first = tensors[0]
    w = first.shape[-1]
    for t in tensors:
        if t.stride() != first.stride() or (t.shape[-2] > 1 and t.stride(-2) != w) or \
                (w > 1 and t.stride(-1) != 1):
            return None
    return first.stride(0), first.stride(1), first.stride(2)


def _as_shared(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """``q, k, v`` unchanged when their strides agree (views of one qkv), else contiguous."""
    if shared_strides(q, k, v) is None:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return q, k, v


def _launch(q: torch.Tensor, kernel: int, stride: int, dilation: int,
            pe: Optional[torch.Tensor]) -> _Launch:
    _, n, d, h, w = q.shape
    ho, wo = -(-h // stride), -(-w // stride)
    pad = dilation * (kernel - 1) // 2
    block_d = triton.next_power_of_2(d)
    # 4 warps along the positions where up to 32 channels fit a thread; beyond, the warps split
    # the channels too (32 per thread), so that nothing spills.
    num_warps = 4
    block_p = 128 if block_d <= 32 else max(32, 4096 // block_d)
    consts = dict(KERNEL=kernel, STRIDE=stride, DILATION=dilation, HAS_PE=pe is not None,
                  BLOCK_D=block_d, BLOCK_P=block_p, num_warps=num_warps)
    return _Launch(n, d, h, w, ho, wo, shared_strides(q, q, q), consts,
                   pad < h and pad < w)


# Tiles of the halo kernels, tried in order: the first whose halo fits ``_MAX_HALO`` positions.
_HALO_TILES = ((16, 4), (8, 8), (8, 4), (4, 4))
# 256: logits of 64 queries x 256 halo positions stay in registers (512 spilled and took minutes
# to compile on an H100 with Triton 3.6).
_MAX_HALO = 256
# 'float32': whether float32 takes the halo kernels. Off: their exact (IEEE) float32 products run
# on the CUDA cores, and on an H100 the forward at (2, 4, 16, 200, 336), k 7, took 16.5 ms
# against the gather kernel's 2.9 (the ACmix layer at 64 ch 56x56, batch 8: 4.2 against 2.0 ms
# inference, 6.5 against 5.3 training; docs/gpu_suite_h100_float32_halo.md against
# docs/gpu_suite_h100.md, two runs); float16 and bfloat16 run them on
# the tensor cores (1.0 ms inference, 3.1 training). The interpreter tests switch it on to check
# the halo kernels exactly.
_HALO_STATE = {'failed': None, 'float32': False}


def _halo_consts(run: _Launch, q: torch.Tensor) -> Optional[dict]:
    """Constexprs of the halo kernels for this call, or None where they do not apply (float32
    unless switched on, more than 32 channels a head, or no tile whose halo fits), or failed to
    compile before."""
    if _HALO_STATE['failed'] is not None or run.d > 32:
        return None
    if q.dtype == torch.float32 and not _HALO_STATE['float32']:
        return None
    kernel, stride = run.consts['KERNEL'], run.consts['STRIDE']
    pad = run.consts['DILATION'] * (kernel - 1) // 2
    for block_x, block_y in _HALO_TILES:
        block_x = min(block_x, triton.next_power_of_2(run.wo))
        halo_x = (block_x - 1) * stride + 2 * pad + 1
        halo_n = ((block_y - 1) * stride + 2 * pad + 1) * halo_x
        if triton.next_power_of_2(halo_n) <= _MAX_HALO:
            return dict(KERNEL=kernel, STRIDE=stride, DILATION=run.consts['DILATION'],
                        HAS_PE=run.consts['HAS_PE'], ONE_BOUNCE=run.one_bounce,
                        BLOCK_D=max(16, triton.next_power_of_2(run.d)), BLOCK_X=block_x,
                        BLOCK_P=block_x * block_y, HALO_X=halo_x, HALO_N=halo_n,
                        HALO=max(16, triton.next_power_of_2(halo_n)),
                        IEEE=q.dtype == torch.float32)
    return None


def _launch_halo(kernel, grid, args, consts, num_warps: int) -> bool:
    """Launches a halo kernel; a compilation failure (an older Triton, say) is reported once and
    turns the halo kernels off, so the caller falls back to the gather kernels."""
    try:
        kernel[grid](*args, **consts, num_warps=num_warps)
        return True
    except Exception as exc:  # noqa: BLE001
        if _HALO_STATE['failed'] is None:
            import warnings
            warnings.warn(f'acmix_mm: the halo attention kernels failed ({exc!r}); using the '
                          'gather kernels instead', RuntimeWarning)
        _HALO_STATE['failed'] = repr(exc)
        return False


def _grid(rows: int, cols: int, block_x: int, block_p: int, slices: int):
    return (triton.cdiv(rows, block_p // block_x) * triton.cdiv(cols, block_x), slices)


def _block_x(cols: int, block_p: int) -> int:
    return min(32, triton.next_power_of_2(cols), block_p)


def _pe_or_dummy(pe: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    return like if pe is None else pe.contiguous()


def attention_mix_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          pe: Optional[torch.Tensor], scale: float, kernel: int, stride: int,
                          dilation: int, rate: Optional[torch.Tensor] = None,
                          addend: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sliding-window attention, optionally as ``rate * attention + addend``.

    Args:
        q, k, v: ``(B, N, d, H, W)`` with rows contiguous; strided views of one tensor are read in
            place, others are made contiguous. Only the queries at ``(i*stride, j*stride)`` count.
        pe: ``(d, H, W)`` subtracted from the keys, or None.
        scale: logit multiplier.
        kernel: odd window size; stride: query stride; dilation: window spacing.
        rate: ``(1,)`` tensor multiplying the attention (with ``addend``).
        addend: ``(B, N * d, H_out, W_out)``-sized tensor added to the result, or None.

    Returns:
        ``(B, N, d, ceil(H / stride), ceil(W / stride))``, contiguous, in the dtype of ``q``
        (of ``addend`` where given).
    """
    _check_inputs(q, k, v, kernel, stride, dilation)
    q, k, v = _as_shared(q, k, v)
    run = _launch(q, kernel, stride, dilation, pe)
    b = q.shape[0]
    dtype = q.dtype if addend is None else addend.dtype
    out = torch.empty((b, run.n, run.d, run.ho, run.wo), device=q.device, dtype=dtype)
    if out.numel() == 0:
        return out
    has_add = addend is not None
    if has_add:
        if rate is None or addend.numel() != out.numel():
            raise ValueError('addend needs a rate and must have the size of the output')
        addend = addend.contiguous()
    args = (q, k, v, _pe_or_dummy(pe, q), addend if has_add else out, rate if has_add else out,
            out, float(scale), *run.strides, run.n, run.d, run.h, run.w, run.ho, run.wo)
    with torch.cuda.device_of(q):
        halo = _halo_consts(run, q)
        if halo is not None and _launch_halo(
                _fwd_halo_kernel, _grid(run.ho, run.wo, halo['BLOCK_X'], halo['BLOCK_P'],
                                        b * run.n), args, dict(halo, HAS_ADD=has_add), 4):
            return out
        block_x = _block_x(run.wo, run.consts['BLOCK_P'])
        _fwd_kernel[_grid(run.ho, run.wo, block_x, run.consts['BLOCK_P'], b * run.n)](
            *args, ONE_BOUNCE=run.one_bounce, HAS_ADD=has_add, BLOCK_X=block_x, **run.consts)
    return out


def sliding_window_attention_triton_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                            pe: Optional[torch.Tensor], scale: float,
                                            kernel: int, stride: int,
                                            dilation: int) -> torch.Tensor:
    """Sliding-window attention forward (see :func:`attention_mix_forward`).

    Returns:
        ``(B, N, d, ceil(H / stride), ceil(W / stride))`` in the dtype of ``q``.
    """
    return attention_mix_forward(q, k, v, pe, scale, kernel, stride, dilation)


def attention_mix_backward(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    pe: Optional[torch.Tensor], scale: float, kernel: int, stride: int, dilation: int,
    rate: Optional[torch.Tensor] = None, grads: Optional[Sequence[torch.Tensor]] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor],
           Optional[torch.Tensor]]:
    """Gradients of :func:`attention_mix_forward` (the addend's is ``grad_out`` itself).

    Args:
        grad_out: ``(B, N, d, ceil(H / stride), ceil(W / stride))``.
        q, k, v, pe, scale, kernel, stride, dilation, rate: as in the forward.
        grads: three ``(B, N, d, H, W)`` tensors to write ``grad_q, grad_k, grad_v`` into (e.g.
            views of one ``grad_qkv``; with strides shared and rows contiguous; ``grad_q`` zeroed
            where ``stride > 1``), or None to allocate them.

    Returns:
        ``grad_q, grad_k, grad_v`` (``grad_q`` zero off the query positions), ``grad_pe`` of shape
        ``(d, H, W)`` (None without ``pe``) and ``grad_rate`` ``(1,)`` (None without ``rate``).
    """
    _check_inputs(q, k, v, kernel, stride, dilation)
    q, k, v = _as_shared(q, k, v)
    run = _launch(q, kernel, stride, dilation, pe)
    if grads is None:
        alloc = torch.zeros if stride > 1 else torch.empty
        grads = [alloc(q.shape, device=q.device, dtype=q.dtype) for _ in range(3)]
    grad_strides = shared_strides(*grads)
    if grad_strides is None:
        raise ValueError('the gradient buffers must share strides with contiguous rows')
    if not run.one_bounce:
        return _python_backward(grad_out, q, k, v, pe, scale, kernel, stride, dilation, rate,
                                grads)
    b = q.shape[0]
    grad_out = grad_out.contiguous()
    stats = torch.empty((2, b * run.n, run.ho * run.wo), device=q.device, dtype=torch.float32)
    has_rate = rate is not None
    pe_arg = _pe_or_dummy(pe, q)
    rate_arg = rate if has_rate else stats
    block_p = run.consts['BLOCK_P']
    common = (float(scale), *run.strides, *grad_strides, run.n, run.d, run.h, run.w, run.ho,
              run.wo)
    with torch.cuda.device_of(q):
        halo = _halo_consts(run, q)
        if halo is not None:
            # key and value gradients are sums of atomic adds: float32 buffers, zeroed
            sums = [g if g.dtype == torch.float32 else torch.zeros(g.shape, device=g.device)
                    for g in grads[1:]]
            for g in sums:
                g.zero_()
            sum_strides = shared_strides(*sums)
            args = (q, k, v, pe_arg, grad_out, rate_arg, grads[0], sums[0], sums[1], stats[1],
                    float(scale), *run.strides, *grad_strides, *(sum_strides or (0, 0, 0)),
                    run.n, run.d, run.h, run.w, run.ho, run.wo)
            grid = _grid(run.ho, run.wo, halo['BLOCK_X'], halo['BLOCK_P'], b * run.n)
            if sum_strides is not None and _launch_halo(
                    _bwd_halo_kernel, grid, args, dict(halo, HAS_RATE=has_rate), 8):
                for g, acc in zip(grads[1:], sums):
                    if g is not acc:
                        g.copy_(acc)
                return _finish_backward(grads, pe, rate, stats)
        block_x = _block_x(run.wo, block_p)
        _bwd_query_kernel[_grid(run.ho, run.wo, block_x, block_p, b * run.n)](
            q, k, v, pe_arg, grad_out, rate_arg, grads[0], stats[0], stats[1], *common,
            ONE_BOUNCE=True, HAS_RATE=has_rate, BLOCK_X=block_x, **run.consts)
        block_x = _block_x(run.w, block_p)
        _bwd_key_kernel[_grid(run.h, run.w, block_x, block_p, b * run.n)](
            q, k, v, pe_arg, grad_out, rate_arg, stats[0], stats[1], grads[1], grads[2],
            *common, HAS_RATE=has_rate, BLOCK_X=block_x, **run.consts)
    return _finish_backward(grads, pe, rate, stats)


def _finish_backward(grads, pe, rate, stats):
    """``(grad_q, grad_k, grad_v, grad_pe, grad_rate)`` from the kernels' outputs."""
    grad_pe = None if pe is None else grads[1].sum((0, 1), dtype=torch.float32).neg().to(pe.dtype)
    grad_rate = None if rate is None else stats[1].sum().view(1).to(rate.dtype)
    return grads[0], grads[1], grads[2], grad_pe, grad_rate


def _python_backward(grad_out, q, k, v, pe, scale, kernel, stride, dilation, rate, grads):
    """The PyTorch backward (maps smaller than the window's reach), written into ``grads``."""
    from .sliding_window_python import (sliding_window_attention_python,
                                        sliding_window_attention_python_backward)
    g = grad_out.float()
    grad_rate = None
    if rate is not None:
        att = sliding_window_attention_python(q.float(), k.float(), v.float(),
                                              None if pe is None else pe.float(), scale, kernel,
                                              stride, dilation)
        grad_rate = (g * att).sum().view(1).to(rate.dtype)
        g = g * rate.float()
    out = sliding_window_attention_python_backward(
        g, q.float(), k.float(), v.float(), None if pe is None else pe.float(), scale, kernel,
        stride, dilation)
    for buf, val in zip(grads, out[:3]):
        buf.copy_(val)
    grad_pe = out[3].to(pe.dtype) if pe is not None else None
    return grads[0], grads[1], grads[2], grad_pe, grad_rate


def sliding_window_attention_triton_backward(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    pe: Optional[torch.Tensor], scale: float, kernel: int, stride: int, dilation: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Gradients of :func:`sliding_window_attention_triton_forward`, recomputing the softmax.

    Returns:
        ``grad_q``, ``grad_k``, ``grad_v`` of shape ``(B, N, d, H, W)`` in the dtype of ``q``
        (``grad_q`` is zero off the query positions) and ``grad_pe`` of shape ``(d, H, W)``,
        or None when ``pe`` is None.
    """
    return attention_mix_backward(grad_out, q, k, v, pe, scale, kernel, stride, dilation)[:4]

"""The ACmix layer (ResNet variant) on the Triton path: three kernels, and a backward that keeps
only the layer's input.

* The three 1x1 projections are one convolution whose output channels are ordered ``c * 3N + t``
  (sub-channel ``c``, map ``t`` of ``[q heads, k heads, v heads]``), so that
* the convolution path (``fc`` mixing, reordering, grouped ``dep_conv``, times ``rate2``) is one
  grouped convolution of ``qkv`` with ``d`` groups: ``fc`` and ``dep_conv`` are both linear, so
  their composition has the weight ``W[o, t] = sum_j dep_conv[o, j] * fc[j, t]`` (an ``fc`` bias
  becomes a fixed map, zero padding included), and
* the attention kernel reads q, k, v as strided views of ``qkv`` and writes
  ``rate1 * attention + convolution`` as its epilogue.

The backward recomputes ``qkv`` (one 1x1 convolution) instead of keeping it, runs the attention's
gather backward into one ``grad_qkv`` and the convolutions' own backward. Numbers equal the
composition in :class:`acmix_mm.layers.ACmix` up to round-off.
"""
from functools import lru_cache
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F


try:
    _custom_fwd = torch.amp.custom_fwd(device_type='cuda')
    _custom_bwd = torch.amp.custom_bwd(device_type='cuda')
except AttributeError:  # torch < 2.4
    _custom_fwd, _custom_bwd = torch.cuda.amp.custom_fwd, torch.cuda.amp.custom_bwd


class StageConfig(NamedTuple):
    """The layer's fixed settings."""
    heads: int
    head_dim: int
    kernel_att: int
    stride: int
    dilation: int
    padding: int
    scale: float


@lru_cache(maxsize=None)
def qkv_channel_order(heads: int, head_dim: int, device: torch.device) -> torch.Tensor:
    """Index ``i`` of the reference's ``[q | k | v]`` channel ``t * d + c`` placed at ``c * 3N + t``
    (cached per device: no host-to-device copy, which would wait for the GPU, per call).

    Returns:
        Long tensor of shape ``(3 * N * d,)``.
    """
    order = torch.arange(3 * heads * head_dim).view(3 * heads, head_dim).t().reshape(-1)
    return order.to(device)


def folded_conv_weight(fc_weight: torch.Tensor, dep_weight: torch.Tensor) -> torch.Tensor:
    """``fc`` followed by ``dep_conv`` as one grouped convolution over the ``3N`` maps.

    Args:
        fc_weight: ``(k^2, 3N, 1, 1)``.
        dep_weight: ``(C, k^2, k, k)``.

    Returns:
        ``(C, 3N, k, k)``: group ``c`` reads the ``3N`` maps of sub-channel ``c``.
    """
    return torch.einsum('ojyx,jt->otyx', dep_weight, fc_weight.flatten(1))


def fc_bias_map(fc_bias: torch.Tensor, dep_weight: torch.Tensor, head_dim: int, size: Tuple[int, int],
                stride: int, padding: int, dilation: int) -> torch.Tensor:
    """What ``fc``'s bias contributes after ``dep_conv`` (zero padding makes it vary near the
    borders).

    Returns:
        ``(1, C, H_out, W_out)``.
    """
    k2 = fc_bias.numel()
    ones = dep_weight.new_ones((1, 1) + tuple(size))
    biased = (fc_bias.to(dep_weight.dtype).view(1, k2, 1, 1) * ones).repeat(1, head_dim, 1, 1)
    return F.conv2d(biased, dep_weight, None, stride, padding, dilation, head_dim)


def split_qkv(qkv: torch.Tensor, heads: int, head_dim: int):
    """``q, k, v`` of shape ``(B, N, d, H, W)`` as views of a ``c * 3N + t`` ordered ``qkv``."""
    b, _, h, w = qkv.shape
    maps = qkv.view(b, head_dim, 3, heads, h, w)
    return tuple(maps[:, :, i].transpose(1, 2) for i in range(3))


def _conv_backward(grad: torch.Tensor, inputs: torch.Tensor, weight: torch.Tensor, has_bias: bool,
                   stride: int, padding: int, dilation: int, groups: int, mask):
    """``aten.convolution_backward`` in the dtype of ``inputs``; weight and bias gradients in
    the dtype of ``weight``."""
    bias_sizes = [weight.shape[0]] if has_bias else None
    g_in, g_w, g_b = torch.ops.aten.convolution_backward(
        grad, inputs, weight.to(inputs.dtype), bias_sizes, [stride] * 2, [padding] * 2,
        [dilation] * 2, False, [0, 0], groups, [mask[0], mask[1], mask[2] and has_bias])
    cast = (lambda t: None if t is None else t.to(weight.dtype))
    return g_in, cast(g_w), cast(g_b)


class _ACmixStage(torch.autograd.Function):
    """``x -> rate1 * attention(qkv) + conv(qkv)``, saving only ``x`` and the weights."""

    @staticmethod
    @_custom_fwd
    def forward(ctx, x, w_qkv, b_qkv, pe, w_conv, b_conv, bias_map, rate1, cfg: StageConfig):
        from .kernels.sliding_window_triton import attention_mix_forward  # imports triton
        qkv = F.conv2d(x, w_qkv, b_qkv)
        conv = F.conv2d(qkv, w_conv, b_conv, cfg.stride, cfg.padding, cfg.dilation,
                        cfg.head_dim)
        if bias_map is not None:
            conv = conv + bias_map.to(conv.dtype)
        q, k, v = split_qkv(qkv, cfg.heads, cfg.head_dim)
        out = attention_mix_forward(q, k, v, pe, cfg.scale, cfg.kernel_att, cfg.stride,
                                    cfg.dilation, rate1, conv)
        ctx.save_for_backward(x, w_qkv, b_qkv, pe, w_conv, rate1)
        ctx.cfg, ctx.has_b_conv = cfg, b_conv is not None
        ctx.map_dtype = None if bias_map is None else bias_map.dtype
        return out.view(conv.shape)

    @staticmethod
    @_custom_bwd
    def backward(ctx, grad):
        from .kernels.sliding_window_triton import attention_mix_backward
        x, w_qkv, b_qkv, pe, w_conv, rate1 = ctx.saved_tensors
        cfg = ctx.cfg
        needs = ctx.needs_input_grad
        qkv = F.conv2d(x, w_qkv, b_qkv)
        grad = grad.to(qkv.dtype).contiguous()
        b, c = grad.shape[:2]
        alloc = torch.zeros if cfg.stride > 1 else torch.empty
        grad_qkv = alloc(qkv.shape, dtype=qkv.dtype, device=qkv.device)
        q, k, v = split_qkv(qkv, cfg.heads, cfg.head_dim)
        _, _, _, grad_pe, grad_rate = attention_mix_backward(
            grad.view(b, cfg.heads, cfg.head_dim, *grad.shape[2:]), q, k, v, pe, cfg.scale,
            cfg.kernel_att, cfg.stride, cfg.dilation, rate1,
            grads=split_qkv(grad_qkv, cfg.heads, cfg.head_dim))
        g_in, grad_w_conv, grad_b_conv = _conv_backward(
            grad, qkv, w_conv, ctx.has_b_conv, cfg.stride, cfg.padding, cfg.dilation,
            cfg.head_dim, (True, needs[4], needs[5]))
        grad_qkv += g_in
        grad_x, grad_w_qkv, grad_b_qkv = _conv_backward(
            grad_qkv, x.to(qkv.dtype), w_qkv, b_qkv is not None, 1, 0, 1, 1,
            (needs[0], needs[1], needs[2]))
        grad_map = None
        if ctx.map_dtype is not None:
            grad_map = grad.sum(0, keepdim=True, dtype=torch.float32).to(ctx.map_dtype)
        return (None if grad_x is None else grad_x.to(x.dtype), grad_w_qkv, grad_b_qkv, grad_pe,
                grad_w_conv, grad_b_conv, grad_map, grad_rate, None)


def acmix_forward_triton(module, x: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    """:meth:`acmix_mm.layers.ACmix.forward` through :class:`_ACmixStage`.

    Args:
        module: the :class:`~acmix_mm.layers.ACmix` layer.
        x: ``(B, Cin, H, W)``.
        pe: ``(d, H, W)``, the layer's positional term.

    Returns:
        ``(B, C, ceil(H / stride), ceil(W / stride))``.
    """
    n, d = module.heads, module.head_dim
    order = qkv_channel_order(n, d, x.device)
    w_qkv = torch.cat([module.conv1.weight, module.conv2.weight, module.conv3.weight])[order]
    b_qkv = torch.cat([module.conv1.bias, module.conv2.bias, module.conv3.bias])[order]
    dep = module.dep_conv
    padding = dep.padding[0]
    w_conv = folded_conv_weight(module.fc.weight, dep.weight) * module.rate2
    b_conv = None if dep.bias is None else dep.bias * module.rate2
    bias_map: Optional[torch.Tensor] = None
    if module.fc.bias is not None:
        bias_map = fc_bias_map(module.fc.bias, dep.weight, d, x.shape[-2:], module.stride,
                               padding, module.dilation) * module.rate2
    cfg = StageConfig(n, d, module.kernel_att, module.stride, module.dilation, padding,
                      float(d) ** -0.5)
    return _ACmixStage.apply(x, w_qkv, b_qkv, pe, w_conv, b_conv, bias_map, module.rate1, cfg)

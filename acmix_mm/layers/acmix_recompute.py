"""The training path of :class:`~acmix_mm.layers.ACmix`: keeps only the layer's input.

The forward runs the inference computation (fused kernels, nothing kept for autograd) and saves
``x`` alone, which the layer before keeps anyway; the backward recomputes ``qkv`` from it and runs
the backward of each stage directly: the attention operator's backward kernel, the conv-path
kernel's backward (on the planar ``qkv``, strided ``dep_conv`` included, writing ``qkv``'s whole
gradient with the attention's added; the composition under autograd where the C++ kernels are
unavailable) and the three projections' backward (:func:`.projection.project_1x1_backward`).
``rate1``'s gradient ``<grad_out, attention>`` is ``<grad_v, v>`` (the attention is linear in
``v``) and ``rate2``'s comes the same way from ``dep_conv``'s weight and bias, so neither path's
output is recomputed for them.
"""
from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .conv_path import conv_path_backward
from .kernels.sliding_window_op import (selected_backend, sliding_window_attention_backward_into,
                                        sliding_window_attention_backward_op)
from .projection import project_1x1_backward


def acmix_backward(layer: nn.Module, x: torch.Tensor, grad_out: torch.Tensor,
                   need_x: bool) -> Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]:
    """Gradients of ``layer(x)`` (an ``ACmix``) from ``grad_out``.

    Args:
        layer: the ``ACmix`` module.
        x: ``(B, Cin, H, W)``.
        grad_out: ``(B, C, H_out, W_out)``.
        need_x: whether to compute the input's gradient.

    Returns:
        The input's gradient ``(B, Cin, H, W)`` (None unless ``need_x``) and the layer's parameter
        names, each to its gradient (None where a parameter needs none).
    """
    b, c_in, h, w = x.shape
    n, d, c = layer.heads, layer.head_dim, layer.out_channels
    rate1 = layer.rate1
    qkv = layer.project(x)
    pe = layer.position_term(h, w, x.dtype, x.device)
    q, k, v = qkv.view(b, 3, n, d, h, w).unbind(1)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    grad_att = grad_out.reshape(b, n, d, *grad_out.shape[-2:]).contiguous()
    attention = (grad_att, q, k, v, pe, float(d) ** -0.5, layer.kernel_att, layer.stride,
                 layer.dilation)
    if selected_backend(x.device, x.dtype) == 'cpp':
        # one map for the attention's gradients, into which the conv path's are then added
        grad_all = x.new_empty(b, 3, n, d, h, w)
        grad_pe = sliding_window_attention_backward_into(grad_all, *attention)
        grad_v = grad_all[:, 2]
        addends, in_place = (grad_all.view(b, 3 * n, d, h, w), ), True
    else:
        grad_q, grad_k, grad_v, grad_pe = sliding_window_attention_backward_op(*attention)
        addends, in_place = (grad_q, grad_k, grad_v), False
    # <grad_out, attention> = <grad_v, v>, read before grad_v is overwritten below
    rate1_grad = sum(torch.vdot(gv.flatten(), vb.flatten()) for gv, vb in zip(grad_v, v))
    # grad qkv = conv path's + rate1 * attention's, summed as the conv path's is written
    scale = rate1.item()
    conv = conv_path_backward(qkv.view(b, 3 * n, d, h, w), grad_out, layer.fc, layer.dep_conv,
                              layer.rate2, addends=addends, addend_scale=scale, in_place=in_place)
    grads = {('rate2' if key == 'out_scale' else key): grad for key, grad in conv.items()}
    grads['rate1'] = rate1_grad.view(1)
    grad_qkv = conv['qkv'].reshape(b, 3 * c, h * w)
    grad_pe = (grad_pe * scale).view(d, h * w)
    grid = layer.position_grid_flat(h, w, x.dtype, x.device)
    grads['conv_p.weight'] = (grad_pe @ grid.t()).view_as(layer.conv_p.weight)
    grads['conv_p.bias'] = grad_pe.sum(1)
    weight, _ = layer.projection_weights()
    grad_x, grad_weight, grad_bias = project_1x1_backward(x, weight, grad_qkv, need_x)
    for i, conv_i in enumerate((layer.conv1, layer.conv2, layer.conv3)):
        grads[f'conv{i + 1}.weight'] = grad_weight[i * c:(i + 1) * c].view_as(conv_i.weight)
        grads[f'conv{i + 1}.bias'] = grad_bias[i * c:(i + 1) * c]
    return grad_x, grads


class _RecomputedACmix(torch.autograd.Function):
    """``layer(x)`` saving only ``x``; ``params`` are the layer's, in ``named_parameters`` order,
    so that autograd delivers their gradients."""

    @staticmethod
    def forward(ctx, layer, x, *params):
        ctx.layer = layer
        ctx.save_for_backward(x)
        return layer.mix_paths(layer.project(x))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, = ctx.saved_tensors
        layer = ctx.layer
        grad_x, grads = acmix_backward(layer, x, grad_out, ctx.needs_input_grad[1])
        return (None, grad_x) + tuple(
            grads[name] if p.requires_grad else None for name, p in layer.named_parameters())


def recomputed_acmix(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for training, keeping only ``x`` for the backward (see the module's doc).

    Args:
        layer: an ``ACmix``.
        x: ``(B, Cin, H, W)``.

    Returns:
        ``(B, C, H_out, W_out)``.
    """
    return _RecomputedACmix.apply(layer, x, *layer.parameters())

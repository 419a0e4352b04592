"""The training path of :class:`~acmix_mm.layers.ACmix`: keeps only the layer's input.

The forward runs the inference computation (fused kernels, nothing kept for autograd) and saves
``x`` alone, which the layer before keeps anyway; the backward recomputes ``qkv`` from it and runs
the backward of each stage directly. Stage II's is one call of the C++ extension where its kernels
run (``acmix_stage_backward``: the attention's backward kernel, then the conv-path kernel's on the
planar ``qkv``, strided ``dep_conv`` included, adding ``qkv``'s whole gradient in place to the
attention's; :func:`_stage_backward` composes the operators elsewhere); then the three
projections' backward (:func:`.projection.project_1x1_backward`).
``rate1``'s gradient ``<grad_out, attention>`` is ``<grad_v, v>`` (the attention is linear in
``v``) and ``rate2``'s comes the same way from ``dep_conv``'s weight and bias, so neither path's
output is recomputed for them.
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .conv_path import conv_path_backward
from .kernels.conv_path_op import fused_conv_path_applies
from .kernels.cpu_extension import run_kernel
from .kernels.sliding_window_op import sliding_window_attention_backward_op
from .projection import project_1x1_backward

# acmix_stage_backward's results after the qkv gradient, in its order
_STAGE_GRADS = ('rate1', 'rate2', 'conv_p.weight', 'conv_p.bias', 'fc.weight', 'fc.bias',
                'dep_conv.weight', 'dep_conv.bias')


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
    c = layer.out_channels
    weight, bias = layer.projection_weights()
    qkv = layer.project(x, (weight, bias))
    conv_p, fc, dep_conv = layer.conv_p, layer.fc, layer.dep_conv
    if fused_conv_path_applies(qkv, conv_p.weight, conv_p.bias, fc.weight, fc.bias,
                               dep_conv.weight, dep_conv.bias, differentiable=True):
        # stage II's backward in one call of the C++ extension
        grid = layer.position_grid_flat(h, w, x.dtype, x.device)
        grad_qkv, *stage = run_kernel(
            'acmix_stage_backward', grad_out, qkv, grid, conv_p.weight, conv_p.bias, fc.weight,
            fc.bias, dep_conv.weight, dep_conv.bias, layer.rate1.item(), layer.rate2, layer.heads,
            layer.kernel_att, layer.stride, layer.dilation)
        grads = dict(zip(_STAGE_GRADS, stage))
    else:
        grad_qkv, grads = _stage_backward(layer, qkv, grad_out)
    grad_x, grad_weight, grad_bias = project_1x1_backward(
        x, weight, grad_qkv.reshape(b, 3 * c, h * w), need_x)
    for i, conv_i in enumerate((layer.conv1, layer.conv2, layer.conv3)):
        grads[f'conv{i + 1}.weight'] = grad_weight[i * c:(i + 1) * c].view_as(conv_i.weight)
        grads[f'conv{i + 1}.bias'] = grad_bias[i * c:(i + 1) * c]
    return grad_x, grads


def _stage_backward(layer: nn.Module, qkv: torch.Tensor,
                    grad_out: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Stage II's backward from operators (where the C++ extension does not run it): the
    attention operator's backward, then the conv path's with the attention's gradient added.

    Returns:
        ``qkv``'s gradient (any strides, ``B * 3C * H * W`` elements in ``(B, 3C, H, W)`` order)
        and the stage's parameter names, each to its gradient.
    """
    b, _, h, w = qkv.shape
    n, d = layer.heads, layer.head_dim
    pe = layer.position_term(h, w, qkv.dtype, qkv.device)
    q, k, v = qkv.view(b, 3, n, d, h, w).unbind(1)
    grad_att = grad_out.reshape(b, n, d, *grad_out.shape[-2:]).contiguous()
    grad_q, grad_k, grad_v, grad_pe = sliding_window_attention_backward_op(
        grad_att, q, k, v, pe, float(d) ** -0.5, layer.kernel_att, layer.stride, layer.dilation)
    # <grad_out, attention> = <grad_v, v>: the attention is linear in v
    rate1_grad = sum(torch.vdot(gv.flatten(), vb.flatten()) for gv, vb in zip(grad_v, v))
    # grad qkv = conv path's + rate1 * attention's, summed as the conv path's is written
    scale = layer.rate1.item()
    conv = conv_path_backward(qkv.view(b, 3 * n, d, h, w), grad_out, layer.fc, layer.dep_conv,
                              layer.rate2, addends=(grad_q, grad_k, grad_v), addend_scale=scale)
    grads = {('rate2' if key == 'out_scale' else key): grad for key, grad in conv.items()}
    grads['rate1'] = rate1_grad.view(1)
    grad_pe = (grad_pe * scale).view(d, h * w)
    grid = layer.position_grid_flat(h, w, qkv.dtype, qkv.device)
    grads['conv_p.weight'] = (grad_pe @ grid.t()).view_as(layer.conv_p.weight)
    grads['conv_p.bias'] = grad_pe.sum(1)
    return grads.pop('qkv'), grads


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


def recomputed_acmix(layer: nn.Module, x: torch.Tensor,
                     params: Optional[Sequence[nn.Parameter]] = None) -> torch.Tensor:
    """``layer(x)`` for training, keeping only ``x`` for the backward (see the module's doc).

    Args:
        layer: an ``ACmix``.
        x: ``(B, Cin, H, W)``.
        params: ``tuple(layer.parameters())`` where the caller has it already.

    Returns:
        ``(B, C, H_out, W_out)``.
    """
    return _RecomputedACmix.apply(layer, x, *(layer.parameters() if params is None else params))

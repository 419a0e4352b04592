"""The convolution path of ACmix (Stage II, shared by the ResNet and Swin variants).

The ``3N`` projected maps of ``d`` channels (``[q heads, k heads, v heads]``) are mixed by a 1x1
``fc`` into ``k_conv**2`` maps per sub-channel, reordered to channel ``c * k_conv**2 + j`` and fed
to a grouped ``dep_conv`` whose kernels start as "shift" kernels.

The two submodules live directly on the ACmix modules (reference parameter names ``fc`` and
``dep_conv``), so this file offers builders and a functional forward rather than a module.
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .kernels.conv_path_op import (fused_conv_path, fused_conv_path_applies,
                                   fused_conv_path_backward, pack_weight)


def build_fc(heads: int, kernel_conv: int, bias: bool) -> nn.Conv2d:
    """``fc``: 1x1 mixing from the ``3N`` axis to ``k_conv**2`` outputs."""
    return nn.Conv2d(3 * heads, kernel_conv * kernel_conv, kernel_size=1, bias=bias)


def build_dep_conv(channels: int, head_dim: int, kernel_conv: int, stride: int = 1,
                   dilation: int = 1) -> nn.Conv2d:
    """``dep_conv``: grouped conv, group ``c`` reads channels ``c*k^2 .. c*k^2 + k^2 - 1``."""
    conv = nn.Conv2d(kernel_conv * kernel_conv * head_dim, channels, kernel_size=kernel_conv,
                     stride=stride, padding=dilation * (kernel_conv // 2), dilation=dilation,
                     groups=head_dim, bias=True)
    shift_init_(conv)
    return conv


def shift_kernels(out_channels: int, kernel_size: int) -> torch.Tensor:
    """Shift initialisation: ``w[o, j, j // k, j % k] = 1``, all else 0.

    Returns:
        Tensor of shape ``(out_channels, k*k, k, k)``.
    """
    k2 = kernel_size * kernel_size
    one = torch.zeros(k2, kernel_size, kernel_size)
    j = torch.arange(k2)
    one[j, j // kernel_size, j % kernel_size] = 1.0
    return one.unsqueeze(0).repeat(out_channels, 1, 1, 1)


@torch.no_grad()
def shift_init_(dep_conv: nn.Conv2d) -> None:
    """Sets ``dep_conv`` to shift kernels and a zero bias, in place."""
    dep_conv.weight.copy_(shift_kernels(dep_conv.out_channels, dep_conv.kernel_size[0]))
    if dep_conv.bias is not None:
        dep_conv.bias.zero_()


def _folded(dep_conv: nn.Conv2d, out_scale: Optional[torch.Tensor],
            out_bias: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``dep_conv``'s weight and bias with ``out_scale`` and ``out_bias`` folded in."""
    weight, bias = dep_conv.weight, dep_conv.bias
    if out_scale is not None:
        weight = weight * out_scale.view(-1, 1, 1, 1)
        bias = None if bias is None else bias * out_scale
    if out_bias is not None:
        bias = out_bias if bias is None else bias + out_bias
    return weight, bias


def conv_path(qkv: torch.Tensor, fc: nn.Conv2d, dep_conv: nn.Conv2d,
              out_scale: Optional[torch.Tensor] = None, residual: Optional[torch.Tensor] = None,
              residual_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Runs ``fc``, the channel reordering and ``dep_conv``.

    Where no gradient is needed on the CPU the fused C++ kernel computes it in one pass
    (:mod:`.kernels.conv_path_op`). Otherwise ``fc`` runs as a matrix product whose output is laid
    out channels-last, in the channel order ``c * k^2 + j`` that ``dep_conv`` reads, because the
    CPU's grouped convolution is several times faster on channels-last maps.

    Args:
        qkv: ``(B, 3N, d, H, W)``, axis 1 ordered ``[q heads, k heads, v heads]``.
        fc: from :func:`build_fc`.
        dep_conv: from :func:`build_dep_conv`.
        out_scale: ``(1,)`` or ``(C,)``, multiplies the result; folded into ``dep_conv``'s weight.
        residual: ``(B, C, H_out, W_out)``, added to the result (the fused kernel adds it as it
            writes the result), times ``residual_scale`` ``(1,)``.

    Returns:
        ``(B, C, H_out, W_out)``, the size set by ``dep_conv``'s stride; laid out as ``residual``
        where one is given, else channels-last.
    """
    b, t, d, h, w = qkv.shape
    k2 = fc.out_channels
    weight, bias = _folded(dep_conv, out_scale, None)
    if fused_conv_path_applies(qkv, fc.weight, fc.bias, weight, bias, residual, residual_scale):
        out = fused_conv_path(qkv.permute(0, 3, 4, 1, 2), fc.weight, fc.bias, weight, bias,
                              dep_conv.stride[0], dep_conv.dilation[0], residual,
                              1.0 if residual_scale is None else residual_scale.item())
        return out if residual is not None else out.permute(0, 3, 1, 2)
    # bmm with the weight expanded: torch.matmul would run this as a slow transposed product.
    mixed = torch.bmm(fc.weight.view(1, k2, t).expand(b, k2, t), qkv.reshape(b, t, d * h * w))
    if fc.bias is not None:
        mixed = mixed + fc.bias.view(k2, 1)
    mixed = mixed.view(b, k2, d, h, w).permute(0, 3, 4, 2, 1).contiguous()  # (B, H, W, d, k^2)
    out = F.conv2d(mixed.view(b, h, w, d * k2).permute(0, 3, 1, 2), weight, bias,
                   dep_conv.stride, dep_conv.padding, dep_conv.dilation, dep_conv.groups)
    if residual is None:
        return out
    return (residual if residual_scale is None else residual * residual_scale).add(out)


def conv_path_backward(qkv: torch.Tensor, grad_out: torch.Tensor, fc: nn.Conv2d,
                       dep_conv: nn.Conv2d, out_scale: torch.Tensor,
                       addends: Sequence[torch.Tensor] = (),
                       addend_scale: float = 1.0, in_place: bool = False) -> Dict[str, torch.Tensor]:
    """Gradients of :func:`conv_path` ``(qkv, fc, dep_conv, out_scale)`` from ``grad_out``,
    recomputing what they need from ``qkv``; ``qkv``'s gradient comes with ``addend_scale`` times
    the ``addends`` added (the attention's gradient in ACmix's backward).

    On the C++ backend the fused kernel's backward reads the planar maps and writes the planar
    gradient directly (rows transposed in registers); elsewhere autograd runs through the
    composition.

    Args:
        qkv: ``(B, 3N, d, H, W)``, no gradient attached.
        grad_out: ``(B, C, H_out, W_out)``.
        fc, dep_conv: from :func:`build_fc` and :func:`build_dep_conv`.
        out_scale: ``(1,)``.
        addends: contiguous maps that together make up ``(B, 3N, d, H, W)`` along axis 1 (each
            ``(B, 3N / len(addends), d, H, W)``).
        addend_scale: multiplies the addends.
        in_place: with one contiguous addend, ``qkv``'s gradient is written into it (no map of
            its own is allocated).

    Returns:
        ``qkv`` ``(B, 3N, d, H, W)`` (any strides), ``out_scale``, and the parameters' names of
        ``fc`` and ``dep_conv`` prefixed ``fc.`` and ``dep_conv.``, each to its gradient (None
        where a parameter needs none).
    """
    params = dict([('out_scale', out_scale)] + [(f'fc.{n}', p) for n, p in fc.named_parameters()]
                  + [(f'dep_conv.{n}', p) for n, p in dep_conv.named_parameters()])
    weight, bias = dep_conv.weight, dep_conv.bias
    b, t, d, h, w = qkv.shape
    if in_place and (len(addends) != 1 or not addends[0].is_contiguous()):
        raise ValueError(f'in_place needs one contiguous addend, got {len(addends)} addends'
                         + ('' if len(addends) != 1 else ' (not contiguous)'))
    addends = [a.contiguous() for a in addends]
    if fused_conv_path_applies(qkv, fc.weight, weight, *addends, differentiable=True):
        packed, _ = pack_weight(weight, None, d, scale=out_scale)
        maps = qkv if qkv.stride(-1) == 1 else qkv.contiguous()
        grad_maps, grad_fc_w, grad_fc_b, grad_w, grad_b = fused_conv_path_backward(
            grad_out.permute(0, 2, 3, 1), maps.permute(0, 3, 4, 1, 2),
            fc.weight.view(fc.out_channels, -1), fc.bias, packed, dep_conv.dilation[0],
            dep_conv.stride[0], addends, addend_scale, in_place)
        # dep_conv is linear in its weight and bias: <grad_out, conv> = <grad_w, w> + <grad_b, b>
        grad_scale = torch.vdot(grad_w.flatten(), weight.flatten())
        if bias is not None:
            grad_scale = grad_scale + torch.vdot(grad_b, bias)
        grads = {'qkv': grad_maps.permute(0, 3, 4, 1, 2), 'out_scale': grad_scale.view(1),
                 'fc.weight': grad_fc_w.view_as(fc.weight), 'fc.bias': grad_fc_b,
                 'dep_conv.weight': grad_w * out_scale, 'dep_conv.bias': grad_b * out_scale}
        return {n: grads[n] if n == 'qkv' or p.requires_grad else None
                for n, p in [('qkv', qkv)] + list(params.items())}
    with torch.enable_grad():
        qkv = qkv.detach().requires_grad_()
        wrt = [('qkv', qkv)] + [(n, p) for n, p in params.items() if p.requires_grad]
        out = conv_path(qkv, fc, dep_conv, out_scale)
        grads = dict(zip([n for n, _ in wrt],
                         torch.autograd.grad(out, [p for _, p in wrt], grad_out)))
    if addends:
        total = addends[0] if in_place else torch.cat(addends, 1)
        grads['qkv'] = total.mul_(addend_scale).add_(grads['qkv'])
    return {n: grads.get(n) for n in ['qkv'] + list(params)}


def conv_path_channels_last(qkv: torch.Tensor, heads: int, fc: nn.Conv2d, dep_conv: nn.Conv2d,
                            out_scale: Optional[torch.Tensor] = None,
                            out_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`conv_path` for a channels-last ``[q | k | v]`` map, as the Swin variant has it.

    Channel ``t * d + c`` of ``qkv`` is map ``t = type * N + head``, sub-channel ``c``. ``fc`` runs
    as ``(k^2, 3N) @ (3N, d)`` per position (the fast orientation of the product); one transposing
    copy then gives the channel order ``c * k^2 + j`` that ``dep_conv`` reads, channels-last. The
    fused C++ kernel replaces all of it where no gradient is needed, as in :func:`conv_path`.

    Args:
        qkv: ``(B, H, W, 3C)``.
        heads: ``N``.
        fc, dep_conv: from :func:`build_fc` and :func:`build_dep_conv`.
        out_scale: ``(1,)`` or ``(C,)``, multiplies the result; folded into ``dep_conv``'s weight.
        out_bias: ``(C,)``, added to the result; folded into ``dep_conv``'s bias.

    Returns:
        ``(B, H_out, W_out, C)``, contiguous.
    """
    b, h, w, c3 = qkv.shape
    t = 3 * heads
    k2 = fc.out_channels
    weight, bias = _folded(dep_conv, out_scale, out_bias)
    if fused_conv_path_applies(qkv, fc.weight, fc.bias, weight, bias,
                               differentiable=dep_conv.stride[0] == 1 and qkv.stride(-1) == 1):
        return fused_conv_path(qkv.view(b, h, w, t, c3 // t), fc.weight, fc.bias, weight, bias,
                               dep_conv.stride[0], dep_conv.dilation[0])
    p = b * h * w
    mixed = torch.bmm(fc.weight.view(1, k2, t).expand(p, k2, t), qkv.reshape(p, t, c3 // t))
    if fc.bias is not None:
        mixed = mixed + fc.bias.view(k2, 1)
    mixed = mixed.transpose(1, 2).contiguous()  # (P, k^2, d) -> (P, d, k^2)
    out = F.conv2d(mixed.view(b, h, w, -1).permute(0, 3, 1, 2), weight, bias, dep_conv.stride,
                   dep_conv.padding, dep_conv.dilation, dep_conv.groups)
    return out.permute(0, 2, 3, 1)

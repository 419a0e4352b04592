"""The convolution path of ACmix as one fused C++ CPU kernel.

``fc``, the channel reordering and the grouped ``dep_conv`` run in one pass over the projected maps
(:file:`conv_path_cpu.cpp`), without the transposed copy or mkldnn's slow grouped convolution. Its
backward (planar or channels-last maps, any stride) recomputes the mixed maps.
:func:`fused_conv_path_applies` says when it may run (where the attention operator's
``selected_backend`` is ``cpp``, i.e. CPU, float32/float64, the extension built and
``ACMIX_MM_KERNEL`` allowing it; not traced; a backward where one is needed); elsewhere
:mod:`acmix_mm.layers.conv_path` composes PyTorch operators with the same numbers.
"""
from typing import Optional, Sequence, Tuple

import torch

from ..projection import recording_graph
from .cpu_extension import run_kernel
from .sliding_window_op import selected_backend


def fused_conv_path_applies(*tensors: Optional[torch.Tensor], differentiable: bool = False) -> bool:
    """Whether :func:`fused_conv_path` may compute the conv path of these tensors.

    Args:
        tensors: the inputs and parameters (None entries are skipped).
        differentiable: whether the kernel's backward covers this call (``dep_conv`` stride 1 and
            channels-last maps); otherwise only calls that need no gradient qualify.
    """
    present = [t for t in tensors if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in present) and not differentiable:
        return False
    if recording_graph():
        return False  # a traced graph must see the operators (FLOP counting, export)
    first = present[0]
    return (all(t.dtype == first.dtype for t in present)
            and selected_backend(first.device, first.dtype) == 'cpp')


def pack_weight(weight: torch.Tensor, bias: Optional[torch.Tensor], d: int,
                scale: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``dep_conv``'s ``(d * M, k^2, k, k)`` weight as ``(chunks, M, k, k, k^2, lanes)`` and its
    bias as ``(M, d_pad)``, channels zero-padded to whole vectors of the kernel (``lanes``: the
    extension's ``vector_bytes``, 64 where it is built for AVX-512, else 32, over the element
    size); both times ``scale`` (``(1,)`` or ``(d * M,)``) where given. The extension's
    ``conv_path_pack`` (no gradient flows through it)."""
    if scale is None:
        scale = weight.new_ones(1)
    packed, packed_bias = run_kernel('conv_path_pack', weight.detach(),
                                     None if bias is None else bias.detach(), scale.detach(), d)
    return packed, packed_bias


def fused_conv_path_backward(grad_out: torch.Tensor, maps: torch.Tensor, fc_weight: torch.Tensor,
                             fc_bias: Optional[torch.Tensor], packed: torch.Tensor, dilation: int,
                             stride: int = 1, addends: Sequence[torch.Tensor] = (),
                             addend_scale: float = 1.0,
                             in_place: bool = False) -> Tuple[torch.Tensor, ...]:
    """The kernel's backward: gradients of every input of :func:`fused_conv_path` from
    ``grad_out``. A strided ``dep_conv`` is the stride-1 one read at every ``stride``-th
    position: the kernel runs the stride-1 backward with ``grad_out`` placed at those positions,
    skipping the zero rows between.

    Args:
        grad_out: ``(B, H_out, W_out, d * M)``, any strides (e.g. a planar map permuted).
        maps: ``(B, H, W, T, d)`` with unit stride along ``d`` (channels-last) or ``W`` (planar).
        fc_weight: ``(k^2, T)``, contiguous; fc_bias: ``(k^2,)`` or None.
        packed: ``dep_conv``'s weight as :func:`pack_weight` lays it out.
        dilation, stride: ``dep_conv``'s.
        addends: planar maps only: contiguous ``(B, T / len(addends), d, H, W)`` maps, added
            times ``addend_scale`` to the maps' gradient as it is written.
        in_place: write the maps' gradient into the one addend (which holds it afterwards).

    Returns:
        ``grad_maps (B, H, W, T, d)`` laid out as ``maps`` (planar underneath for planar maps),
        ``grad_fc_weight (k^2, T)``, ``grad_fc_bias (k^2,)``, ``grad_weight (d * M, k^2, k, k)``
        and ``grad_bias (d * M,)``.
    """
    grad_maps, grad_fc_w, grad_fc_b, grad_packed, grad_packed_bias = \
        run_kernel('conv_path_backward', grad_out, maps, fc_weight, fc_bias, packed, stride,
                   dilation, list(addends), float(addend_scale), in_place)
    grad_w, grad_b = run_kernel('conv_path_unpack', grad_packed, grad_packed_bias, maps.shape[-1])
    return grad_maps, grad_fc_w, grad_fc_b, grad_w, grad_b


class _FusedConvPath(torch.autograd.Function):
    """The kernel's forward and backward; saves only the maps and the parameters."""

    @staticmethod
    def forward(ctx, maps, fc_weight, fc_bias, weight, bias, dilation):
        packed, packed_bias = pack_weight(weight, bias, maps.shape[-1])
        fc_weight = fc_weight.reshape(fc_weight.shape[0], -1).contiguous()
        ctx.save_for_backward(maps, fc_weight, fc_bias, packed)
        ctx.dilation, ctx.has_bias = dilation, bias is not None
        return run_kernel('conv_path_forward', maps, fc_weight, fc_bias, packed, packed_bias, 1,
                          dilation, None, 1.0, False)

    @staticmethod
    def backward(ctx, grad_out):
        maps, fc_weight, fc_bias, packed = ctx.saved_tensors
        grad_maps, grad_fc_w, grad_fc_b, grad_w, grad_b = fused_conv_path_backward(
            grad_out, maps, fc_weight, fc_bias, packed, ctx.dilation)
        return (grad_maps, grad_fc_w.view(*grad_fc_w.shape, 1, 1),
                grad_fc_b if fc_bias is not None else None, grad_w,
                grad_b if ctx.has_bias else None, None)


def fused_conv_path(maps: torch.Tensor, fc_weight: torch.Tensor, fc_bias: Optional[torch.Tensor],
                    weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int,
                    dilation: int, addend: Optional[torch.Tensor] = None,
                    addend_scale: float = 1.0) -> torch.Tensor:
    """``dep_conv(reorder(fc(maps)))`` of every position, channels-last; or, with ``addend``,
    ``that + addend_scale * addend`` laid out as ``addend`` (planar), in the same pass.

    Differentiable where ``stride`` is 1, ``maps`` is channels-last (unit stride along ``d``) and
    no ``addend`` is given: the backward kernel recomputes the mixed maps, so a training step
    stores only the inputs.

    Args:
        maps: ``(B, H, W, T, d)``, any strides: ``T = 3N`` maps of ``d`` channels.
        fc_weight: ``(k^2, T, 1, 1)``; fc_bias: ``(k^2,)`` or None.
        weight: ``dep_conv``'s ``(d * M, k^2, k, k)`` (``M`` outputs per group); bias:
            ``(d * M,)`` or None.
        stride, dilation: ``dep_conv``'s (its padding is ``dilation * (k // 2)``).

        addend: ``(B, d * M, H_out, W_out)`` or None (no gradient flows to it).
        addend_scale: multiplies ``addend``.

    Returns:
        ``(B, H_out, W_out, d * M)``, contiguous; with ``addend``, ``(B, d * M, H_out, W_out)``.
    """
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (maps, fc_weight, fc_bias, weight, bias))
    if needs_grad:
        if stride != 1 or maps.stride(-1) != 1 or addend is not None:
            raise ValueError('the fused conv path has a backward for stride 1, channels-last '
                             f'maps and no addend only, got stride={stride}, maps strides '
                             f'{maps.stride()}, addend {addend is not None}')
        return _FusedConvPath.apply(maps, fc_weight, fc_bias, weight, bias, dilation)
    packed, packed_bias = pack_weight(weight, bias, maps.shape[-1])
    return run_kernel('conv_path_forward', maps,
                      fc_weight.reshape(fc_weight.shape[0], -1).contiguous(), fc_bias, packed,
                      packed_bias, stride, dilation, addend, float(addend_scale), False)

"""Swin's zero padding and cyclic shift of a channels-last map, each direction in one copy.

Swin pads a ``(B, H, W, C)`` map with zeros to window multiples and rolls it by ``-shift`` along
both spatial axes before its shifted window attention, then rolls the result back and crops it.
``F.pad`` and ``torch.roll`` (which on the CPU copies once per rolled axis) make three passes over
the map each way, and as many in the backward; :func:`pad_and_roll` and :func:`roll_and_crop`
make one, by copying each of the (at most) four blocks of the result from where it lies in the
source and zero-filling the rest. They are each other's backward. Traces and torch.compile get
``F.pad``, ``torch.roll`` and slicing, the same numbers.
"""
from typing import List, Tuple

import torch
import torch.nn.functional as F

from .projection import recording_graph

# (output start, source start or -1 for zeros, length) along one axis
Segment = Tuple[int, int, int]


def _segments(out_len: int, period: int, offset: int, valid: int) -> List[Segment]:
    """Where position ``i < out_len`` of the output reads along one axis: source position
    ``(i + offset) % period``, or zero where that position is ``>= valid`` (padding)."""
    segments = []
    i = 0
    while i < out_len:
        src = (i + offset) % period
        length = min(out_len - i, period - src)  # up to the wrap
        if src < valid:
            length = min(length, valid - src)
            segments.append((i, src, length))
        else:
            segments.append((i, -1, length))
        i += length
    return segments


def _cyclic_copy(x: torch.Tensor, out_hw: Tuple[int, int], period: Tuple[int, int],
                 offset: Tuple[int, int]) -> torch.Tensor:
    """``out[b, i, j] = x[b, (i + oy) % Py, (j + ox) % Px]``, zero where that is outside ``x``."""
    b, h, w, c = x.shape
    out = x.new_empty((b, *out_hw, c))
    rows = _segments(out_hw[0], period[0], offset[0], h)
    cols = _segments(out_hw[1], period[1], offset[1], w)
    for r0, sr, rn in rows:
        for c0, sc, cn in cols:
            block = out[:, r0:r0 + rn, c0:c0 + cn]
            if sr < 0 or sc < 0:
                block.zero_()
            else:
                block.copy_(x[:, sr:sr + rn, sc:sc + cn])
    return out


class _CyclicShift(torch.autograd.Function):
    """:func:`_pad_and_roll` (``padding``) or :func:`_roll_and_crop`; each the other's backward."""

    @staticmethod
    def forward(ctx, x, out_hw, shift, padding):
        ctx.in_hw, ctx.shift, ctx.padding = tuple(x.shape[1:3]), shift, padding
        return (_pad_and_roll if padding else _roll_and_crop)(x, out_hw, shift)

    @staticmethod
    def backward(ctx, grad):
        return _CyclicShift.apply(grad, ctx.in_hw, ctx.shift, not ctx.padding), None, None, None


def _pad_and_roll(x: torch.Tensor, padded_hw: Tuple[int, int], shift: int) -> torch.Tensor:
    return _cyclic_copy(x, padded_hw, padded_hw, (shift, shift))


def _roll_and_crop(x: torch.Tensor, hw: Tuple[int, int], shift: int) -> torch.Tensor:
    hp, wp = x.shape[1:3]
    return _cyclic_copy(x, hw, (hp, wp), ((hp - shift) % hp, (wp - shift) % wp))


def _check(x: torch.Tensor, name: str, size: Tuple[int, int], size_name: str,
           shift: int) -> None:
    if x.dim() != 4:
        raise ValueError(f'{name} must be (B, H, W, C), got shape {tuple(x.shape)}')
    if len(size) != 2 or any(not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(f'{size_name} must be two positive ints, got {size!r}')
    if not isinstance(shift, int) or shift < 0:
        raise ValueError(f'shift must be an int >= 0, got {shift!r}')


def pad_and_roll(x: torch.Tensor, padded_hw: Tuple[int, int], shift: int) -> torch.Tensor:
    """``torch.roll(F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H)), (-shift, -shift), (1, 2))``.

    Args:
        x: ``(B, H, W, C)``.
        padded_hw: ``(Hp, Wp)``, each at least ``x``'s.
        shift: ``>= 0``.

    Returns:
        ``(B, Hp, Wp, C)``, contiguous; ``x`` itself where there is nothing to pad or roll.
    """
    if recording_graph():  # sizes may be traced tensors
        x = F.pad(x, (0, 0, 0, padded_hw[1] - x.shape[2], 0, padded_hw[0] - x.shape[1]))
        return torch.roll(x, shifts=(-shift, -shift), dims=(1, 2)) if shift else x
    padded_hw = tuple(padded_hw)
    _check(x, 'x', padded_hw, 'padded_hw', shift)
    if padded_hw[0] < x.shape[1] or padded_hw[1] < x.shape[2]:
        raise ValueError(f'padded_hw {padded_hw} is smaller than the map {tuple(x.shape[1:3])}')
    if padded_hw == tuple(x.shape[1:3]) and shift == 0:
        return x
    return _CyclicShift.apply(x, padded_hw, shift, True)


def roll_and_crop(x: torch.Tensor, hw: Tuple[int, int], shift: int) -> torch.Tensor:
    """``torch.roll(x, (shift, shift), (1, 2))[:, :H, :W]``: the inverse of :func:`pad_and_roll`.

    Args:
        x: ``(B, Hp, Wp, C)``.
        hw: ``(H, W)``, each at most ``x``'s.
        shift: ``>= 0``.

    Returns:
        ``(B, H, W, C)``, contiguous (``x`` itself where there is nothing to crop or roll).
    """
    if recording_graph():
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2)) if shift else x
        return x[:, :hw[0], :hw[1]].contiguous()
    hw = tuple(hw)
    _check(x, 'x', hw, 'hw', shift)
    if hw[0] > x.shape[1] or hw[1] > x.shape[2]:
        raise ValueError(f'hw {hw} is larger than the map {tuple(x.shape[1:3])}')
    if hw == tuple(x.shape[1:3]) and shift == 0:
        return x.contiguous()
    return _CyclicShift.apply(x, hw, shift, False)

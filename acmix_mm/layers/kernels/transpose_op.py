"""Batched transposing copies between the planar and the channels-last layout of ACmix's maps.

``out[b, s, r] = src[b, r, s] + scale * addend[b, s, r]``, written in place. On the C++ backend
(:file:`transpose_cpu.cpp`, register-tiled) it runs at several times the speed of PyTorch's
strided copy; elsewhere PyTorch's copy and add give the same numbers.
"""
from typing import Optional

import torch

from .cpu_extension import load_cpu_extension
from .sliding_window_op import selected_backend


def transpose_add_(out: torch.Tensor, src: torch.Tensor, addend: Optional[torch.Tensor] = None,
                   scale: float = 1.0) -> torch.Tensor:
    """``out[b, s, r] = src[b, r, s] (+ scale * addend[b, s, r])``, in place.

    Args:
        out: ``(B, S, R)``, any strides (e.g. a slice of a larger map).
        src: ``(B, R, S)``.
        addend: ``(B, S, R)`` or None.
        scale: multiplies ``addend``.

    Returns:
        ``out``.
    """
    b, r, s = src.shape
    if out.shape != (b, s, r) or (addend is not None and addend.shape != out.shape):
        raise ValueError(f'out and addend must be (B, S, R) = {(b, s, r)} for src (B, R, S), got '
                         f'{tuple(out.shape)} and '
                         f'{None if addend is None else tuple(addend.shape)}')
    operands = [out, src] + ([] if addend is None else [addend])
    if (all(t.stride(-1) == 1 and t.dtype == src.dtype and t.device == src.device
            for t in operands)
            and selected_backend(src.device, src.dtype) == 'cpp'):
        load_cpu_extension().transpose_add_(out, src, addend, float(scale))
        return out
    out.copy_(src.transpose(1, 2))
    return out if addend is None else out.add_(addend, alpha=scale)

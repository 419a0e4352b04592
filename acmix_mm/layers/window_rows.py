"""Swin's window partition and reverse of a channels-last map as row gathers.

A ``(B, H, W, G * N * d)`` map (``G`` groups of ``N`` heads of ``d`` channels: ``G = 3`` for
``qkv``, 1 for the heads' output) is a table of ``d``-element rows. Partitioning it into windows,
head-major, is a permutation of those rows; ``index_select`` with a precomputed row index copies
them in one pass, and its backward is the gather by the inverse permutation. On the CPU that is
faster than the 8-dimensional permuting copy (and its backward) that ``permute().reshape()``
makes, whose innermost contiguous run is one row.
"""
import functools
from typing import Tuple

import torch


@functools.lru_cache(maxsize=8)
def window_row_index(batch: int, height: int, width: int, window_size: int, groups: int,
                     heads: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Row permutation from map order to window order, and its inverse.

    Map order is ``(B, H, W, G, N)``; window order ``(G, B, H / ws, W / ws, N, ws, ws)``, i.e.
    for each group, window (row-major) and head, the window's positions row-major.

    Returns:
        ``index`` and ``inverse``, each ``(B * H * W * G * N,)`` int64 on ``device``:
        ``window_rows = map_rows[index]`` and ``map_rows = window_rows[inverse]``. Cached (a few
        sizes), so never modified in place.
    """
    ws = window_size
    if height % ws or width % ws:
        raise ValueError(f'height and width ({height}, {width}) must be multiples of '
                         f'window_size {ws}')
    n = batch * height * width * groups * heads
    index = torch.arange(n, device=device).view(batch, height // ws, ws, width // ws, ws, groups,
                                                heads)
    index = index.permute(5, 0, 1, 3, 6, 2, 4).reshape(-1)
    inverse = torch.empty_like(index)
    inverse[index] = torch.arange(n, device=device)
    return index, inverse


class _GatherRows(torch.autograd.Function):

    @staticmethod
    def forward(ctx, rows, index, inverse):
        ctx.save_for_backward(index, inverse)
        return rows.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        index, inverse = ctx.saved_tensors
        return _GatherRows.apply(grad.contiguous(), inverse, index), None, None


def gather_rows(rows: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``rows[index]`` where ``index`` is a permutation with inverse ``inverse``: the backward
    is one gather too (``grad[inverse]``), not the scatter-add of general indexing.

    Args:
        rows: ``(R, d)``.
        index, inverse: ``(R,)`` int64, from :func:`window_row_index` (either way round).

    Returns:
        ``(R, d)``, contiguous.
    """
    if rows.dim() != 2 or index.shape != (rows.shape[0], ) or inverse.shape != index.shape:
        raise ValueError(f'rows must be (R, d) and index, inverse (R,), got {tuple(rows.shape)}, '
                         f'{tuple(index.shape)}, {tuple(inverse.shape)}')
    if not (rows.requires_grad and torch.is_grad_enabled()):
        return rows.index_select(0, index)  # no autograd Function's overhead without a graph
    return _GatherRows.apply(rows, index, inverse)

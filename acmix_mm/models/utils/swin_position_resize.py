"""Swin's position tensors from a checkpoint of another window size or image size, resized as
mmdet's ``SwinTransformer.init_weights`` resizes them.

mmdet interpolates each ``relative_position_bias_table`` of ``(2w - 1)**2`` rows bicubically on
its ``(2w - 1) x (2w - 1)`` grid, per head. The same is done here for the tables and for the
absolute position embedding (a ``(1, rows * cols, C)`` grid of patches), with mmpretrain's
``resize_pos_embed`` (bicubic, ``align_corners=False``, the same ``F.interpolate`` call).
"""
import math
from typing import Dict, Optional, Tuple

import torch
from mmengine.logging import print_log
from mmpretrain.models.utils import resize_pos_embed
from torch import nn

StateDict = Dict[str, torch.Tensor]


def _square_side(length: int) -> Optional[int]:
    side = math.isqrt(length)
    return side if side * side == length else None


def resize_swin_position_tensors(model: nn.Module, state: StateDict,
                                 pos_grid: Optional[Tuple[int, int]] = None,
                                 source: str = 'checkpoint') -> StateDict:
    """Returns ``state`` with its Swin position tensors resized to ``model``'s shapes.

    Args:
        model: the Swin backbone to be filled.
        state: checkpoint tensors under the model's names. ``*relative_position_bias_table``
            ``(L1, heads)`` with ``L1`` a square; ``absolute_pos_embed`` ``(1, L1, C)`` (a square
            grid) or ``(1, C, H1, W1)``.
        pos_grid: ``(rows, cols)`` of the model's ``absolute_pos_embed`` ``(1, rows * cols, C)``.
        source: the checkpoint's name, for the log.

    Tensors that cannot be resized (another number of heads or channels) are left as they are:
    the loader reports them as shape mismatches that start from scratch.
    """
    own = model.state_dict()
    out = dict(state)
    resized = []
    for key, table in state.items():
        if not key.endswith('relative_position_bias_table') or key not in own:
            continue
        current = own[key]
        if table.shape == current.shape or table.dim() != 2 or current.dim() != 2:
            continue
        side, new_side = _square_side(table.shape[0]), _square_side(current.shape[0])
        if table.shape[1] != current.shape[1] or side is None or new_side is None:
            continue
        out[key] = resize_pos_embed(table[None], (side, side), (new_side, new_side),
                                    mode='bicubic', num_extra_tokens=0)[0].to(table.dtype)
        resized.append(f'{key} {tuple(table.shape)} -> {tuple(current.shape)}')
    key = 'absolute_pos_embed'
    if key in state and key in own and pos_grid is not None:
        pos, current = state[key], own[key]
        if pos.dim() == 4:  # (1, C, H, W)
            src: Optional[Tuple[int, int]] = (pos.shape[2], pos.shape[3])
            pos = pos.flatten(2).transpose(1, 2)
        else:
            side = _square_side(pos.shape[1]) if pos.dim() == 3 else None
            src = (side, side) if side else None
        if src is not None and pos.shape[0] == 1 and pos.shape[2] == current.shape[2] and (
                pos.shape != current.shape):
            out[key] = resize_pos_embed(pos, src, tuple(pos_grid), mode='bicubic',
                                        num_extra_tokens=0).to(pos.dtype)
            resized.append(f'{key} {tuple(state[key].shape)} -> {tuple(current.shape)}')
        elif pos.shape == current.shape:
            out[key] = pos
    if resized:
        print_log(f'{type(model).__name__} from {source}: resized (bicubic, as mmdet\'s Swin) '
                  + ', '.join(resized), logger='current')
    return out

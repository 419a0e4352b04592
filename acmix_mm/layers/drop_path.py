"""Stochastic depth ("drop path") as one product with a per-sample scale."""
import torch
from torch import nn


def drop_path(x: torch.Tensor, drop_prob: float = 0., training: bool = False) -> torch.Tensor:
    """Zeroes each sample of ``x`` with probability ``drop_prob`` and scales the others by
    ``1 / (1 - drop_prob)``, drawing the same random numbers as timm's and mmcv's ``drop_path``
    (one ``torch.rand`` of ``(B, 1, ..., 1)``).

    Theirs computes ``x / keep_prob * mask``: two passes over ``x`` forward and two backward.
    Here the per-sample factor ``mask / keep_prob`` is made first, so each direction is one pass;
    the result differs from theirs by at most one rounding of ``x * (1 / keep_prob)``.

    Args:
        x: ``(B, ...)``.
        drop_prob: in ``[0, 1)``.
        training: without it (or with ``drop_prob == 0``), ``x`` itself is returned.

    Returns:
        ``(B, ...)``.
    """
    if drop_prob == 0. or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0], ) + (1, ) * (x.ndim - 1)
    scale = (keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_()
    return x * scale.div_(keep_prob)


class DropPath(nn.Module):
    """:func:`drop_path` as a module (the interface of timm's and mmcv's ``DropPath``).

    Args:
        drop_prob: probability that a sample's path is zeroed while training.
    """

    def __init__(self, drop_prob: float = 0.1) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'

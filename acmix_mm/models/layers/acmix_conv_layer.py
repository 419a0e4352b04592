"""ACmix as an mmcv conv layer type, so ``build_conv_layer(dict(type='ACmix'), ...)`` works.

mmdet's and mmseg's ResNet/ResNeXt build their 3x3 convs with ``build_conv_layer(dcn, ...)``, so
``dcn=dict(type='ACmix'), stage_with_dcn=(...)`` swaps ACmix into them.
"""
from typing import Optional, Union

from mmengine.registry import MODELS

from ...layers import ACmix
from ...layers._validation import ArgumentTypeError, check_odd_kernel, check_positive_int


@MODELS.register_module('ACmix')
class ACmixConv2d(ACmix):
    """:class:`~acmix_mm.layers.ACmix` behind the constructor of ``nn.Conv2d``.

    Args:
        in_channels, out_channels, stride, dilation: as for ``nn.Conv2d``.
        kernel_size: kernel of the replaced conv; the default ``kernel_conv``.
        padding: must be ``'same'``-like (``dilation * (kernel_size // 2)``) or None: ACmix always
            gives ``ceil(H / stride) x ceil(W / stride)``.
        groups: must be 1.
        bias: accepted for the conv interface; ACmix's projections carry the biases of the
            reference layout whatever its value.
        heads, kernel_att, kernel_conv: ACmix settings (``kernel_conv`` defaults to
            ``kernel_size``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Union[int, tuple] = 3,
                 stride: Union[int, tuple] = 1, padding: Union[int, tuple, str, None] = None,
                 dilation: Union[int, tuple] = 1, groups: int = 1, bias: Union[bool, str] = False,
                 heads: int = 4, kernel_att: int = 7, kernel_conv: Optional[int] = None) -> None:
        kernel_size, stride, dilation = (_square(n, v) for n, v in (
            ('kernel_size', kernel_size), ('stride', stride), ('dilation', dilation)))
        check_odd_kernel('kernel_size', kernel_size)
        check_positive_int('stride', stride)
        check_positive_int('dilation', dilation)
        if groups != 1 or isinstance(groups, bool):
            raise ValueError(f'ACmix supports `groups=1` only, got groups={groups!r}')
        if not isinstance(bias, bool) and bias != 'auto':
            raise ArgumentTypeError(f"`bias` must be True, False or 'auto', got {bias!r}")
        same = dilation * (kernel_size // 2)
        if padding not in (None, 'same', same, (same, same)) or isinstance(padding, bool):
            raise ValueError(f'ACmix keeps the spatial size (ceil(H / stride)); `padding` must be '
                             f'None, "same" or {same} for kernel_size={kernel_size} and '
                             f'dilation={dilation}, got {padding!r}')
        super().__init__(in_channels, out_channels, kernel_att=kernel_att, heads=heads,
                         kernel_conv=kernel_size if kernel_conv is None else kernel_conv,
                         stride=stride, dilation=dilation)


def _square(name: str, value: Union[int, tuple]) -> int:
    """``k`` or ``(k, k)`` -> ``k``; anything else (non-square, wrong length) a ValueError."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f'ACmix supports square `{name}` only (an int k or a pair (k, k)), '
                             f'got {value!r}')
        value = value[0]
    return value

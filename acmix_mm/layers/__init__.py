"""Plain-PyTorch ACmix building blocks; importing them needs no OpenMMLab package."""
from .acmix import ACmix, position_grid
from .conv_path import (build_dep_conv, build_fc, conv_path, conv_path_channels_last, shift_init_,
                        shift_kernels)
from .cyclic_shift import pad_and_roll, roll_and_crop
from .drop_path import DropPath, drop_path
from .sliding_window_attention import reflect_indices, reflect_pad2d, sliding_window_attention
from .tuned_linear import TunedLinear
from .window_attention import window_attention

__all__ = [
    'ACmix', 'position_grid', 'build_dep_conv', 'build_fc', 'conv_path', 'conv_path_channels_last',
    'shift_init_', 'shift_kernels', 'pad_and_roll', 'roll_and_crop', 'DropPath', 'drop_path',
    'reflect_indices', 'reflect_pad2d', 'sliding_window_attention', 'TunedLinear',
    'window_attention'
]

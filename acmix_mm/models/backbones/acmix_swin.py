"""ACmix-Swin: mmdet's Swin Transformer with ACmix in every (shifted) window attention."""
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from mmcv.cnn.bricks.drop import DropPath as MMCVDropPath
from mmcv.cnn.bricks.wrappers import Linear as MMCVLinear
from mmdet.models.backbones.swin import SwinTransformer
from mmdet.models.layers.transformer import PatchMerging
from torch import nn

from ...layers import DropPath, TunedLinear
from ...layers._validation import (check_bool, check_dict, check_heads, check_indices,
                                   check_input, check_int, check_int_sequence, check_number,
                                   check_odd_kernel, check_positive_int)
from ...registry import register_in_frameworks
from ..layers import ACmixShiftWindowMSA, OneCopyPatchMerging
from .train_returns_self import TrainReturnsSelfMixin
from ..utils import acmix_swin_converter, extract_state_dict, load_matching_weights, read_checkpoint
from ..utils.pretrained import strip_backbone_prefix
from ..utils.config_checks import check_act_cfg, check_init_cfg, check_norm_cfg
from ..utils.swin_position_resize import resize_swin_position_tensors

ACMIX_SWIN_DEFAULTS = dict(kernel_conv=3, fc_bias=True)


def replace_modules(module: nn.Module, types: Tuple[type, ...],
                    make: Callable[[nn.Module], nn.Module]) -> None:
    """Replaces every submodule of ``module`` whose type is exactly one of ``types`` by
    ``make(submodule)``."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in types:
                setattr(parent, name, make(child))


def one_pass_drop_path(drop: MMCVDropPath) -> DropPath:
    """A :class:`~acmix_mm.layers.DropPath` in place of mmcv's: the same ``drop_prob`` and random
    draws, one pass over the tokens instead of two in each direction."""
    return DropPath(drop.drop_prob).train(drop.training)


@register_in_frameworks
class ACmixSwinTransformer(TrainReturnsSelfMixin, SwinTransformer):
    """ACmix-Swin backbone (Pan et al., CVPR 2022) for mmdet, mmseg and mmpretrain.

    Takes every argument of mmdet's ``SwinTransformer`` (which covers mmseg's): ``pretrain_img_size,
    embed_dims, patch_size, window_size, mlp_ratio, depths, num_heads, strides, out_indices,
    qkv_bias, qk_scale, patch_norm, drop_rate, attn_drop_rate, drop_path_rate, use_abs_pos_embed,
    act_cfg, norm_cfg, with_cp, pretrained, convert_weights, frozen_stages, init_cfg``.

    Args:
        acmix_cfg: settings of the convolution path, ``kernel_conv`` (3) and ``fc_bias`` (True).
        convert_weights: with ``init_cfg=dict(type='Pretrained', checkpoint=...)``, read a
            checkpoint of the reference ACmix-Swin code (released ImageNet-1k weights).

    Shape:
        ``(B, 3, H, W)`` -> one ``(B, embed_dims * 2**i, ceil(H / 2**(i+2)), ...)`` map per out
        index, each through its own output norm ``norm{i}``.

    Raises:
        ValueError / TypeError: at construction, for any argument of the wrong type or range
            or lengths that disagree (see :meth:`check_arguments`), naming the argument.

    The feed-forward layers are :class:`~acmix_mm.layers.TunedLinear` (the same parameters and
    state-dict keys as mmcv's ``Linear``; on the CPU the faster of two matrix products), as the
    attention's ``qkv`` and ``proj`` products are; the blocks' stochastic depth is
    :class:`~acmix_mm.layers.DropPath` (mmcv's, in one pass) and the patch merging
    :class:`~acmix_mm.models.layers.OneCopyPatchMerging` (mmdet's, in one copy).

    A ``Pretrained`` checkpoint of another ``window_size`` or ``pretrain_img_size`` loads with its
    relative position tables and absolute position embedding resized bicubically, as mmdet does.
    """

    def __init__(self, acmix_cfg: Optional[dict] = None,
                 pretrain_img_size: Union[int, Sequence[int]] = 224, in_channels: int = 3,
                 embed_dims: int = 96, patch_size: int = 4, window_size: int = 7,
                 mlp_ratio: int = 4, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), strides: Sequence[int] = (4, 2, 2, 2),
                 out_indices: Sequence[int] = (0, 1, 2, 3), qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, patch_norm: bool = True, drop_rate: float = 0.,
                 attn_drop_rate: float = 0., drop_path_rate: float = 0.1,
                 use_abs_pos_embed: bool = False, act_cfg: dict = dict(type='GELU'),
                 norm_cfg: dict = dict(type='LN'), with_cp: bool = False,
                 pretrained: Optional[str] = None, convert_weights: bool = False,
                 frozen_stages: int = -1, init_cfg: Optional[dict] = None) -> None:
        args = {k: v for k, v in locals().items() if k not in ('self', '__class__')}
        self.acmix_cfg = self.check_arguments(**args)
        del args['acmix_cfg']
        if isinstance(pretrain_img_size, (list, tuple)):
            args['pretrain_img_size'] = tuple(pretrain_img_size)
        super().__init__(**args)
        self.in_channels = in_channels
        size = tuple(pretrain_img_size) if isinstance(pretrain_img_size, (list, tuple)) else (
            pretrain_img_size, )
        self.pos_grid = (size[0] // patch_size, size[-1] // patch_size)
        for stage in self.stages:
            for block in stage.blocks:
                block.attn = ACmixShiftWindowMSA.from_shift_window_msa(block.attn,
                                                                       **self.acmix_cfg)
                replace_modules(block.ffn, (nn.Linear, MMCVLinear), TunedLinear.from_linear)
                replace_modules(block, (MMCVDropPath, ), one_pass_drop_path)
        replace_modules(self.stages, (PatchMerging, ), OneCopyPatchMerging.from_patch_merging)

    @classmethod
    def check_arguments(cls, acmix_cfg, pretrain_img_size, in_channels, embed_dims, patch_size,
                        window_size, mlp_ratio, depths, num_heads, strides, out_indices,
                        qkv_bias, qk_scale, patch_norm, drop_rate, attn_drop_rate,
                        drop_path_rate, use_abs_pos_embed, act_cfg, norm_cfg, with_cp,
                        pretrained, convert_weights, frozen_stages, init_cfg) -> dict:
        """Checks every constructor argument before anything is built.

        Returns:
            ``acmix_cfg`` with its defaults filled in.

        Raises:
            ValueError / TypeError: naming the first wrong argument, its value and what is
                accepted.
        """
        acmix_cfg = {**ACMIX_SWIN_DEFAULTS,
                     **check_dict('acmix_cfg', acmix_cfg, ACMIX_SWIN_DEFAULTS)}
        check_odd_kernel('acmix_cfg.kernel_conv', acmix_cfg['kernel_conv'])
        check_bool('acmix_cfg.fc_bias', acmix_cfg['fc_bias'])
        for name in ('in_channels', 'embed_dims', 'patch_size', 'window_size'):
            check_positive_int(name, locals()[name])
        size = (pretrain_img_size, ) if not isinstance(pretrain_img_size, (list, tuple)) \
            else pretrain_img_size
        if not 1 <= len(size) <= 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= patch_size for v in size):
            raise ValueError(f'`pretrain_img_size` must be an int or a pair of ints >= '
                             f'patch_size ({patch_size}), got {pretrain_img_size!r}')
        check_positive_int('mlp_ratio', mlp_ratio)  # Linear(C, mlp_ratio * C) needs an int
        depths = check_int_sequence('depths', depths, minimum=1)
        if not depths:
            raise ValueError('`depths` must be a non-empty list or tuple of ints >= 1 (blocks per '
                             'stage), got ()')
        stages = f'stage (len(depths) is {len(depths)})'
        check_int_sequence('num_heads', num_heads, len(depths), minimum=1, length_of=stages)
        for i, heads in enumerate(num_heads):
            check_heads(f'embed_dims * 2**{i}', embed_dims * 2**i, heads,
                        heads_name=f'num_heads[{i}]')
        check_int_sequence('strides', strides, len(depths), minimum=1, length_of=stages)
        if strides[0] != patch_size:
            raise ValueError(f'`strides[0]` must equal `patch_size` ({patch_size}: '
                             f'non-overlapping patch embedding), got strides={strides!r}')
        check_indices('out_indices', out_indices, len(depths), 'len(depths)')
        for name in ('qkv_bias', 'patch_norm', 'use_abs_pos_embed', 'with_cp',
                     'convert_weights'):
            check_bool(name, locals()[name])
        if qk_scale is not None:
            check_number('qk_scale', qk_scale, 0, min_inclusive=False)
        for name in ('drop_rate', 'attn_drop_rate', 'drop_path_rate'):
            check_number(name, locals()[name], 0, 1)
        check_act_cfg('act_cfg', act_cfg)
        widths = [embed_dims * 2**i * f for i in range(len(depths)) for f in (1, 4)]
        check_norm_cfg('norm_cfg', norm_cfg, widths)
        check_init_cfg(init_cfg, pretrained)
        if isinstance(init_cfg, list):
            raise ValueError(f'`init_cfg` of {cls.__name__} must be None or one dict (as for '
                             f"mmdet's SwinTransformer), got a list: {init_cfg!r}")
        check_int('frozen_stages', frozen_stages, minimum=-1, maximum=len(depths))
        return acmix_cfg

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """A tuple like every other backbone (mmdet's Swin returns a list, which mmpretrain's
        necks refuse).

        Args:
            x: ``(B, in_channels, H, W)``, floating point, ``B >= 1``; with
                ``use_abs_pos_embed``, ``H x W`` must give the patch grid of
                ``pretrain_img_size``.
        """
        check_input(type(self).__name__, x, self.in_channels)
        if self.use_abs_pos_embed:
            patch = self.patch_embed.projection.stride[0]
            grid = (-(-x.shape[2] // patch)) * (-(-x.shape[3] // patch))
            if grid != self.absolute_pos_embed.shape[1]:
                raise ValueError(
                    f'with use_abs_pos_embed=True, {type(self).__name__} expects inputs that give '
                    f'{self.absolute_pos_embed.shape[1]} patches (the pretrain_img_size grid), '
                    f'got {tuple(x.shape)}: {grid} patches')
        return tuple(super().forward(x))

    def init_weights(self) -> None:
        cfg = self.init_cfg
        if not (isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'):
            super().init_weights()
            for m in self.modules():
                if isinstance(m, ACmixShiftWindowMSA):
                    m.w_msa.init_weights()
            return
        state = extract_state_dict(read_checkpoint(cfg['checkpoint']), cfg.get('prefix'),
                                   source=f"checkpoint {cfg['checkpoint']!r}")
        if self.convert_weights:
            state = acmix_swin_converter(state)
        state = strip_backbone_prefix(self, state)
        state = resize_swin_position_tensors(self, state, self.pos_grid, cfg['checkpoint'])
        load_matching_weights(self, state, source=cfg['checkpoint'])

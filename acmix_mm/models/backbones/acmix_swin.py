"""ACmix-Swin: mmdet's Swin Transformer with ACmix in every (shifted) window attention."""
from typing import Optional, Tuple

import torch

from mmdet.models.backbones.swin import SwinTransformer

from ...registry import register_in_frameworks
from ..layers import ACmixShiftWindowMSA
from .train_returns_self import TrainReturnsSelfMixin
from ..utils import acmix_swin_converter, extract_state_dict, load_matching_weights, read_checkpoint

ACMIX_SWIN_DEFAULTS = dict(kernel_conv=3, fc_bias=True)


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
    """

    def __init__(self, acmix_cfg: Optional[dict] = None, **kwargs) -> None:
        acmix_cfg = dict(acmix_cfg or {})
        unknown = set(acmix_cfg) - set(ACMIX_SWIN_DEFAULTS)
        if unknown:
            raise ValueError(f'unknown `acmix_cfg` keys {sorted(unknown)}; accepted keys: '
                             f'{sorted(ACMIX_SWIN_DEFAULTS)}')
        if not isinstance(acmix_cfg.get('fc_bias', True), bool):
            raise ValueError(f'`acmix_cfg.fc_bias` must be True or False, got '
                             f'{acmix_cfg["fc_bias"]!r}')
        self.acmix_cfg = {**ACMIX_SWIN_DEFAULTS, **acmix_cfg}
        super().__init__(**kwargs)
        for stage in self.stages:
            for block in stage.blocks:
                block.attn = ACmixShiftWindowMSA.from_shift_window_msa(block.attn,
                                                                       **self.acmix_cfg)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """A tuple like every other backbone (mmdet's Swin returns a list, which mmpretrain's
        necks refuse)."""
        return tuple(super().forward(x))

    def init_weights(self) -> None:
        cfg = self.init_cfg
        if not (isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'):
            super().init_weights()
            for m in self.modules():
                if isinstance(m, ACmixShiftWindowMSA):
                    m.w_msa.init_weights()
            return
        state = extract_state_dict(read_checkpoint(cfg['checkpoint']), cfg.get('prefix'))
        if self.convert_weights:
            state = acmix_swin_converter(state)
        load_matching_weights(self, state, source=cfg['checkpoint'])

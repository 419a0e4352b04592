"""ACmix-ResNet: every bottleneck's 3x3 conv replaced by ACmix.

Built on mmseg's ResNet, whose constructor is a superset of mmdet's (``contract_dilation``,
``multi_grid``), through its ``dcn`` switch: each ``Bottleneck.conv2`` is built with
``build_conv_layer(dict(type='ACmix', ...))``. Parameter names therefore match both torchvision's
ResNet and the reference ACmix code (``layer1.0.conv2.conv1.weight``, ...).
"""
import copy
from typing import Optional


from mmseg.models.backbones.resnet import Bottleneck, ResNet

from ...layers import ACmix
from ...registry import register_in_frameworks
from .train_returns_self import TrainReturnsSelfMixin
from ..utils import (acmix_resnet_converter, extract_state_dict, load_matching_weights,
                     read_checkpoint)

ACMIX_DEFAULTS = dict(heads=4, kernel_att=7, kernel_conv=3)


@register_in_frameworks
class ACmixResNet(TrainReturnsSelfMixin, ResNet):
    """ACmix-ResNet backbone (Pan et al., CVPR 2022) for mmdet, mmseg and mmpretrain.

    Takes every argument of mmdet's/mmseg's ``ResNet`` (``depth, num_stages, strides, dilations,
    out_indices, style, deep_stem, avg_down, frozen_stages, norm_cfg, norm_eval, with_cp,
    zero_init_residual, contract_dilation, multi_grid, plugins, pretrained, init_cfg``, ...).

    Args:
        depth: 26 ``(1, 2, 4, 1)``, 38 ``(2, 3, 5, 2)``, 50, 101 or 152 bottleneck stages.
        acmix_cfg: ``heads`` (4), ``kernel_att`` (7), ``kernel_conv`` (3).
        init_cfg: ``dict(type='Pretrained', checkpoint=...)`` loads a reference ACmix-ResNet
            checkpoint, or a standard ImageNet ResNet one (torchvision / mmpretrain names) into
            every layer of the same name and shape; what starts from scratch is logged.

    Shape:
        ``(B, 3, H, W)`` -> one ``(B, 256 * 2**i, ceil(H / 2**(i+2)), ...)`` map per out index.
    """

    arch_settings = {
        26: (Bottleneck, (1, 2, 4, 1)),
        38: (Bottleneck, (2, 3, 5, 2)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3)),
    }

    def __init__(self, depth: int, acmix_cfg: Optional[dict] = None, num_stages: int = 4,
                 dcn: Optional[dict] = None, stage_with_dcn=None, **kwargs) -> None:
        if depth not in self.arch_settings:
            raise ValueError(f'`depth` of ACmixResNet must be one of '
                             f'{sorted(self.arch_settings)}, got {depth!r}')
        if dcn is not None or stage_with_dcn is not None:
            raise ValueError('ACmixResNet replaces every 3x3 conv with ACmix; `dcn` and '
                             '`stage_with_dcn` must be left unset')
        acmix_cfg = dict(acmix_cfg or {})
        unknown = set(acmix_cfg) - set(ACMIX_DEFAULTS)
        if unknown:
            raise ValueError(f'unknown `acmix_cfg` keys {sorted(unknown)}; accepted keys: '
                             f'{sorted(ACMIX_DEFAULTS)}')
        self.acmix_cfg = {**ACMIX_DEFAULTS, **acmix_cfg}
        if not isinstance(num_stages, int) or not 1 <= num_stages <= 4:
            raise ValueError(f'`num_stages` must be 1, 2, 3 or 4, got {num_stages!r}')
        super().__init__(depth, num_stages=num_stages, dcn=dict(type='ACmix', **self.acmix_cfg),
                         stage_with_dcn=(True, ) * num_stages, **kwargs)

    def init_weights(self) -> None:
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        pretrained = [c for c in cfgs if c and c.get('type') == 'Pretrained']
        if not pretrained:
            return super().init_weights()
        original = copy.deepcopy(self.init_cfg)
        # Layers that the checkpoint lacks start from the usual ResNet initialisation.
        self.init_cfg = [c for c in cfgs if c and c.get('type') != 'Pretrained'] or [
            dict(type='Kaiming', layer='Conv2d'),
            dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
        ]
        super().init_weights()
        self.init_cfg = original
        cfg = pretrained[-1]
        state = extract_state_dict(read_checkpoint(cfg['checkpoint']), cfg.get('prefix'))
        acmix_modules = [n + '.' for n, m in self.named_modules() if isinstance(m, ACmix)]

        def owner_of(key: str) -> str:
            return next((n[:-1] + ' (ACmix)' for n in acmix_modules if key.startswith(n)),
                        key.rsplit('.', 1)[0])

        load_matching_weights(self, acmix_resnet_converter(state), source=cfg['checkpoint'],
                              owner_of=owner_of)


@register_in_frameworks
class ACmixResNetV1c(ACmixResNet):
    """ACmixResNet with the deep 3x3 stem of ResNetV1c (mmseg's usual backbone)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(deep_stem=True, avg_down=False, **kwargs)

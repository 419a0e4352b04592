"""ACmix-ResNet: every bottleneck's 3x3 conv replaced by ACmix.

Built on mmseg's ResNet, whose constructor is a superset of mmdet's (``contract_dilation``,
``multi_grid``), through its ``dcn`` switch: each ``Bottleneck.conv2`` is built with
``build_conv_layer(dict(type='ACmix', ...))``. Parameter names therefore match both torchvision's
ResNet and the reference ACmix code (``layer1.0.conv2.conv1.weight``, ...).
"""
import copy
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmseg.models.backbones.resnet import Bottleneck, ResNet

from ...layers import ACmix
from ...layers._validation import (check_bool, check_choice, check_dict, check_heads,
                                   check_indices, check_input, check_int, check_int_sequence,
                                   check_odd_kernel, check_positive_int)
from ...registry import register_in_frameworks
from .train_returns_self import TrainReturnsSelfMixin
from ..utils import (acmix_resnet_converter, extract_state_dict, load_matching_weights,
                     read_checkpoint)
from ..utils.config_checks import check_init_cfg, check_norm_cfg, check_plugins

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
        stem_channels: as mmseg's (64); None means ``base_channels``, as in mmdet.
        Others: as mmseg's ``ResNet``; ``conv_cfg``, ``dcn`` and ``stage_with_dcn`` must be None.

    Shape:
        ``(B, in_channels, H, W)`` -> one ``(B, 256 * 2**i, ceil(H / 2**(i+2)), ...)`` map per
        out index.

    Raises:
        ValueError / TypeError: at construction, for any argument of the wrong type or range
            or lengths that disagree (see :meth:`check_arguments`), naming the argument.
    """

    arch_settings = {
        26: (Bottleneck, (1, 2, 4, 1)),
        38: (Bottleneck, (2, 3, 5, 2)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3)),
    }

    def __init__(self, depth: int, acmix_cfg: Optional[dict] = None, in_channels: int = 3,
                 stem_channels: Optional[int] = 64, base_channels: int = 64,
                 num_stages: int = 4, strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Sequence[int] = (0, 1, 2, 3), style: str = 'pytorch',
                 deep_stem: bool = False, avg_down: bool = False, frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True), norm_eval: bool = False,
                 dcn: Optional[dict] = None, stage_with_dcn: Optional[Sequence[bool]] = None,
                 plugins: Optional[List[dict]] = None, multi_grid: Optional[Sequence[int]] = None,
                 contract_dilation: bool = False, with_cp: bool = False,
                 zero_init_residual: bool = True, pretrained: Optional[str] = None,
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        stem_channels = base_channels if stem_channels is None else stem_channels  # mmdet's None
        self.acmix_cfg = self.check_arguments(**{k: v for k, v in locals().items()
                                                 if k not in ('self', '__class__')})
        super().__init__(depth, in_channels=in_channels, stem_channels=stem_channels,
                         base_channels=base_channels, num_stages=num_stages,
                         strides=tuple(strides), dilations=tuple(dilations),
                         out_indices=tuple(out_indices), style=style, deep_stem=deep_stem,
                         avg_down=avg_down, frozen_stages=frozen_stages, conv_cfg=conv_cfg,
                         norm_cfg=norm_cfg, norm_eval=norm_eval,
                         dcn=dict(type='ACmix', **self.acmix_cfg),
                         stage_with_dcn=(True, ) * num_stages, plugins=plugins,
                         multi_grid=multi_grid, contract_dilation=contract_dilation,
                         with_cp=with_cp, zero_init_residual=zero_init_residual,
                         pretrained=pretrained, init_cfg=init_cfg)
        self.in_channels = in_channels

    @classmethod
    def check_arguments(cls, depth, acmix_cfg, in_channels, stem_channels, base_channels,
                        num_stages, strides, dilations, out_indices, style, deep_stem, avg_down,
                        frozen_stages, conv_cfg, norm_cfg, norm_eval, dcn, stage_with_dcn,
                        plugins, multi_grid, contract_dilation, with_cp, zero_init_residual,
                        pretrained, init_cfg) -> dict:
        """Checks every constructor argument before anything is built.

        Returns:
            ``acmix_cfg`` with its defaults filled in.

        Raises:
            ValueError / TypeError: naming the first wrong argument, its value and what is
                accepted.
        """
        if isinstance(depth, bool) or depth not in cls.arch_settings:
            raise ValueError(f'`depth` of {cls.__name__} must be one of '
                             f'{sorted(cls.arch_settings)}, got {depth!r}')
        acmix_cfg = {**ACMIX_DEFAULTS, **check_dict('acmix_cfg', acmix_cfg, ACMIX_DEFAULTS)}
        check_odd_kernel('acmix_cfg.kernel_att', acmix_cfg['kernel_att'])
        check_odd_kernel('acmix_cfg.kernel_conv', acmix_cfg['kernel_conv'])
        if dcn is not None or stage_with_dcn is not None:
            raise ValueError(f'{cls.__name__} replaces every 3x3 conv with ACmix; `dcn` and '
                             f'`stage_with_dcn` must be left unset, got dcn={dcn!r}, '
                             f'stage_with_dcn={stage_with_dcn!r}')
        check_positive_int('in_channels', in_channels)
        check_positive_int('base_channels', base_channels)
        check_int('stem_channels', stem_channels, minimum=2 if deep_stem is True else 1)
        check_int('num_stages', num_stages, minimum=1, maximum=4)
        for i in range(num_stages):  # every ACmix has base_channels * 2**i output channels
            check_heads(f'base_channels * 2**{i}', base_channels * 2**i, acmix_cfg['heads'],
                        heads_name='acmix_cfg.heads')
        stages = f'num_stages ({num_stages})'
        check_int_sequence('strides', strides, num_stages, minimum=1, length_of=stages)
        check_int_sequence('dilations', dilations, num_stages, minimum=1, length_of=stages)
        check_indices('out_indices', out_indices, num_stages, 'num_stages')
        check_choice('style', style, ('pytorch', 'caffe'))
        for name, flag in (('deep_stem', deep_stem), ('avg_down', avg_down),
                           ('norm_eval', norm_eval), ('contract_dilation', contract_dilation),
                           ('with_cp', with_cp), ('zero_init_residual', zero_init_residual)):
            check_bool(name, flag)
        check_int('frozen_stages', frozen_stages, minimum=-1, maximum=num_stages)
        if conv_cfg is not None:
            raise ValueError(f'`conv_cfg` must be None for {cls.__name__} (its 3x3 convs are '
                             f'ACmix and the others plain Conv2d), got {conv_cfg!r}')
        widths = [base_channels * 2**i * f for i in range(num_stages) for f in (1, 4)]
        stem = [stem_channels // 2, stem_channels] if deep_stem else [stem_channels]
        check_norm_cfg('norm_cfg', norm_cfg, stem + widths)
        check_plugins(plugins, num_stages)
        last_blocks = cls.arch_settings[depth][1][num_stages - 1]
        if multi_grid is not None:
            check_int_sequence('multi_grid', multi_grid, last_blocks, minimum=1,
                               length_of=f'block of the last stage (depth {depth})')
        check_init_cfg(init_cfg, pretrained)
        return acmix_cfg

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``(B, in_channels, H, W)``, floating point, ``B >= 1`` -> one map per out index."""
        check_input(type(self).__name__, x, self.in_channels)
        return super().forward(x)

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
        state = extract_state_dict(read_checkpoint(cfg['checkpoint']), cfg.get('prefix'),
                                   source=f"checkpoint {cfg['checkpoint']!r}")
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
        fixed = sorted(set(kwargs) & {'deep_stem', 'avg_down'})
        if fixed:
            raise ValueError(f'ACmixResNetV1c sets deep_stem=True and avg_down=False; leave '
                             f'{", ".join(f"`{k}`" for k in fixed)} unset (or use ACmixResNet), '
                             f'got {", ".join(f"{k}={kwargs[k]!r}" for k in fixed)}')
        super().__init__(deep_stem=True, avg_down=False, **kwargs)

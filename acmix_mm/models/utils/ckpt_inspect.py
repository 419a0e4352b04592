"""What an ACmix checkpoint holds: its layout and the architecture its tensors' shapes match.

Reads shapes only (no model is built). Two layouts are recognised: the reference code's
(LeapLabTHU/ACmix: ``layers.*`` / ``layer*`` keys, ``head`` or ``fc`` classifier) and this
package's (``backbone.stages.*`` / ``backbone.layer*``, ``head.fc``; what
``tools/model_converters/acmix2mm.py`` writes), with or without the ``backbone.`` prefix.
"""
import math
import re
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch

from .ckpt_convert import StateDict


class Release(NamedTuple):
    """A checkpoint the ACmix authors publish (their repository's README, "Pretrained Models")."""
    name: str
    top1: float  # ImageNet-1k, the paper's
    links: Tuple[str, ...]
    expected_path: str  # where this package's configs look for it
    configs: Tuple[str, ...]


RELEASES = {
    'ACmix-Swin-T': Release(
        'ACmix-Swin-T', 81.9,
        ('https://cloud.tsinghua.edu.cn/f/210c89a6f9eb4bd0beb6/',
         'https://drive.google.com/file/d/1qJnYhtQ65rWd0zUuV9eZQW5Wxj-TiiSg/view?usp=sharing'),
        'checkpoints/acmix_swin_tiny_patch4_window7_224.pth',
        ('configs/_base_/acmix-swin-t.py (mmdet / mmseg ACmix-Swin-T configs)',
         'configs/mmpretrain/acmix-swin-tiny_16xb64_in1k.py (load_from, after conversion)')),
    'ACmix-Swin-S': Release(
        'ACmix-Swin-S', 83.5,
        ('https://cloud.tsinghua.edu.cn/f/8bed555e75c840f8a00d/',
         'https://drive.google.com/file/d/12PhN5YOEtWAgO8eSLhopfCVZ7JozMf9T/view?usp=sharing'),
        'checkpoints/acmix_swin_small_patch4_window7_224.pth',
        ('configs/mmdet/mask-rcnn_acmix-swin-s-p4-w7_fpn_*_coco.py',
         'configs/mmseg/upernet_acmix-swin-s_8xb2-160k_ade20k-512x512.py',
         'configs/mmpretrain/acmix-swin-small_16xb64_in1k.py (load_from, after conversion)')),
}
SWIN_SIZES = {(96, (2, 2, 6, 2)): 'ACmix-Swin-T', (96, (2, 2, 18, 2)): 'ACmix-Swin-S',
              (128, (2, 2, 18, 2)): 'ACmix-Swin-B'}
RESNET_DEPTHS = {(1, 2, 4, 1): 26, (2, 3, 5, 2): 38, (3, 4, 6, 3): 50, (3, 4, 23, 3): 101,
                 (3, 8, 36, 3): 152}


class Architecture(NamedTuple):
    """What :func:`match_architecture` found."""
    layout: str  # 'reference' or 'acmix_mm'
    variant: str  # 'swin' or 'resnet'
    name: str  # e.g. 'ACmix-Swin-T', 'ACmix-ResNet-50', or a description of an unknown size
    settings: Dict[str, object]  # the backbone arguments read from the shapes
    num_classes: Optional[int]  # None: no classifier head in the file


def _stage_counts(keys: List[str], pattern: str) -> Tuple[int, ...]:
    """Blocks per stage, from the keys matching ``pattern`` (groups: stage, block)."""
    blocks: Dict[int, set] = {}
    for key in keys:
        m = re.match(pattern, key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return tuple(len(blocks[s]) for s in sorted(blocks))


def _classes(state: StateDict, *names: str) -> Optional[int]:
    return next((state[n].shape[0] for n in names if n in state), None)


def match_architecture(state: StateDict) -> Architecture:
    """The layout and architecture of an ACmix state dict, from its keys and shapes.

    Raises:
        ValueError: the tensors are neither an ACmix-Swin nor an ACmix-ResNet checkpoint.
    """
    body = {k[len('backbone.'):] if k.startswith('backbone.') else k: v for k, v in state.items()}
    keys = sorted(body)
    if 'patch_embed.proj.weight' in body or 'patch_embed.projection.weight' in body:
        layout = 'reference' if 'patch_embed.proj.weight' in body else 'acmix_mm'
        stage = 'layers' if layout == 'reference' else 'stages'
        attn = 'attn' if layout == 'reference' else 'attn.w_msa'
        if not any(f'.{attn}.dep_conv.' in k for k in keys):
            raise ValueError('a Swin Transformer checkpoint without ACmix layers (no '
                             f'{stage}.*.blocks.*.{attn}.dep_conv.*): not an ACmix-Swin one')
        embed = body[f'patch_embed.{"proj" if layout == "reference" else "projection"}.weight']
        depths = _stage_counts(keys, rf'{stage}\.(\d+)\.blocks\.(\d+)\.')
        tables = [body[f'{stage}.{i}.blocks.0.{attn}.relative_position_bias_table']
                  for i in range(len(depths))]
        window = (math.isqrt(tables[0].shape[0]) + 1) // 2
        settings = dict(embed_dims=embed.shape[0], depths=depths,
                        num_heads=tuple(t.shape[1] for t in tables), window_size=window,
                        patch_size=embed.shape[-1])
        name = SWIN_SIZES.get((embed.shape[0], depths),
                              f'ACmix-Swin of an unreleased size (embed_dims {embed.shape[0]}, '
                              f'depths {depths})')
        return Architecture(layout, 'swin', name, settings,
                            _classes(state, 'head.weight', 'head.fc.weight'))
    if any(k.endswith('.conv2.conv_p.weight') for k in keys):
        layout = 'acmix_mm' if any(k.startswith(('backbone.', 'head.fc.')) for k in state) \
            else 'reference'
        stages = _stage_counts(keys, r'layer(\d+)\.(\d+)\.')
        fc = body['layer1.0.conv2.fc.weight']
        depth = RESNET_DEPTHS.get(stages)
        settings = dict(depth=depth, stage_blocks=stages, heads=fc.shape[1] // 3,
                        kernel_conv=math.isqrt(fc.shape[0]))
        name = f'ACmix-ResNet-{depth}' if depth else f'ACmix-ResNet with stage blocks {stages}'
        return Architecture(layout, 'resnet', name, settings,
                            _classes(state, 'fc.weight', 'head.fc.weight'))
    raise ValueError('not an ACmix checkpoint: expected the keys of ACmix-Swin '
                     '(patch_embed.proj.weight and layers.*.blocks.*.attn.dep_conv.*, or '
                     'their acmix_mm names) or of ACmix-ResNet (layer*.*.conv2.conv_p.weight); '
                     f'got e.g. {keys[:5]}')


def describe_checkpoint(checkpoint: dict,
                        state: StateDict) -> Tuple[List[str], Optional[Architecture]]:
    """Report lines: the entries of ``checkpoint``, the layout and architecture of its tensors
    ``state`` (see :func:`match_architecture`), what to do with it, and every key's shape; and
    the architecture (None where none matched)."""
    lines = []
    others = [f'{k} ({type(v).__name__})' for k, v in checkpoint.items()
              if not isinstance(v, (dict, torch.Tensor))]
    if others:
        lines.append('other entries: ' + ', '.join(others))
    params = sum(v.numel() for v in state.values())
    lines.append(f'tensors: {len(state)}, {params / 1e6:.2f} M values')
    try:
        arch = match_architecture(state)
    except ValueError as e:
        arch = None
        lines.append(f'architecture: none matched ({e})')
    else:
        layout = ('the reference code\'s (LeapLabTHU/ACmix)' if arch.layout == 'reference'
                  else 'acmix_mm\'s (converted)')
        settings = ', '.join(f'{k}={v}' for k, v in arch.settings.items())
        lines.append(f'layout: {layout}')
        lines.append(f'architecture: {arch.name} ({settings}); classifier: '
                     + (f'{arch.num_classes} classes' if arch.num_classes else 'none'))
        release = RELEASES.get(arch.name)
        if release:
            lines.append(f'released by the authors (ImageNet-1k top-1 {release.top1} in the '
                         f'paper); the configs expect it at {release.expected_path}: '
                         + '; '.join(release.configs))
        if arch.layout == 'reference':
            backbone = ("ACmixSwinTransformer(convert_weights=True, init_cfg=dict(type="
                        "'Pretrained', checkpoint=FILE))" if arch.variant == 'swin' else
                        "ACmixResNet(init_cfg=dict(type='Pretrained', checkpoint=FILE))")
            lines.append(f'use: as it is by {backbone}; converted by `python '
                         'tools/model_converters/acmix2mm.py FILE DST` as load_from of the '
                         'configs/mmpretrain classifier')
    lines.append('keys:')
    width = max((len(k) for k in state), default=0)
    lines += [f'  {k:<{width}}  {tuple(v.shape)}  {str(v.dtype).replace("torch.", "")}'
              for k, v in state.items()]
    return lines, arch

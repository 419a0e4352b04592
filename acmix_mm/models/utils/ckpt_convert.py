"""Key mappings from the reference ACmix code (LeapLabTHU/ACmix) to acmix_mm modules.

ResNet variant: the reference uses torchvision's names and the same ACmix submodule names, so keys
are unchanged. Its ``dep_conv`` is built with a bias that its initialisation then removes (the
parameter becomes None and is never saved), which is the same as a bias fixed at 0: the missing
``*.dep_conv.bias`` are filled with zeros. The classifier ``fc`` is left to the caller.
"""
from typing import Dict, Tuple

import torch

StateDict = Dict[str, torch.Tensor]


def fill_dep_conv_bias(state: StateDict) -> StateDict:
    """Adds a zero ``dep_conv.bias`` next to every ``dep_conv.weight`` that has none."""
    state = dict(state)
    for key, weight in list(state.items()):
        if key.endswith('dep_conv.weight'):
            bias = key[:-len('weight')] + 'bias'
            state.setdefault(bias, weight.new_zeros(weight.shape[0]))
    return state


def acmix_resnet_converter(state: StateDict) -> StateDict:
    """Reference ACmix-ResNet state dict -> :class:`ACmixResNet` state dict (backbone keys)."""
    return fill_dep_conv_bias(state)


def acmix_swin_converter(state: StateDict) -> StateDict:
    """Reference ACmix-Swin state dict -> :class:`ACmixSwinTransformer` state dict.

    mmdet's ``swin_converter`` renames the Swin keys (``layers`` -> ``stages``, ``attn.`` ->
    ``attn.w_msa.``, so also ``attn.fc/dep_conv/rate1/rate2``; ``mlp`` -> ``ffn``; patch-merging
    order) and drops the head. Here the stored buffers (``attn_mask``,
    ``relative_position_index``) are dropped, the missing ``dep_conv.bias`` filled with zeros, and
    the final ``norm`` becomes the last stage's output norm.
    """
    from mmdet.models.backbones.swin import swin_converter
    kept = {k: v for k, v in state.items()
            if not k.endswith(('attn_mask', 'relative_position_index'))}
    converted = swin_converter(fill_dep_conv_bias(kept))
    stages = {int(k.split('.')[1]) for k in kept if k.startswith('layers.')}
    last = max(stages) if stages else 3
    out = {}
    for key, value in converted.items():
        key = key[len('backbone.'):]
        if key.startswith('norm.'):
            key = f'norm{last}.' + key[len('norm.'):]
        out[key] = value
    return out


def detect_reference_variant(state: StateDict) -> str:
    """``'swin'`` or ``'resnet'`` for a reference ACmix state dict, else a ValueError."""
    if 'patch_embed.proj.weight' in state and any('.attn.dep_conv.' in k for k in state):
        return 'swin'
    if any(k.endswith('.conv2.conv_p.weight') for k in state):
        return 'resnet'
    raise ValueError('not a reference ACmix checkpoint: expected the keys of ACmix-Swin '
                     '(patch_embed.proj.weight, layers.*.attn.dep_conv.*) or of ACmix-ResNet '
                     f'(layer*.conv2.conv_p.weight); got e.g. {sorted(state)[:5]}')


def convert_reference_classifier(state: StateDict) -> Tuple[str, StateDict]:
    """A reference ACmix classifier -> the keys of an mmpretrain ``ImageClassifier`` with an
    acmix_mm backbone, a ``GlobalAveragePooling`` neck and a ``LinearClsHead``.

    Returns:
        The variant (``'swin'`` / ``'resnet'``) and the converted state dict (``backbone.*``,
        ``head.fc.*``).
    """
    variant = detect_reference_variant(state)
    head = 'head.' if variant == 'swin' else 'fc.'
    backbone = acmix_swin_converter(state) if variant == 'swin' else acmix_resnet_converter(
        {k: v for k, v in state.items() if not k.startswith(head)})
    out = {f'backbone.{k}': v for k, v in backbone.items()}
    out.update({f'head.fc.{k[len(head):]}': v for k, v in state.items() if k.startswith(head)})
    return variant, out

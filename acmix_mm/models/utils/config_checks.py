"""Checks of the OpenMMLab-specific backbone arguments (``norm_cfg``, ``act_cfg``, ``init_cfg``,
``pretrained``, ``plugins``), done before anything is built, with errors that name the argument.

The plain-Python checks (ints, lengths, indices) are in :mod:`acmix_mm.layers._validation`.
"""
from typing import Callable, Iterable, Optional, Sequence

from mmcv.cnn import build_activation_layer, build_norm_layer

from ...layers._validation import ArgumentTypeError, check_dict

PLUGIN_POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3')


def _check_layer_cfg(name: str, cfg: object, build: Callable[[dict], object],
                     what: str) -> dict:
    """``cfg`` is a dict with a ``type`` and ``build(dict(cfg))`` succeeds."""
    cfg = check_dict(name, cfg)
    if 'type' not in cfg:
        raise ValueError(f'`{name}` must be a dict with a `type` key (e.g. '
                         f'dict(type=...)), got {cfg!r}')
    try:
        build(dict(cfg))
    except Exception as e:  # the registries' KeyError, GroupNorm's ValueError, a bad kwarg, ...
        raise ValueError(f'`{name}`={cfg!r} does not build {what}: {type(e).__name__}: '
                         f'{e}') from e
    return cfg


def check_norm_cfg(name: str, cfg: object, channels: Iterable[int]) -> dict:
    """A norm config that builds a layer for every channel count the backbone uses."""
    for c in sorted(set(channels)):
        cfg = _check_layer_cfg(name, cfg, lambda d: build_norm_layer(d, c),
                               f'a norm layer of {c} channels')
    return cfg  # type: ignore[return-value]


def check_act_cfg(name: str, cfg: object) -> dict:
    """An activation config that builds."""
    return _check_layer_cfg(name, cfg, build_activation_layer, 'an activation layer')


def check_init_cfg(init_cfg: object, pretrained: object) -> None:
    """``init_cfg``: None, a dict with ``type`` or a list of them, a ``Pretrained`` one with a
    ``checkpoint`` path; ``pretrained`` (deprecated): None or a path; not both."""
    if pretrained is not None and not isinstance(pretrained, str):
        raise ArgumentTypeError(f'`pretrained` must be None or a checkpoint path (str), got '
                                f'{pretrained!r}')
    if init_cfg is None:
        return
    cfgs = init_cfg if isinstance(init_cfg, list) else [init_cfg]
    for cfg in cfgs:
        if not isinstance(cfg, dict) or 'type' not in cfg:
            raise ArgumentTypeError(f'`init_cfg` must be None, a dict with a `type` key or a list '
                                    f'of such dicts, got {init_cfg!r}')
        if cfg['type'] == 'Pretrained' and not isinstance(cfg.get('checkpoint'), str):
            raise ValueError(f"`init_cfg` of type 'Pretrained' needs `checkpoint` (a path or URL, "
                             f'str), got {cfg!r}')
    if pretrained is not None:
        raise ValueError(f'`init_cfg` and `pretrained` cannot both be set (`pretrained` is '
                         f'deprecated: use init_cfg=dict(type=\'Pretrained\', '
                         f'checkpoint={pretrained!r})), got init_cfg={init_cfg!r}')


def check_plugins(plugins: Optional[Sequence], num_stages: int) -> None:
    """mmdet's/mmseg's ResNet ``plugins``: a list of ``dict(cfg=dict(type=...),
    position='after_conv1|2|3', stages=(bool, ...) one per stage, optional)``."""
    if plugins is None:
        return
    accepted = (f"None or a list of dict(cfg=dict(type=...), position=one of "
                f"{list(PLUGIN_POSITIONS)}, stages=a tuple of {num_stages} bools (optional))")
    if not isinstance(plugins, list):
        raise ArgumentTypeError(f'`plugins` must be {accepted}, got {plugins!r}')
    for plugin in plugins:
        if (not isinstance(plugin, dict) or not isinstance(plugin.get('cfg'), dict)
                or 'type' not in plugin['cfg']
                or plugin.get('position') not in PLUGIN_POSITIONS
                or set(plugin) - {'cfg', 'position', 'stages'}):
            raise ValueError(f'`plugins` must be {accepted}, got the entry {plugin!r}')
        stages = plugin.get('stages')
        if stages is not None and (not isinstance(stages, (list, tuple))
                                   or len(stages) != num_stages
                                   or not all(isinstance(s, bool) for s in stages)):
            raise ValueError(f'`plugins` must be {accepted}, got stages={stages!r}')

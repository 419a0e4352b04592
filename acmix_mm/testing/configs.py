from typing import Optional

from mmengine.config import Config, ConfigDict
from mmengine.hub import get_config


def framework_model_cfg(config: str, backbone_type: Optional[str] = None,
                        offline: bool = True, **backbone_overrides) -> ConfigDict:
    """The ``model`` of a config (``'mmdet::mask_rcnn/...py'`` or a file), backbone swapped.

    Args:
        config: ``scope::path`` of an installed framework's config, or a config file.
        backbone_type: new ``backbone.type``; everything else of the backbone dict is kept.
        offline: drop URL-based pretrained weights (no downloads in smoke runs).
        backbone_overrides: further backbone keys to set.
    """
    model = (get_config(config) if '::' in config else Config.fromfile(config)).model
    if backbone_type is not None:
        model.backbone.type = backbone_type
    model.backbone.update(backbone_overrides)
    if offline:
        model.pop('pretrained', None)
        model.backbone.pop('init_cfg', None)
    return model

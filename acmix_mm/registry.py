"""Registration of acmix_mm modules in the OpenMMLab registries."""
from typing import List, Type

from mmengine.registry import Registry


def framework_model_registries() -> List[Registry]:
    """The MODELS registries of mmdet, mmseg and mmpretrain (all three are requirements)."""
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS
    return [MMDET_MODELS, MMSEG_MODELS, MMPRETRAIN_MODELS]


def register_in_frameworks(cls: Type) -> Type:
    """Class decorator: registers ``cls`` under its own name in every framework's MODELS."""
    for registry in framework_model_registries():
        registry.register_module(module=cls)
    return cls

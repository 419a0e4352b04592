"""ACmix backbones for OpenMMLab.

``acmix_mm.layers`` is plain PyTorch. Importing ``acmix_mm`` with the OpenMMLab stack installed
also registers the backbones in the MODELS registries of mmdet, mmseg and mmpretrain, and the
``ACmix`` conv layer type in mmengine's root registry (configs use
``custom_imports=dict(imports=['acmix_mm'])``).
"""
import importlib.util

from ._torchvision_warning import silence_torchvision_image_extension_warning

silence_torchvision_image_extension_warning()  # before anything imports torchvision

__version__ = '0.1.0'

if importlib.util.find_spec('mmengine') is not None:
    from . import datasets, engine, models, visualization  # noqa: F401  (registers modules)

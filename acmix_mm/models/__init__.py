"""OpenMMLab glue: importing it registers every acmix_mm module."""
from ..utils import allow_mmengine_checkpoint_globals, register_weights_only_loaders
from .backbones import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403

allow_mmengine_checkpoint_globals()
register_weights_only_loaders()

from .safe_checkpoint import (UnknownPickledObject, allow_mmengine_checkpoint_globals,
                              load_checkpoint_with_placeholders)

__all__ = ['UnknownPickledObject', 'allow_mmengine_checkpoint_globals',
           'load_checkpoint_with_placeholders']

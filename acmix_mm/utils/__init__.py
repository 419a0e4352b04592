from .safe_checkpoint import (UnknownObjectsWarning, UnknownPickledObject,
                              allow_mmengine_checkpoint_globals,
                              load_checkpoint_with_placeholders, load_weights_only,
                              register_weights_only_loaders)

__all__ = ['UnknownPickledObject', 'UnknownObjectsWarning', 'allow_mmengine_checkpoint_globals',
           'load_checkpoint_with_placeholders', 'load_weights_only',
           'register_weights_only_loaders']

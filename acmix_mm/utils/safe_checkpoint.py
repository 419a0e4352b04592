"""Weights-only checkpoint loading for mmengine checkpoints under torch >= 2.6.

torch loads with ``weights_only=True`` by default and mmengine 0.10.7 calls ``torch.load`` without
the argument, so resuming a run fails on the non-tensor objects that mmengine itself writes
(numpy arrays and scalars in the message hub, its ``HistoryBuffer``s and their statistics
methods, config dicts). Rather than turning arbitrary unpickling back on, the exact classes those
checkpoints hold are allow-listed, and ``getattr`` resolves only ``HistoryBuffer``'s methods.
"""
import pickle
from typing import List

import numpy as np
import torch

_done = False


HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_getattr(obj: object, name: str) -> object:
    """Stands in for ``getattr`` while loading: mmengine's ``HistoryBuffer`` pickles its
    statistics methods as ``getattr(HistoryBuffer, 'min')`` and so on. Only those resolve."""
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'checkpoint asks for getattr({obj!r}, {name!r}); only '
                                 f'HistoryBuffer.{{{", ".join(HISTORY_BUFFER_STATISTICS)}}} are '
                                 f'allowed')


def mmengine_checkpoint_globals() -> List[object]:
    """The classes and reconstructors found in checkpoints that mmengine's Runner saves."""
    from mmengine.config import ConfigDict
    from mmengine.logging import HistoryBuffer
    numeric_dtypes = [type(np.dtype(c)) for c in np.typecodes['All'] if c not in 'OMmV']
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    return [HistoryBuffer, ConfigDict, _reconstruct, scalar, np.ndarray, np.dtype,
            *numeric_dtypes, (history_buffer_getattr, 'builtins.getattr')]


def allow_mmengine_checkpoint_globals() -> None:
    """Adds :func:`mmengine_checkpoint_globals` to torch's weights-only allow-list (once)."""
    global _done
    if not _done and hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
        _done = True


class UnknownPickledObject(dict):
    """Stands in for a pickled object of a class that is not allow-listed (e.g. the training
    code's config object in a released checkpoint). Its class is never imported and none of its
    code runs; the pickled state is kept as plain data in ``state``."""

    qualname = 'unknown'

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()
        self.args = args

    def __setstate__(self, state) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f'<unloaded {self.qualname}>'


def _allowed_globals() -> dict:
    from torch import _weights_only_unpickler as wou
    allowed = dict(wou._get_allowed_globals())
    allowed.update(wou._get_user_allowed_globals())
    return allowed


class _PlaceholderUnpickler(pickle.Unpickler):
    """Resolves torch's allow-listed globals; anything else becomes an
    :class:`UnknownPickledObject` subclass, so no foreign code is imported or called."""

    def find_class(self, module: str, name: str):
        allowed = _allowed_globals().get(f'{module}.{name}')
        if allowed is not None:
            return allowed
        return type(name, (UnknownPickledObject, ), {'qualname': f'{module}.{name}'})


class _PlaceholderPickleModule:
    """The ``pickle_module`` protocol that ``torch.load`` uses, with the restricted unpickler."""
    Unpickler = _PlaceholderUnpickler
    load = staticmethod(lambda f, **kw: _PlaceholderUnpickler(f, **kw).load())
    __name__ = 'acmix_mm_placeholder_pickle'


def load_checkpoint_with_placeholders(path: str, map_location='cpu') -> dict:
    """Reads a checkpoint that holds non-tensor objects of unknown classes (such as the released
    ACmix checkpoints' config object) without executing pickled code: tensors and allow-listed
    containers load as usual, the rest as inert :class:`UnknownPickledObject` placeholders."""
    allow_mmengine_checkpoint_globals()
    return torch.load(path, map_location=map_location, weights_only=False,
                      pickle_module=_PlaceholderPickleModule)

"""Weights-only checkpoint loading: no code from a checkpoint, on every path.

:func:`register_weights_only_loaders` (run on ``import acmix_mm``) makes mmengine's
``CheckpointLoader`` read local files and URLs with ``weights_only=True`` whatever torch's
default (torch < 2.6 and ``torch.hub.load_state_dict_from_url`` default to full unpickling); a
refusal names the file. :func:`load_checkpoint_with_placeholders` reads files that hold foreign
objects (the released ACmix checkpoints' config) with a restricted unpickler and warns, naming
the file.

Weights-only loading of mmengine checkpoints under torch >= 2.6:

torch loads with ``weights_only=True`` by default and mmengine 0.10.7 calls ``torch.load`` without
the argument, so resuming a run fails on the non-tensor objects that mmengine itself writes
(numpy arrays and scalars in the message hub, its ``HistoryBuffer``s and their statistics
methods, config dicts). Rather than turning arbitrary unpickling back on, the exact classes those
checkpoints hold are allow-listed, and ``getattr`` resolves only ``HistoryBuffer``'s methods.
"""
import os
import pickle
import warnings
from contextlib import contextmanager
from typing import Iterator, List, Optional, Set

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


def _placeholder_pickle_module(unknown: Set[str]):
    """The ``pickle_module`` protocol that ``torch.load`` uses, with an unpickler that resolves
    torch's allow-listed globals and turns anything else into an :class:`UnknownPickledObject`
    subclass (recording its name in ``unknown``), so no foreign code is imported or called."""

    class PlaceholderUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            allowed = _allowed_globals().get(f'{module}.{name}')
            if allowed is not None:
                return allowed
            unknown.add(f'{module}.{name}')
            return type(name, (UnknownPickledObject, ), {'qualname': f'{module}.{name}'})

    class PlaceholderPickleModule:
        Unpickler = PlaceholderUnpickler
        load = staticmethod(lambda f, **kw: PlaceholderUnpickler(f, **kw).load())
        __name__ = 'acmix_mm_placeholder_pickle'

    return PlaceholderPickleModule


def load_checkpoint_with_placeholders(path: str, map_location='cpu') -> dict:
    """Reads a checkpoint that holds non-tensor objects of unknown classes (such as the released
    ACmix checkpoints' config object) without executing pickled code: tensors and allow-listed
    containers load as usual, the rest as inert :class:`UnknownPickledObject` placeholders, and
    a warning names the file and those classes."""
    allow_mmengine_checkpoint_globals()
    unknown: Set[str] = set()
    checkpoint = torch.load(path, map_location=map_location, weights_only=False,
                            pickle_module=_placeholder_pickle_module(unknown))
    if unknown:
        warnings.warn(f'{path}: pickled objects of {len(unknown)} classes that are not weights '
                      f'({", ".join(sorted(unknown))}) were read as inert placeholders; none of '
                      'their code ran', UnknownObjectsWarning, stacklevel=2)
    return checkpoint


class UnknownObjectsWarning(UserWarning):
    """A checkpoint held pickled objects that were read as placeholders."""


def load_weights_only(filename: str, map_location=None) -> dict:
    """``torch.load(weights_only=True)`` with :func:`mmengine_checkpoint_globals` allowed,
    whatever torch's default; a refused object raises ``pickle.UnpicklingError`` naming the
    file."""
    allow_mmengine_checkpoint_globals()
    with _refusal_names(filename):
        return torch.load(filename, map_location=map_location, weights_only=True)


@contextmanager
def _refusal_names(filename: str) -> Iterator[None]:
    """Re-raises torch's weights-only refusal with the file's name in front."""
    try:
        yield
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(
            f'{filename}: refused to load, it holds pickled objects that are not weights '
            f'(nothing was executed): {e}') from e


def load_from_local(filename: str, map_location=None) -> dict:
    """mmengine's local checkpoint loader, weights-only (see :func:`load_weights_only`)."""
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return load_weights_only(filename, map_location)


def load_from_http(filename: str, map_location=None, model_dir: Optional[str] = None,
               progress: bool = False) -> dict:
    """mmengine's http(s) checkpoint loader (rank 0 downloads first), weights-only: mmengine
    0.10.7's calls ``torch.hub.load_state_dict_from_url``, whose default is
    ``weights_only=False``."""
    from mmengine.dist import get_dist_info
    rank, world_size = get_dist_info()

    def load() -> dict:
        allow_mmengine_checkpoint_globals()
        with _refusal_names(filename):
            return torch.hub.load_state_dict_from_url(filename, model_dir=model_dir,
                                                      map_location=map_location,
                                                      progress=progress, weights_only=True)

    checkpoint = load() if rank == 0 else None
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = load()
    return checkpoint


def register_weights_only_loaders() -> None:
    """Makes mmengine's ``CheckpointLoader`` (``load_from``, ``resume``, ``init_cfg``
    ``Pretrained``, ``tools/test.py``) read local files and http(s) URLs weights-only. The
    ``torchvision://`` and ``open-mmlab://`` schemes call mmengine's module-level
    ``load_from_http``, which is pointed at the same loader."""
    from mmengine.runner import checkpoint as mm_checkpoint
    mm_checkpoint.CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
    mm_checkpoint.CheckpointLoader.register_scheme(prefixes=('http://', 'https://'),
                                                   loader=load_from_http, force=True)
    mm_checkpoint.load_from_http = load_from_http

"""Loading a checkpoint into every layer with the same name and shape, with a readable report."""
import os
import pickle
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn

from ...utils import allow_mmengine_checkpoint_globals, load_checkpoint_with_placeholders

StateDict = Dict[str, torch.Tensor]
# Buffers that every model computes for itself: never reported as starting from scratch.
DERIVED_BUFFERS = ('num_batches_tracked', 'relative_position_index')


@dataclass
class PretrainedReport:
    """What :func:`load_matching_weights` did."""
    loaded: List[str] = field(default_factory=list)
    from_scratch: List[str] = field(default_factory=list)
    shape_mismatch: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    unused: List[str] = field(default_factory=list)

    def summary(self, owner: Dict[str, str]) -> str:
        """One paragraph: counts, then the modules that start from scratch, grouped."""
        lines = [f'loaded {len(self.loaded)} tensors']
        if self.from_scratch:
            groups: Dict[str, int] = defaultdict(int)
            for key in self.from_scratch:
                groups[owner.get(key, key.rsplit('.', 1)[0])] += 1
            lines.append(f'{len(self.from_scratch)} tensors start from scratch, in '
                         f'{len(groups)} modules: ' + ', '.join(groups))
        if self.shape_mismatch:
            lines.append('shape mismatch (start from scratch): ' + ', '.join(
                f'{k} {tuple(a)} vs checkpoint {tuple(b)}' for k, a, b in self.shape_mismatch))
        if self.unused:
            lines.append(f'{len(self.unused)} checkpoint tensors unused: ' +
                         ', '.join(self.unused[:20]) + (' ...' if len(self.unused) > 20 else ''))
        return '; '.join(lines)


def _is_local(filename: str) -> bool:
    return '://' not in filename


def read_checkpoint(filename: str, map_location: str = 'cpu') -> dict:
    """Reads a checkpoint with mmengine's loaders (local paths and URLs), weights only.

    A local file that also holds objects of other classes (the released ACmix checkpoints keep
    the training code's config object) is read with those objects as inert placeholders.

    Raises:
        FileNotFoundError: a local path that is not a file.
        ValueError: a file that is empty, truncated or not a checkpoint, or one that holds no
            dict. Every message names the file.
    """
    if not isinstance(filename, (str, os.PathLike)):
        raise TypeError(f'checkpoint must be a path or URL (str), got {filename!r}')
    filename = os.fspath(filename)
    if _is_local(filename) and not os.path.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename!r} ' + (
            'is a directory, not a file' if os.path.isdir(filename) else 'does not exist'))
    if _is_local(filename) and os.path.getsize(filename) == 0:
        raise ValueError(f'checkpoint file {filename!r} is empty (0 bytes)')
    allow_mmengine_checkpoint_globals()
    unreadable = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError,
                  AttributeError, IndexError, TypeError)
    try:
        checkpoint = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    except pickle.UnpicklingError as e:
        if not _is_local(filename):
            raise  # the weights-only loader's refusal, naming the URL
        try:
            checkpoint = load_checkpoint_with_placeholders(filename, map_location)
        except unreadable as e2:
            raise _unreadable(filename, e2) from e
    except unreadable as e:
        raise _unreadable(filename, e) from e
    if not isinstance(checkpoint, dict):
        raise ValueError(f'checkpoint {filename!r} holds a {type(checkpoint).__name__}, not a '
                         f'dict of tensors (a state dict, or a dict with "state_dict" / "model")')
    return checkpoint


def extract_state_dict(checkpoint: dict, prefix: Optional[str] = None,
                       source: str = 'checkpoint') -> StateDict:
    """The tensors of a checkpoint: its ``state_dict`` or ``model`` entry, or itself.

    ``module.`` (DataParallel) is stripped; with ``prefix`` (e.g. ``'backbone.'``) only the keys
    under it are kept, without it.

    Raises:
        ValueError: naming ``source``, when no tensor is left.
    """
    for entry in ('state_dict', 'model'):
        if isinstance(checkpoint.get(entry), dict):
            checkpoint = checkpoint[entry]
            break
    state = {k[7:] if k.startswith('module.') else k: v for k, v in checkpoint.items()
             if isinstance(v, torch.Tensor)}
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f'{source} holds no tensors' + (f' under prefix {prefix!r}' if prefix
                                                         else '') +
                         f'; its entries: {sorted(map(str, checkpoint))[:10]}')
    return state


def strip_backbone_prefix(module: nn.Module, state: StateDict) -> StateDict:
    """``state`` without ``backbone.`` when only that way its keys name ``module``'s tensors (a
    detector's or classifier's checkpoint given to the backbone)."""
    own = module.state_dict()
    if not any(k in own for k in state) and any(k.startswith('backbone.') for k in state):
        return {k[9:]: v for k, v in state.items() if k.startswith('backbone.')}
    return state


def load_matching_weights(module: nn.Module, state: StateDict, source: str = 'checkpoint',
                          owner_of: Optional[Callable[[str], str]] = None) -> PretrainedReport:
    """Copies every tensor of ``state`` whose name and shape exist in ``module``.

    Args:
        module: the model to fill; what is not in ``state`` keeps its current values.
        state: name -> tensor.
        source: the checkpoint's name, for messages.
        owner_of: maps a parameter name to the module name reported as "from scratch".

    Raises:
        ValueError: when not a single tensor matches.
    """
    own = module.state_dict()
    state = strip_backbone_prefix(module, state)
    report = PretrainedReport()
    matched = {}
    for key, value in state.items():
        if key not in own:
            report.unused.append(key)
        elif own[key].shape != value.shape:
            report.shape_mismatch.append((key, tuple(own[key].shape), tuple(value.shape)))
        else:
            matched[key] = value
            report.loaded.append(key)
    if not matched:
        raise ValueError(
            f'checkpoint {source!r} matches no parameter of {type(module).__name__} (a checkpoint '
            f'of another architecture?): its keys start with {sorted(state)[:5]}, the model '
            f'expects e.g. {sorted(own)[:5]}')
    report.from_scratch = [k for k in own if k not in matched and
                           not k.endswith(DERIVED_BUFFERS)]
    module.load_state_dict(matched, strict=False)
    owners = {k: owner_of(k) if owner_of else k.rsplit('.', 1)[0] for k in report.from_scratch}
    print_log(f'{type(module).__name__} from {source}: {report.summary(owners)}',
              logger='current')
    return report


def _unreadable(filename: str, error: Exception) -> ValueError:
    return ValueError(f'cannot read checkpoint {filename!r}: not a PyTorch checkpoint, or a '
                      f'truncated one ({type(error).__name__}: {str(error)[:300]})')

"""Bit-exact resumption: the random states travel with the checkpoint.

mmengine restores weights, optimizer, schedulers and the message hub on ``resume``, but not the
random number generators, so a resumed run draws different flips, crops, samples and drop paths
than the uninterrupted one. :class:`ExactResumeHook` saves Python's, numpy's and torch's (CPU
and CUDA) generator states into every checkpoint and restores them at the point where the
uninterrupted run stood: an iteration-based loop first advances its dataloader past the trained
batches (running the data pipeline, which draws random numbers), so the states are restored
after that advance, just before the first new batch is loaded. The sampler's position and the
dataloader workers' states follow from that advance (mmengine seeds every worker from the run's
seed); the sampler seed and worker count are saved too and a change is reported.

Validation runs do not consume the training stream: the states are put back after each one, so
where validation happens does not change the training that follows.

With ``resume=True`` and no path (``--resume`` of ``tools/train.py``), mmengine reads the work
dir's ``last_checkpoint``; if that file is empty or names a missing or incomplete file (a kill
during its write), the newest complete checkpoint of the work dir is resumed instead.

Single-process runs are bit-exact (tested on the demo detection and segmentation configs). In a
distributed run only rank 0 writes the checkpoint, so the other ranks' states are not restored
(a warning says so).
"""
import glob
import logging
import os
import os.path as osp
import random
import zipfile
from typing import Callable, Dict, Iterator, Optional

import numpy as np
import torch
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

RandomStates = Dict[str, object]
CHECKPOINT_KEY = 'random_states'


def capture_random_states() -> RandomStates:
    """The generator states of Python's ``random``, numpy's global generator and torch (CPU,
    and every CUDA device when present), as plain lists, ints and tensors (weights-only
    loadable)."""
    np_state = np.random.get_state(legacy=False)
    states: RandomStates = dict(
        python=list(random.getstate()),
        numpy=dict(bit_generator=np_state['bit_generator'],
                   key=torch.from_numpy(np_state['state']['key'].astype(np.int64)),
                   pos=int(np_state['state']['pos']), has_gauss=int(np_state['has_gauss']),
                   gauss=float(np_state['gauss'])),
        torch=torch.get_rng_state())
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: RandomStates) -> None:
    """Inverse of :func:`capture_random_states`."""
    version, internal, gauss = states['python']
    random.setstate((version, tuple(internal), gauss))
    n = states['numpy']
    np.random.set_state(dict(bit_generator=n['bit_generator'],
                             state=dict(key=n['key'].numpy().astype(np.uint32), pos=n['pos']),
                             has_gauss=n['has_gauss'], gauss=n['gauss']))
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


class _RestoreAfterAdvance:
    """Stands in for an ``IterBasedTrainLoop``'s dataloader iterator while the loop advances
    past ``count`` trained batches; after the last of them it puts the real iterator back and
    calls ``restore``."""

    def __init__(self, loop, count: int, restore: Callable[[], None]) -> None:
        self._loop, self._inner = loop, loop.dataloader_iterator
        self._left, self._restore = count, restore

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        batch = next(self._inner)
        self._left -= 1
        if self._left == 0:
            self._loop.dataloader_iterator = self._inner
            self._restore()
        return batch


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Saves the random states with every checkpoint and restores them on resume (see the
    module docstring). Enabled by ``default_hooks=dict(exact_resume=dict(type=
    'ExactResumeHook'))`` in this project's demo configs and by ``tools/train.py`` for any
    config."""

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._resumed: Optional[RandomStates] = None
        self._before_val: Optional[RandomStates] = None

    # -- choosing the checkpoint -------------------------------------------------------------
    def before_run(self, runner) -> None:
        """With ``resume=True`` and no path, makes sure the checkpoint mmengine will pick from
        ``last_checkpoint`` is complete; otherwise points it at the newest complete one."""
        if not (runner._resume and runner._load_from is None):
            return
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        named = ''
        if osp.isfile(pointer):
            with open(pointer) as f:
                named = f.read().strip()
        if not named or is_complete_checkpoint(named):
            return
        complete = [p for p in glob.glob(osp.join(runner.work_dir, '*.pth'))
                    if is_complete_checkpoint(p)]
        chosen = max(complete, key=osp.getmtime) if complete else None
        print_log(f'last_checkpoint names {named!r}, which is missing or incomplete; resuming '
                  f'from {chosen!r} instead', logger='current', level=logging.WARNING)
        runner._load_from = chosen  # what mmengine's load_or_resume reads next
        if chosen is None:
            runner._resume = False

    # -- saving and loading --------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Adds the random states (those before a validation that is running now) and what the
        sampler's and workers' streams depend on."""
        states = self._before_val or capture_random_states()
        checkpoint[CHECKPOINT_KEY] = dict(states=states, stream=self._stream_info(runner))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keeps the saved states for :meth:`before_train` (a checkpoint loaded only for its
        weights, ``load_from`` without ``resume``, is not a resume and is ignored there)."""
        if not runner._resume:
            return
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            print_log('the checkpoint holds no random states (written without '
                      'ExactResumeHook): the resumed run will not repeat the interrupted one '
                      'exactly', logger='current', level=logging.WARNING)
            return
        now = self._stream_info(runner)
        if saved['stream'] != now:
            print_log(f'data stream settings changed since the checkpoint ({saved["stream"]} -> '
                      f'{now}): the resumed run will not repeat the interrupted one exactly',
                      logger='current', level=logging.WARNING)
        self._resumed = saved['states']

    def before_train(self, runner) -> None:
        """Restores the saved states where the uninterrupted run stood: after the loop's advance
        past the trained batches, or now when there is none."""
        states, self._resumed = self._resumed, None
        if states is None:
            return
        if get_world_size() > 1:
            print_log('distributed run: only rank 0 saved its random states; they are not '
                      'restored', logger='current', level=logging.WARNING)
            return
        loop = runner.train_loop
        if runner.iter > 0 and hasattr(loop, 'dataloader_iterator'):
            loop.dataloader_iterator = _RestoreAfterAdvance(
                loop, runner.iter, lambda: restore_random_states(states))
        else:
            restore_random_states(states)

    # -- validation leaves the training stream alone ------------------------------------------
    def before_val(self, runner) -> None:
        self._before_val = capture_random_states()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            restore_random_states(self._before_val)
            self._before_val = None

    @staticmethod
    def _stream_info(runner) -> dict:
        loader = runner.train_dataloader
        sampler = getattr(loader, 'sampler', None)
        return dict(seed=runner.seed, sampler=type(sampler).__name__,
                    sampler_seed=getattr(sampler, 'seed', None),
                    num_workers=getattr(loader, 'num_workers', None))


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a whole checkpoint file: torch's zip format ends with a central
    directory, which a truncated file lacks."""
    return osp.isfile(path) and os.path.getsize(path) > 0 and zipfile.is_zipfile(path)


def enable_exact_resume(cfg) -> bool:
    """Adds :class:`ExactResumeHook` to the mmengine config ``cfg`` as
    ``default_hooks.exact_resume`` unless the config names it already or lists it in
    ``custom_hooks``; ``default_hooks.exact_resume=None`` turns it off (the entry is removed,
    since mmengine accepts ``None`` only for its own default hooks). Returns whether it was
    added."""
    default_hooks = cfg.setdefault('default_hooks', {})
    custom = [h.get('type') for h in cfg.get('custom_hooks') or []]
    if 'exact_resume' in default_hooks and default_hooks['exact_resume'] is None:
        default_hooks.pop('exact_resume')
        return False
    if 'exact_resume' in default_hooks or 'ExactResumeHook' in custom:
        return False
    default_hooks['exact_resume'] = dict(type='ExactResumeHook')
    return True

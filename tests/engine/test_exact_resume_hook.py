"""A training run killed with SIGKILL right after a checkpoint and restarted with ``--resume``
ends bit-identical to an uninterrupted run: weights, optimizer and scheduler state, the loss of
every iteration and the final metrics (both demo configs, tools/train.py as a user runs it)."""
import glob
import json
import os
import signal
import sys

import pytest
import torch

import tool_process

from acmix_mm.datasets import generate
from acmix_mm.engine.exact_resume_hook import capture_random_states, restore_random_states

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
DEMO = {'detection': 'configs/demo/mask-rcnn_acmix-r26-slim_fpn_demo-shapes.py',
        'segmentation': 'configs/demo/upernet_acmix-swin-slim_demo-shapes.py'}
ITERS, KILL_AFTER = 4, 2


def train(config, work_dir, *options, resume=False):
    cmd = [sys.executable, 'tools/train.py', config, '--work-dir', str(work_dir)]
    cmd += ['--resume'] if resume else []
    return tool_process.run(cmd + ['--cfg-options', *options], cwd=ROOT, timeout=600)


def demo_options(task, tmp_path):
    paths = generate(str(tmp_path / 'data'), num_train=8, num_val=2, size=64)
    if task == 'segmentation':
        root = paths['ade'] + '/'
        options = ['model.data_preprocessor.size=(64,64)']
    else:
        root = paths['coco'] + '/'
        options = [f'{split}_evaluator.ann_file={root}annotations/instances_val.json'
                   for split in ('val', 'test')]
    options += [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]
    return options + [
        'train_dataloader.batch_size=2', f'train_cfg.max_iters={ITERS}',
        f'train_cfg.val_interval={ITERS}', f'default_hooks.checkpoint.interval={KILL_AFTER}',
        'default_hooks.checkpoint.max_keep_ckpts=-1', 'default_hooks.logger.interval=1',
        'randomness.seed=0', 'randomness.deterministic=True']


def killing_config(config, tmp_path):
    """``config`` plus a hook that SIGKILLs the run right after ``iter_{KILL_AFTER}.pth``."""
    path = tmp_path / 'killed_after_checkpoint.py'
    path.write_text(
        f'_base_ = {os.path.join(ROOT, config)!r}\n'
        "custom_imports = dict(imports=['acmix_mm', 'acmix_mm.testing.fault_injection'], "
        'allow_failed_imports=False)\n'
        f"custom_hooks = [dict(type='SigkillAfterCheckpointHook', after_iter={KILL_AFTER})]\n")
    return str(path)


def final_metrics(work_dir):
    """The last line of the latest run's scalars.json (the final validation), timings left
    out."""
    latest = sorted(glob.glob(os.path.join(work_dir, '*', 'vis_data', 'scalars.json')))[-1]
    with open(latest) as f:
        last = json.loads(f.read().strip().splitlines()[-1])
    return {k: v for k, v in last.items() if 'time' not in k}


def assert_same_state(a, b, where=''):
    """Recursive bit-exact comparison of two loaded checkpoints (tensors, numpy arrays and
    mmengine's HistoryBuffers, i.e. the logged losses of every iteration)."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f'{where}[{i}]')
    elif hasattr(a, '_log_history'):  # HistoryBuffer
        assert a._log_history.tolist() == b._log_history.tolist(), where
        assert a._count_history.tolist() == b._count_history.tolist(), where
    elif hasattr(a, 'tolist'):  # numpy
        assert a.tolist() == b.tolist(), where
    else:
        assert a == b, where


def comparable(checkpoint):
    """What must agree: all but the wall-clock meta data and the message hub's timings."""
    hub = checkpoint['message_hub']
    scalars = {k: v for k, v in hub['log_scalars'].items() if 'time' not in k}
    return dict(state_dict=checkpoint['state_dict'], optimizer=checkpoint['optimizer'],
                param_schedulers=checkpoint['param_schedulers'], scalars=scalars,
                random_states=checkpoint['random_states'], iter=checkpoint['meta']['iter'])


@pytest.mark.slow
@pytest.mark.parametrize('task', ['detection', 'segmentation'])
def test_sigkill_after_checkpoint_then_resume_is_bit_exact(task, tmp_path):
    options = demo_options(task, tmp_path)
    whole, killed = tmp_path / 'whole', tmp_path / 'killed'
    out = train(DEMO[task], whole, *options)
    assert out.returncode == 0, out.stderr[-3000:]

    out = train(killing_config(DEMO[task], tmp_path), killed, *options)
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
    assert (killed / f'iter_{KILL_AFTER}.pth').exists()
    assert not (killed / f'iter_{ITERS}.pth').exists()

    out = train(DEMO[task], killed, *options, resume=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f'resumed epoch: 0, iter: {KILL_AFTER}' in out.stdout + out.stderr

    a = torch.load(whole / f'iter_{ITERS}.pth', map_location='cpu')
    b = torch.load(killed / f'iter_{ITERS}.pth', map_location='cpu')
    assert_same_state(comparable(a), comparable(b))
    assert final_metrics(whole) == final_metrics(killed)


def test_random_states_round_trip():
    import random

    import numpy as np
    states = capture_random_states()
    draw = lambda: (random.random(), float(np.random.rand()), np.random.randn(),  # noqa: E731
                    torch.rand(1).item())
    expected = draw()
    draw()
    restore_random_states(states)
    assert draw() == expected


def test_enable_exact_resume():
    from mmengine.config import Config

    from acmix_mm.engine import enable_exact_resume
    cfg = Config(dict(default_hooks=dict(logger=dict(type='LoggerHook'))))
    assert enable_exact_resume(cfg) and cfg.default_hooks.exact_resume.type == 'ExactResumeHook'
    off = Config(dict(default_hooks=dict(exact_resume=None)))
    assert not enable_exact_resume(off) and 'exact_resume' not in off.default_hooks
    listed = Config(dict(custom_hooks=[dict(type='ExactResumeHook')]))
    assert not enable_exact_resume(listed) and 'exact_resume' not in listed.default_hooks

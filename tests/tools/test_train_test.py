"""tools/train.py (with --resume) and tools/test.py (with --show-dir), run as a user runs them."""
import os
import re
import sys

import pytest
import torch

import tool_process

from acmix_mm.datasets import generate
from acmix_mm.utils import cpu_allocator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
CONFIG = 'configs/demo/upernet_acmix-swin-slim_demo-shapes.py'


def run(tool, *args):
    return tool_process.run([sys.executable, f'tools/{tool}', *args], cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_train_resume_and_test_with_pictures(tmp_path):
    ade = generate(str(tmp_path / 'data'), num_train=4, num_val=2, size=64)['ade']
    options = [f'{k}.dataset.data_root={ade}' for k in ('train_dataloader', 'val_dataloader',
                                                        'test_dataloader')]
    options += ['model.data_preprocessor.size=(64,64)', 'train_dataloader.batch_size=2',
                'default_hooks.logger.interval=1']
    work = str(tmp_path / 'work')
    out = run('train.py', CONFIG, '--work-dir', work, '--cfg-options', 'train_cfg.max_iters=2',
              'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2', *options)
    assert out.returncode == 0, out.stderr[-3000:]
    # on the CPU glibc keeps freed memory unless --cpu-allocator system (utils/cpu_allocator)
    retained = ('unchanged (the run computes on a GPU)' if torch.cuda.is_available() else
                'glibc keeps freed memory' if cpu_allocator._glibc() else 'not glibc')
    assert 'CPU allocator: ' + retained in out.stdout + out.stderr
    out = run('train.py', CONFIG, '--work-dir', work, '--resume', '--cpu-allocator', 'system',
              '--cfg-options', 'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
              'default_hooks.checkpoint.interval=2', *options)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    if not torch.cuda.is_available():
        assert "CPU allocator: the C library's defaults (--cpu-allocator system)" in log
    # what only a real resume gives ("Auto resumed from the latest checkpoint None" is logged
    # by a run that starts from scratch): the checkpoint named, its iteration restored, and
    # training going on at iteration 3, never re-running 1 and 2
    assert os.path.join(work, 'iter_2.pth') in log
    assert re.search(r'resumed epoch: \d+, iter: 2\b', log)
    trained = [int(i) for i in re.findall(r'Iter\(train\) \[\s*(\d+)/4\]', log)]
    assert trained == [3, 4], trained
    assert os.path.exists(os.path.join(work, 'iter_4.pth'))

    shows = str(tmp_path / 'shows')
    out = run('test.py', CONFIG, os.path.join(work, 'iter_4.pth'), '--work-dir', work,
              '--show-dir', shows, '--cfg-options', *options)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'mIoU' in out.stdout + out.stderr
    assert len(os.listdir(shows)) == 2


def test_missing_files_are_named():
    out = run('train.py', 'configs/nope.py')
    assert out.returncode != 0 and "config 'configs/nope.py' does not exist" in out.stderr
    out = run('test.py', CONFIG, 'missing.pth')
    assert out.returncode != 0 and "checkpoint 'missing.pth' does not exist" in out.stderr

"""Checkpoint writes are atomic: a process killed during mmengine's save_checkpoint leaves the
previous file intact, and an auto-resume never picks a half-written file."""
import os
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import torch
from mmengine.fileio import get_file_backend

from acmix_mm.engine import AtomicLocalBackend, ExactResumeHook
from acmix_mm.engine.exact_resume_hook import is_complete_checkpoint

KILLED_DURING_SAVE = textwrap.dedent('''
    import os, signal, sys
    import torch
    import acmix_mm
    from mmengine.runner.checkpoint import save_checkpoint
    # die after the bytes are written, before they would be visible under the final name
    os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
    save_checkpoint({'state_dict': {'w': torch.ones(1000, 1000)}}, sys.argv[1])
''')


def test_local_paths_use_the_atomic_backend(tmp_path):
    assert isinstance(get_file_backend(str(tmp_path / 'iter_1.pth')), AtomicLocalBackend)


def test_kill_during_save_checkpoint_keeps_the_previous_file(tmp_path):
    path = tmp_path / 'iter_2.pth'
    torch.save({'state_dict': {'w': torch.zeros(3)}}, path)
    out = subprocess.run([sys.executable, '-c', KILLED_DURING_SAVE, str(path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == -9, out.stderr[-2000:]
    assert torch.equal(torch.load(path)['state_dict']['w'], torch.zeros(3))
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]
    assert len(leftovers) == 1  # the complete bytes under the temporary name, never resumed


def test_auto_resume_skips_a_truncated_checkpoint(tmp_path):
    good, bad = tmp_path / 'iter_2.pth', tmp_path / 'iter_4.pth'
    torch.save({'meta': {'iter': 2}}, good)
    time.sleep(0.01)
    torch.save({'meta': {'iter': 4}}, bad)
    bad.write_bytes(bad.read_bytes()[:100])  # a write cut short (not this package's writer)
    (tmp_path / 'last_checkpoint').write_text(str(bad))
    assert is_complete_checkpoint(str(good)) and not is_complete_checkpoint(str(bad))
    runner = SimpleNamespace(_resume=True, _load_from=None, work_dir=str(tmp_path))
    ExactResumeHook().before_run(runner)
    assert runner._load_from == str(good) and runner._resume

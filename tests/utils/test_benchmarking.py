"""benchmarking: the reports say how the workers allocate memory."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize('value,words', [('1', 'transparent huge pages'), (None, 'default')])
def test_allocator_note_follows_the_environment(value, words):
    """The note is read in the process whose environment the workers inherit; PyTorch reads the
    variable at start-up, so a fresh process checks what a worker of that environment does."""
    env = {k: v for k, v in os.environ.items() if k != 'THP_MEM_ALLOC_ENABLE'}
    if value is not None:
        env['THP_MEM_ALLOC_ENABLE'] = value
    # the module alone: importing the package imports the OpenMMLab stack (seconds)
    code = ('import importlib.util as u; '
            "s = u.spec_from_file_location('b', 'acmix_mm/utils/benchmarking.py'); "
            'm = u.module_from_spec(s); s.loader.exec_module(m); print(m.allocator_note())')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert words in out.stdout

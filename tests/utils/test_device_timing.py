import os
import subprocess
import sys

import pytest
import torch

from acmix_mm.utils.benchmarking import RETURN_FREED_MEMORY_ENV
from acmix_mm.utils.device_timing import (autocast, describe, dtype_name, environment,
                                          time_alternating)


def test_steps_alternate_call_by_call_and_each_gets_its_fastest_time():
    calls = []
    steps = [lambda: calls.append('a'), lambda: calls.append('b')]
    times = time_alternating(steps, 'cpu', repeat=3, warmup=1)
    assert calls == ['a', 'b'] * 4  # one warm-up round, then three timed rounds
    assert len(times) == 2 and all(t >= 0 for t in times)


def test_a_slower_step_times_slower():
    big = torch.randn(512, 512)
    fast, slow = time_alternating([lambda: None, lambda: [big @ big for _ in range(5)]], 'cpu',
                                  repeat=2, warmup=0)
    assert slow > fast


@pytest.mark.parametrize('repeat, warmup', [(0, 1), (2, -1)])
def test_bad_repeat_or_warmup_is_refused(repeat, warmup):
    with pytest.raises(ValueError, match=f'repeat={repeat}, warmup={warmup}'):
        time_alternating([lambda: None], 'cpu', repeat=repeat, warmup=warmup)


def test_step_peak_counts_what_the_step_allocates():
    # In a fresh process with freed memory handed back (as the benchmark workers run): in a long
    # test process glibc may serve the 32 MiB from memory it already holds.
    code = (
        'import torch\n'
        'from acmix_mm.utils.device_timing import step_peak_mb\n'
        'def step():\n'
        '    x = torch.ones(32 * 2**20 // 4)  # 32 MiB, freed when the step returns\n'
        '    return float(x.sum())\n'
        'print(step_peak_mb(step, "cpu"), step_peak_mb(lambda: None, "cpu"))\n')
    env = dict(os.environ, **RETURN_FREED_MEMORY_ENV)
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    step_mb, idle_mb = float(out[-2]), float(out[-1])
    assert 24 < step_mb < 200
    assert idle_mb < 24


def test_amp_autocasts_to_bfloat16_on_the_cpu_and_float32_stays():
    a = torch.randn(8, 8)
    with autocast('cpu', True):
        assert (a @ a).dtype == torch.bfloat16
    with autocast('cpu', False):
        assert (a @ a).dtype == torch.float32
    assert dtype_name('cpu', True) == 'bfloat16 (autocast)'
    assert dtype_name('cuda', True) == 'float16 (autocast)'
    assert dtype_name('cuda', False) == 'float32'


def test_environment_names_torch_and_triton():
    env = environment('cpu')
    assert env['torch'] == torch.__version__ and env['device'] == 'cpu'
    text = describe(env)
    assert torch.__version__ in text and 'Triton' in text

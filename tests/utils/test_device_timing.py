import pytest
import torch

from acmix_mm.utils.device_timing import (autocast, describe, dtype_name, environment,
                                          step_peak_mb, time_alternating)


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
    def step():
        x = torch.ones(32 * 2**20 // 4)  # 32 MiB, freed when the step returns
        return float(x.sum())
    assert 24 < step_peak_mb(step, 'cpu') < 200
    assert step_peak_mb(lambda: None, 'cpu') < 24


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

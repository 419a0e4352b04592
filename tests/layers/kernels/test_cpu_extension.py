"""The C++ kernels' build: instruction-set flags that follow the CPU, and where the kernels cannot
be built, one visible warning that names the cause and the fix."""
import platform
import warnings

import pytest
import torch.utils.cpp_extension

from acmix_mm.layers.kernels import cpu_extension


@pytest.fixture
def failing_build(monkeypatch):
    def load(**kwargs):
        raise RuntimeError('Ninja is required to load C++ extensions\n(more lines)')
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', load)
    cpu_extension.load_cpu_extension.cache_clear()
    yield
    cpu_extension.load_cpu_extension.cache_clear()  # the real kernels again for later tests


def test_one_warning_with_cause_and_fix(failing_build):
    with pytest.warns(RuntimeWarning) as record:
        assert cpu_extension.load_cpu_extension() is None
    message = str(record[0].message)
    assert 'RuntimeError: Ninja is required to load C++ extensions)' in message
    assert 'PyTorch fallback' in message
    assert 'python -m acmix_mm.layers.kernels.build' in message
    assert 'pip install ninja' in message
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a second warning would raise
        assert cpu_extension.load_cpu_extension() is None


@pytest.mark.parametrize('cpu,want', [
    ({'avx2', 'fma'}, ['-mavx2', '-mfma']),
    ({'avx2', 'fma', 'avx512f', 'avx512vl', 'avx512dq', 'avx512bw'},
     ['-mavx2', '-mfma', '-mavx512f', '-mavx512vl', '-mavx512dq', '-mavx512bw']),
    ({'avx2', 'fma', 'avx512f'}, ['-mavx2', '-mfma']),  # AVX-512 without VL/DQ/BW: not used
    ({'sse2', 'avx512f'}, []),
])
def test_isa_flags_follow_the_cpu(monkeypatch, cpu, want):
    monkeypatch.setattr(platform, 'machine', lambda: 'x86_64')
    monkeypatch.setattr(cpu_extension, '_cpu_flags', lambda: cpu)
    assert cpu_extension._isa_flags() == want


def kernels_in_profile(run):
    """Self CPU time (µs) of each ``acmix_mm::`` event that torch.profiler records over ``run``."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    return {e.key: e.self_cpu_time_total for e in prof.key_averages()
            if e.key.startswith('acmix_mm::')}


@pytest.mark.skipif(cpu_extension.load_cpu_extension() is None, reason='needs the C++ kernels')
def test_profiles_name_the_kernels_and_their_time():
    from acmix_mm.layers import ACmix
    from acmix_mm.models.layers.acmix_window_msa import ACmixShiftWindowMSA
    torch.manual_seed(0)
    layer = ACmix(16, 16, heads=2)
    x = torch.randn(1, 16, 12, 12, requires_grad=True)

    def infer():
        with torch.no_grad():
            layer.eval()(x)

    def train():
        layer.train()(x).sum().backward()

    swin = ACmixShiftWindowMSA(16, 2, 4, shift_size=2)
    tokens = torch.randn(1, 64, 16)

    def swin_infer():
        with torch.no_grad():
            swin(tokens, (8, 8))

    for run, names in ((infer, ['acmix_mm::acmix_mix_paths']),
                       (train, ['acmix_mm::acmix_mix_paths', 'acmix_mm::acmix_stage_backward']),
                       (swin_infer, ['acmix_mm::conv_path_forward'])):
        times = kernels_in_profile(run)
        for name in names:
            assert times.get(name, 0) > 0, (name, times)

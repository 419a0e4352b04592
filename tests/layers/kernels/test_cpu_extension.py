"""The C++ kernels build wherever a compiler is available; where they cannot be built, one
visible warning names the cause and the fix."""
import os
import shutil
import warnings

import pytest
import torch
import torch.utils.cpp_extension

from acmix_mm.layers.kernels import cpu_extension
from acmix_mm.layers.kernels.sliding_window_op import selected_backend


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


def test_kernels_build_where_a_compiler_is_available():
    """A failed build falls back silently but for one warning, which would let every kernel test
    compare the fallback with itself: on a machine with a compiler and ninja (the set-up needs
    both for mmcv) the kernels must load, and ``auto`` must select them."""
    compiler = os.environ.get('CXX', 'c++')
    if shutil.which(compiler) is None or not torch.utils.cpp_extension.is_ninja_available():
        pytest.skip(f'no C++ compiler ({compiler}) or no ninja: the fallback is expected here')
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the build-failure warning fails the test
        assert cpu_extension.load_cpu_extension() is not None
    if os.environ.get('ACMIX_MM_KERNEL', 'auto') == 'auto':
        assert selected_backend(torch.device('cpu'), torch.float32) == 'cpp'

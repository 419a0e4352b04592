"""Where the C++ kernels cannot be built, one visible warning names the cause and the fix."""
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

import sys

import pytest

from acmix_mm.testing.train_iteration import mmcv_ops_available

from . import load_tool


def load_placeholder():
    return load_tool('mmcv._ext', 'tools/analysis_tools/mmcv_ext_placeholder.py')


def test_every_compiled_function_exists_and_raises_naming_itself():
    ext = load_placeholder()
    assert hasattr(ext, 'roi_align_forward') and hasattr(ext, 'nms')  # mmcv's load_ext asserts
    with pytest.raises(RuntimeError, match="'roi_align_forward' is not available.*mmcv-lite"):
        ext.roi_align_forward(1, 2)
    with pytest.raises(AttributeError):
        ext.__path__  # not a package: imports below it fail as they should


def test_the_placeholder_does_not_count_as_mmcv_ops(monkeypatch):
    assert mmcv_ops_available()  # this environment builds mmcv with its ops
    monkeypatch.setitem(sys.modules, 'mmcv._ext', load_placeholder())
    assert not mmcv_ops_available()

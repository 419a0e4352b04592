import json
import os

import pytest
import torch

from acmix_mm.layers.kernels import cpu_extension

from . import load_tool

TOOL_PATH = 'tools/analysis_tools/compare_kernel_builds.py'
EXTENSION = cpu_extension.load_cpu_extension()
pytestmark = pytest.mark.skipif(EXTENSION is None, reason='needs the C++ kernels')
SMALL = [(16, 9, 1), (16, 12, 2)]


class Perturbed:
    """The extension with one kernel's result changed in one element by ``delta``."""

    def __init__(self, function: str, delta: float):
        self.function, self.delta = function, delta

    def __getattr__(self, name):
        real = getattr(EXTENSION, name)
        if name != self.function:
            return real

        def changed(*args):
            out = real(*args)
            first = out[0] if isinstance(out, (list, tuple)) else out
            first.view(-1)[3] += self.delta
            return out
        return changed


def test_the_same_build_twice_is_bitwise_equal_and_reported(tmp_path, monkeypatch):
    tool = load_tool('compare_kernel_builds', TOOL_PATH)
    monkeypatch.setattr(tool, 'SHAPES', SMALL)
    out = str(tmp_path / 'cmp')
    tool.main([EXTENSION.__file__, EXTENSION.__file__, '--rounds', '2', '--calls', '1',
               '--threads', '1', '--out', out])
    results = json.load(open(out + '.json'))
    assert [(r['channels'], r['side'], r['stride'], r['kernel']) for r in results] == [
        shape + (kernel,) for shape in SMALL for kernel in tool.KERNELS]
    for r in results:
        assert r['bitwise_equal'] and r['max_abs_difference'] == 0.0, r
        assert r['old_ms'] > 0 and r['new_ms'] > 0
        assert r['ratio'] == pytest.approx(r['new_ms'] / r['old_ms'])
    md = open(out + '.md').read()
    assert '| stage II backward | 16@12x12/2 |' in md and '--rounds 2' in md
    assert os.path.getsize(out + '.png') > 5000


@pytest.mark.parametrize('function, kernel', [
    ('sliding_window_forward', 'attention forward'),
    ('sliding_window_backward', 'attention backward'),
    ('acmix_mix_paths', 'stage II'),
    ('acmix_stage_backward', 'stage II backward'),
])
def test_a_build_with_other_results_is_named(function, kernel):
    tool = load_tool('compare_kernel_builds', TOOL_PATH)
    results = tool.compare(EXTENSION, Perturbed(function, 0.25), rounds=1, calls_per_run=1,
                           shapes=SMALL[:1], progress=lambda _: None)
    by_kernel = {r['kernel']: r for r in results}
    assert not by_kernel[kernel]['bitwise_equal']
    assert by_kernel[kernel]['max_abs_difference'] == pytest.approx(0.25, rel=1e-3)
    assert all(r['bitwise_equal'] for name, r in by_kernel.items() if name != kernel)


def test_the_kernels_are_those_the_layer_runs():
    """stage II as called here gives what the layer gives in inference (so the comparison times
    what a model runs)."""
    tool = load_tool('compare_kernel_builds', TOOL_PATH)
    layer = tool.ACmix(16, 16, stride=2).eval()
    x = torch.randn(1, 16, 12, 12, generator=torch.Generator().manual_seed(0))
    runs = tool.calls(layer, 12)
    with torch.no_grad():
        torch.testing.assert_close(runs['stage II'](EXTENSION), layer(x), rtol=0, atol=0)


class Recording:
    """The extension, noting ``tag`` in ``log`` at every call of one of the compared kernels."""

    def __init__(self, tag: str, log: list):
        self.tag, self.log = tag, log

    def __getattr__(self, name):
        real = getattr(EXTENSION, name)

        def noted(*args):
            self.log.append(self.tag)
            return real(*args)
        return noted


def test_each_timed_run_follows_a_call_of_its_own_build_and_the_builds_take_turns():
    """Timed in a fixed order, the second of one build loaded twice measured up to 17% faster
    than the first: the order must not favour either build."""
    tool = load_tool('compare_kernel_builds', TOOL_PATH)
    log = []
    tool.compare(Recording('old', log), Recording('new', log), rounds=3, calls_per_run=2,
                 shapes=SMALL[:1], progress=lambda _: None)
    kernels = len(tool.KERNELS)
    assert log[:2 * kernels] == ['old', 'new'] * kernels  # the equality check
    first, second = ['old'] * 3 + ['new'] * 3, ['new'] * 3 + ['old'] * 3
    assert log[2 * kernels:] == (first * kernels + second * kernels + first * kernels)

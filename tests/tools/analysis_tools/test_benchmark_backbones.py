import json
import os
import sys

import pytest
from torch import nn

import tool_process

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def test_benchmark_runs_on_a_tiny_case(tmp_path):
    out = tool_process.run(
        [sys.executable, 'tools/analysis_tools/benchmark_backbones.py', '--cases', 'qkv-1x1-512',
         'acmix-layer-512', '--repeat', '1', '--rounds', '1', '--batch', '2', '--out',
         str(tmp_path / 'bench')],
        cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.load(open(tmp_path / 'bench.json'))
    assert {(r['name'], r['mode']) for r in results} == {
        (n, m) for n in ('qkv-1x1-512', 'acmix-layer-512') for m in ('infer', 'train', 'memory')}
    memory = next(r for r in results if r['name'] == 'acmix-layer-512' and r['mode'] == 'memory')
    assert memory['peak_mb'] > 0
    # a training forward of the layer keeps its input alone: batch 2 of 512 x 7 x 7 floats
    assert memory['saved_mb'] * 2**20 == 2 * 512 * 7 * 7 * 4
    layer = next(r for r in results if r['name'] == 'acmix-layer-512' and r['mode'] == 'infer')
    proj = next(r for r in results if r['name'] == 'qkv-1x1-512' and r['mode'] == 'infer')
    assert layer['params_m'] > proj['params_m'] > 0 and layer['gflops'] > proj['gflops'] > 0
    # the layer was timed in one process with its baseline, whose time is the baseline's row
    assert layer['baseline_seconds'] >= proj['seconds'] > 0
    md = (tmp_path / 'bench.md').read_text()
    assert '| acmix-layer-512 | qkv-1x1-512 |' in md and 'x |' in md
    assert 'saved for backward (MB)' in md
    assert (tmp_path / 'bench.png').stat().st_size > 5000
    # timings with glibc keeping freed memory (as tools/train.py), memory with its defaults
    for r in results:
        assert ('keeps freed memory' if r['mode'] != 'memory' else
                "the C library's defaults") in r['allocator'], r
    assert 'glibc keeping freed memory for reuse (--cpu-allocator retain' in md


@pytest.mark.parametrize('norm_eval', [False, True])
def test_resnet_cases_share_their_batch_norm_mode(norm_eval, monkeypatch):
    """mmdet's ResNet defaults to frozen batch-norm statistics, ACmixResNet to training them: the
    benchmark gives both the same mode, so the training step compares like with like."""
    sys.path.insert(0, os.path.join(ROOT, 'tools', 'analysis_tools'))
    try:
        import benchmark_backbones as bench
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(bench, 'NORM_EVAL', norm_eval)
    modes = []
    for name in ('r50', 'acmix-r50'):
        model, _ = bench.build(name)
        model.train()
        modes.append({m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d)})
    assert modes == [{not norm_eval}] * 2


def test_in_process_path_applies_and_reports_the_allocator(tmp_path):
    """``--in-process`` (as ``--amp`` and CUDA) measures in the tool's own process, which takes
    ``--cpu-allocator`` and says so in the report."""
    out = tool_process.run(
        [sys.executable, 'tools/analysis_tools/benchmark_backbones.py', '--in-process',
         '--cases', 'qkv-1x1-512', 'acmix-layer-512', '--repeat', '1', '--cpu-allocator',
         'system', '--out', str(tmp_path / 'bench')],
        cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    md = (tmp_path / 'bench.md').read_text()
    assert "CPU allocator: the C library's defaults (--cpu-allocator system)" in md

import json
import os
import sys

import tool_process

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def test_detector_benchmark_runs_on_tiny_images(tmp_path):
    out = tool_process.run(
        [sys.executable, 'tools/analysis_tools/benchmark_detector.py', '--size', '64', '96',
         '--batch', '1', '--repeat', '1', '--rounds', '1', '--cpu-allocator', 'system', '--out',
         str(tmp_path / 'det')],
        cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = {(r['name'], r['mode']): r for r in json.load(open(tmp_path / 'det.json'))}
    names = ('mask-rcnn_r50', 'mask-rcnn_acmix-r50')
    assert set(results) == {(n, m) for n in names for m in ('train', 'memory')}
    assert all(r['seconds'] > 0 for r in results.values())
    assert all(results[(n, 'memory')]['peak_mb'] > 0 for n in names)
    # the two detectors timed in one process: ACmix's ratio is against that process's ResNet-50
    acmix, r50 = results[('mask-rcnn_acmix-r50', 'train')], results[('mask-rcnn_r50', 'train')]
    assert acmix['baseline_seconds'] == r50['seconds']
    assert 'baseline_seconds' not in r50
    # --cpu-allocator system: every worker keeps the C library's defaults
    assert all("the C library's defaults" in r['allocator'] for r in results.values())
    # the ResNet-50 backbone has 23.5M parameters, ACmix-ResNet-50 16.3M
    assert results[('mask-rcnn_acmix-r50', 'train')]['params_m'] < \
        results[('mask-rcnn_r50', 'train')]['params_m']
    md = (tmp_path / 'det.md').read_text()
    assert f'| {acmix["seconds"] / r50["seconds"]:.2f}x |' in md
    assert (tmp_path / 'det.png').stat().st_size > 5000

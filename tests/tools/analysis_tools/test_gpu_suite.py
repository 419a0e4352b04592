import json
import os
import subprocess
import sys

import torch

from . import ROOT, load_tool

SUITE = os.path.join(ROOT, 'tools/analysis_tools/gpu_suite.sh')


def run_suite(args, **env):
    return subprocess.run(['bash', SUITE] + args, cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHON=sys.executable, **env))


def test_usage_is_printed_and_a_missing_out_dir_refused():
    out = run_suite(['--help'])
    assert out.returncode == 0 and 'OUT_DIR' in out.stdout
    out = run_suite([])
    assert out.returncode == 2 and 'expected [--dry-run] OUT_DIR, got: nothing' in out.stderr


def test_dry_run_measures_the_layers_and_writes_the_report(tmp_path):
    # the plumbing, not the C++ kernel (whose first build alone can outlast a dry-run step);
    # the warm step runs the layers' shapes first, and its records stay out of the report
    out = run_suite(['--dry-run', str(tmp_path)], GPU_SUITE_STEPS='warm layers',
                    ACMIX_MM_KERNEL='python')
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # the device returns at most 8 files: the suite writes 4 here (+ up to 3 of the kernel checks)
    assert sorted(os.listdir(tmp_path)) == ['benchmarks.png', 'results.json', 'results.md',
                                            'suite.log']
    results = json.load(open(tmp_path / 'results.json'))
    assert results['dry_run'] and results['environment']['torch'] == torch.__version__
    assert [(s['step'], s['status']) for s in results['steps']] == [
        ('warm', 'ok'), ('layers_fp32', 'ok'), ('layers_amp', 'ok')]
    records = {(r['step'], r['name'], r['mode']): r for r in results['records']}
    assert set(records) == {(s, n, m) for s in ('layers_fp32', 'layers_amp')
                            for n in ('acmix-layer-512', 'qkv-1x1-512')
                            for m in ('infer', 'train', 'memory')}
    for r in records.values():
        assert r['device'] == 'cpu' and r['batch'] == 2 and r['seconds'] > 0
    for step in ('layers_fp32', 'layers_amp'):
        layer = records[(step, 'acmix-layer-512', 'train')]
        assert layer['baseline_seconds'] == records[(step, 'qkv-1x1-512', 'train')]['seconds']
        assert records[(step, 'acmix-layer-512', 'memory')]['peak_mb'] >= 0
    assert records[('layers_amp', 'acmix-layer-512', 'infer')]['dtype'] == 'bfloat16 (autocast)'
    md = (tmp_path / 'results.md').read_text()
    assert 'DRY RUN' in md and torch.__version__ in md and 'Triton' in md
    assert '| acmix-layer-512 | qkv-1x1-512 |' in md
    log = (tmp_path / 'suite.log').read_text()
    assert 'START layers_fp32' in log and 'END warm: ok' in log


def test_steps_past_the_deadline_are_reported_and_fail_the_suite(tmp_path):
    out = run_suite(['--dry-run', str(tmp_path)], GPU_SUITE_STEPS='layers', GPU_SUITE_LIMIT='1')
    assert out.returncode == 1
    steps = json.load(open(tmp_path / 'results.json'))['steps']
    assert [s['status'] for s in steps] == ['skipped (deadline)'] * 2
    assert 'layers_fp32 | skipped (deadline)' in (tmp_path / 'results.md').read_text()


def test_report_keeps_the_steps_that_ran_beside_one_that_timed_out(tmp_path):
    work, out = tmp_path / 'work', tmp_path / 'out'
    work.mkdir()
    (work / 'steps.tsv').write_text('layers_fp32\tok\t3s\nbackbones_fp32\ttimeout\t100s\n')
    (work / 'layers_fp32.md').write_text('| acmix-layer-64 | qkv-1x1-64 | table |')
    records = [dict(name='acmix-layer-64', mode='infer', device='cuda', batch=8, seconds=2.0,
                    baseline_seconds=1.0, baseline='qkv-1x1-64'),
               dict(name='qkv-1x1-64', mode='infer', device='cuda', batch=8, seconds=1.0)]
    (work / 'layers_fp32.json').write_text(json.dumps(records))
    report = load_tool('gpu_suite_report', 'tools/analysis_tools/gpu_suite_report.py')
    assert report.main(['--work', str(work), '--out', str(out)]) == 0
    md = (out / 'results.md').read_text()
    assert '| backbones_fp32 | timeout | 100s |' in md and '| acmix-layer-64 | qkv-1x1-64 |' in md
    saved = json.load(open(out / 'results.json'))
    assert [r['step'] for r in saved['records']] == ['layers_fp32'] * 2
    assert saved['records'][0]['baseline_seconds'] == 1.0
    assert (out / 'benchmarks.png').stat().st_size > 5000  # the 2.0x inference ratio
    assert not (out / 'training_iteration.png').exists()  # no training iteration was measured

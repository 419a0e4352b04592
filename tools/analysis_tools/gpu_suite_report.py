"""Combines the results of ``tools/analysis_tools/gpu_suite.sh`` into OUT/results.md,
OUT/results.json, OUT/benchmarks.png and OUT/training_iteration.png.

    python tools/analysis_tools/gpu_suite_report.py --work WORK_DIR --out OUT_DIR [--dry-run]

WORK_DIR holds ``steps.tsv`` (one line per step: name, status, detail) and each benchmark step's
``<step>.json`` / ``<step>.md``, as the suite writes them. ``results.json`` holds ``environment``
(the GPU, torch, CUDA, Triton and Python versions), ``steps`` and ``records``: every record of
the benchmarks (``name``, ``mode``, ``device``, ``batch``, ``seconds``, ``baseline_seconds``,
``peak_mb``, ``dtype`` ..., and ``step``: the step that measured it).
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

SECTIONS = [  # step-name prefix, heading
    ('layers', 'One ACmix layer / its three 1x1 projections'),
    ('backbones', 'Backbones: ACmix / baseline'),
    ('upernet', 'UperNet training iteration: ACmix / baseline'),
    ('mask_rcnn', 'Mask R-CNN training iteration: ACmix-R50 / R50'),
]


def read_steps(work: str) -> List[Dict[str, str]]:
    path = osp.join(work, 'steps.tsv')
    if not osp.exists(path):
        return []
    with open(path) as f:
        return [dict(zip(('step', 'status', 'detail'), line.rstrip('\n').split('\t', 2)))
                for line in f if line.strip()]


def float32_first(path: str) -> tuple:
    """Sort key of the steps' files: ``<step>_fp32`` before ``<step>_amp``."""
    return osp.splitext(path)[0].endswith('_amp'), path


def read_records(work: str) -> List[dict]:
    records = []
    for path in sorted(glob.glob(osp.join(work, '*.json')), key=float32_first):
        step = osp.splitext(osp.basename(path))[0]
        with open(path) as f:
            for record in json.load(f):
                records.append(dict(record, step=step))
    return records


def ratio_rows(records: List[dict], prefix: str) -> List[tuple]:
    """(label, time ratio, memory ratio) of the records with a baseline among the steps
    ``prefix*``; training rows of the backbone benchmark get their memory ratio from the
    ``memory`` records."""
    peaks = {(r['step'], r['name']): r['peak_mb'] for r in records if r.get('peak_mb')}
    rows = []
    for r in records:
        if not r['step'].startswith(prefix) or 'baseline_seconds' not in r:
            continue
        base = r.get('baseline') or r['name'].replace('acmix-layer', 'qkv-1x1').replace(
            'acmix-', '')
        mine = r.get('peak_mb') or peaks.get((r['step'], r['name']))
        theirs = r.get('baseline_peak_mb') or peaks.get((r['step'], base))
        memory = mine / theirs if r['mode'] == 'train' and mine and theirs else None
        label = f'{r["name"]} {r["mode"]}\n{r.get("dtype", "float32").split(" ")[0]}'
        rows.append((label, r['seconds'] / r['baseline_seconds'], memory))
    return rows


def plot(rows: List[tuple], path: str, title: str) -> Optional[str]:
    if not rows:
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 4.5))
    x = range(len(rows))
    for offset, values, label in ((-0.2, [r[1] for r in rows], 'time'),
                                  (0.2, [r[2] for r in rows], 'peak memory (training)')):
        shown = [(i + offset, v) for i, v in zip(x, values) if v]
        bars = ax.bar([p for p, _ in shown], [v for _, v in shown], 0.4, label=label)
        ax.bar_label(bars, [f'{v:.2f}' for _, v in shown], fontsize=6)
    ax.set_yscale('log')  # ratios from below 1 to far above it stay readable
    ax.axhline(1, color='k', linewidth=0.8)
    ax.set_xticks(list(x), [r[0] for r in rows], fontsize=7, rotation=30, ha='right')
    ax.set_ylabel('ACmix / baseline (same process)')
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return osp.basename(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work', required=True, help="the suite's working folder")
    parser.add_argument('--out', required=True, help='where the results go')
    parser.add_argument('--elapsed', type=int, default=None, help="the suite's seconds so far")
    parser.add_argument('--dry-run', action='store_true', help='the suite ran on the CPU')
    args = parser.parse_args(argv)
    if not osp.isdir(args.work):
        parser.error(f'--work {args.work!r} is not a folder')
    from acmix_mm.utils.device_timing import describe, environment
    import torch
    steps, records = read_steps(args.work), read_records(args.work)
    env = next((r['environment'] for r in records if 'environment' in r),
               environment('cuda' if torch.cuda.is_available() and not args.dry_run else 'cpu'))
    for r in records:
        r.pop('environment', None)
    os.makedirs(args.out, exist_ok=True)
    machine = describe(env)
    title = f'{env["device_name"]}, torch {env["torch"]}, Triton {env["triton"]}'
    charts = [plot(ratio_rows(records, 'layers') + ratio_rows(records, 'backbones'),
                   osp.join(args.out, 'benchmarks.png'), title),
              plot(ratio_rows(records, 'upernet') + ratio_rows(records, 'mask_rcnn'),
                   osp.join(args.out, 'training_iteration.png'), title)]
    lines = ['# GPU suite results' + (' (DRY RUN on the CPU: plumbing only, numbers mean '
                                      'nothing)' if args.dry_run else ''), '',
             f'Machine: {machine}.', '',
             'Command: `bash tools/analysis_tools/gpu_suite.sh'
             f'{" --dry-run" if args.dry_run else ""} OUT_DIR`'
             + (f', {args.elapsed} s.' if args.elapsed is not None else '.'), '',
             '| step | status | detail |', '|---|---|---|']
    lines += [f'| {s["step"]} | {s["status"]} | {s["detail"]} |' for s in steps]
    kernel_files = sorted(f for f in os.listdir(args.out) if f.startswith('kernel'))
    if kernel_files:
        lines += ['', f'Kernel checks: {", ".join(kernel_files)}.']
    for prefix, heading in SECTIONS:
        parts = sorted(glob.glob(osp.join(args.work, f'{prefix}_*.md')), key=float32_first)
        if not parts:
            continue
        lines += ['', f'## {heading}']
        for path in parts:
            with open(path) as f:
                lines += ['', f'### {osp.splitext(osp.basename(path))[0]}', '', f.read().strip()]
    lines += [''] + [f'![{c}]({c})' for c in charts if c]
    with open(osp.join(args.out, 'results.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    with open(osp.join(args.out, 'results.json'), 'w') as f:
        json.dump(dict(environment=env, dry_run=args.dry_run, elapsed_seconds=args.elapsed,
                       steps=steps, records=records), f, indent=1)
    print(f'wrote {args.out}/results.md, results.json'
          + ''.join(f', {c}' for c in charts if c))
    return 0


if __name__ == '__main__':
    sys.exit(main())

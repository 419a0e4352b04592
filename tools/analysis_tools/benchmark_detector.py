"""Time and peak memory of one Mask R-CNN training iteration, ACmix-ResNet-50 against mmdet's
ResNet-50, at a detection image size (default: batch 2 of 800x1333, as the COCO 1x schedule).

The two detectors are timed in one fresh process, their iterations alternating so that a slow
spell of the machine hits both (each case's memory in a process of its own, see
:mod:`acmix_mm.utils.benchmarking`), over ``--rounds`` passes; the ratio is the fastest pass's.
Writes a markdown table with the ratios and a PNG chart.

    python tools/analysis_tools/benchmark_detector.py --out docs/benchmarks_mask_rcnn \
        [--size 800 1333] [--batch 2] [--repeat 2] [--rounds 2] [--threads 2]
        [--proposals seeded|model] [--device cpu|cuda] [--amp]

With ``--device cuda`` or ``--amp`` both models are built in this process and whole training
iterations (mmengine ``train_step``: forward, losses, backward, AdamW step; AmpOptimWrapper with
``--amp`` on CUDA) alternate, peak memory read from the CUDA allocator
(:mod:`acmix_mm.testing.train_iteration`). Mask R-CNN needs mmcv's compiled ops (RoIAlign, nms).
"""
import argparse
import json
import os
import os.path as osp
import platform
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
from acmix_mm.utils.argument_types import positive_int  # noqa: E402
from acmix_mm.utils.cpu_allocator import (add_cpu_allocator_argument,  # noqa: E402
                                           configure_cpu_allocator)
from acmix_mm.utils.benchmarking import (allocator_note, fastest_over_rounds,  # noqa: E402
                                         peak_rss_bytes, reset_peak_rss, run_worker,
                                         write_report)

CASES = {  # name -> (config, baseline)
    'mask-rcnn_r50': ('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', None),
    'mask-rcnn_acmix-r50': (osp.join(ROOT, 'configs/mmdet/mask-rcnn_acmix-r50_fpn_1x_coco.py'),
                            'mask-rcnn_r50'),
}


PROPOSAL_NOTES = {
    'seeded': 'the RoI heads of both train on the same seeded random proposals (1000 per image, '
              '`--proposals seeded`: the RPNs run as always, their proposals are replaced)',
    'model': 'each RoI head trains on its own RPN\'s proposals (`--proposals model`; at random '
             'initialisation their sizes, and so RoIAlign\'s cost, differ by chance)',
}


def prepare(name, size, batch, proposals):
    """One case's training iteration in this process: ``(step, backbone params in millions)``.
    With ``proposals='seeded'`` (``--proposals``) the RoI head trains on
    :func:`~acmix_mm.testing.seeded_proposals.seeded_proposals` and every iteration starts from
    the same random state (so its RoI sampling picks the same RoIs), whatever the backbone."""
    import torch
    from mmdet.registry import MODELS

    import acmix_mm  # noqa: F401
    from acmix_mm.testing import build_model, detection_batch, framework_model_cfg
    model = build_model(MODELS, framework_model_cfg(CASES[name][0]))
    model.train()
    if proposals == 'seeded':
        from acmix_mm.testing.seeded_proposals import use_seeded_proposals
        use_seeded_proposals(model)
    data = model.data_preprocessor(detection_batch(batch, tuple(size)), True)
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        if proposals == 'seeded':
            torch.manual_seed(0)
        losses = model(**data, mode='loss')
        sum(v.sum() if isinstance(v, torch.Tensor) else sum(v) for v in losses.values()).backward()
        for p in params:
            p.grad = None

    return step, sum(p.numel() for p in model.backbone.parameters()) / 1e6


def measure(names, mode, size, batch, repeat, proposals):
    """Training iterations of the cases ``names`` in this process, one result each. Mode
    ``train``: the cases' iterations alternate, so that a slow spell of the machine hits them
    alike, and each reports its fastest; with two names (a case and its baseline) the first gets
    ``baseline_seconds``, the second's in this process. Mode ``memory`` (one case): the growth of
    the peak resident memory over one iteration."""
    cases = [prepare(name, size, batch, proposals) for name in names]
    for step, _ in cases:
        step()  # warm-up
    base = reset_peak_rss()
    times = [[] for _ in cases]
    for _ in range(1 if mode == 'memory' else repeat):
        for (step, _), case_times in zip(cases, times):
            start = time.perf_counter()
            step()
            case_times.append(time.perf_counter() - start)
    results = [dict(name=name, mode=mode, seconds=min(case_times), params_m=params_m)
               for name, (_, params_m), case_times in zip(names, cases, times)]
    if mode == 'memory':
        results[0]['peak_mb'] = max(0, peak_rss_bytes() - base) / 2**20
    if len(results) == 2:
        results[0]['baseline_seconds'] = results[1]['seconds']
    return results


def run_case(args, name, mode):
    """A case's timing, paired with its baseline in one process, or its memory, alone."""
    paired = ['--paired', CASES[name][1]] if mode == 'train' and CASES[name][1] else []
    return run_worker(osp.abspath(__file__),
                      ['--worker', name, mode, *paired, '--size', *map(str, args.size),
                       '--batch', str(args.batch), '--repeat', str(args.repeat), '--proposals',
                       args.proposals, '--cpu-allocator',
                       'system' if mode == 'memory' else args.cpu_allocator], args.threads,
                      measure_memory=mode == 'memory')


def table(best):
    rows = ['| model | backbone params (M) | train iteration (s) | time ratio | peak memory (MB) | '
            'memory ratio |', '|---|---|---|---|---|---|']
    for name, (_, base) in CASES.items():
        t, m = best[(name, 'train')], best[(name, 'memory')]
        bm = best[(base, 'memory')] if base else None
        rows.append(f'| {name} | {t["params_m"]:.2f} | {t["seconds"]:.2f} | '
                    f'{t["seconds"] / t["baseline_seconds"]:.2f}x | {m["peak_mb"]:.0f} | '
                    f'{m["peak_mb"] / bm["peak_mb"]:.2f}x |' if base else
                    f'| {name} | {t["params_m"]:.2f} | {t["seconds"]:.2f} | | '
                    f'{m["peak_mb"]:.0f} | |')
    return '\n'.join(rows)


def plot(best, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = list(CASES)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].bar(names, [best[(n, 'train')]['seconds'] for n in names], color=['C0', 'C1'])
    axes[0].set_ylabel('training iteration (s)')
    axes[1].bar(names, [best[(n, 'memory')]['peak_mb'] / 1024 for n in names], color=['C0', 'C1'])
    axes[1].set_ylabel('peak memory (GiB)')
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main_in_process(args, argv):
    """``--device cuda`` / ``--amp``: both models' training iterations in this process."""
    import torch
    from mmdet.registry import MODELS

    import acmix_mm  # noqa: F401
    from acmix_mm.testing import detection_batch
    from acmix_mm.testing.train_iteration import (measure_pair, mmcv_ops_available,
                                                  write_iteration_report)
    if not mmcv_ops_available():
        raise SystemExit("Mask R-CNN needs mmcv's compiled ops (RoIAlign, nms), which this mmcv "
                         'lacks (mmcv-lite); install mmcv 2.1.0 built with its ops')
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: torch.cuda.is_available() is False on this machine')
    allocator = configure_cpu_allocator(args.cpu_allocator, on_cpu=args.device == 'cpu')
    torch.manual_seed(0)
    records = measure_pair(MODELS, {name: config for name, (config, _) in CASES.items()},
                           ['mask-rcnn_acmix-r50', 'mask-rcnn_r50'],
                           detection_batch(args.batch, tuple(args.size)), args.device, args.amp,
                           args.repeat)
    return write_iteration_report(
        args.out, 'tools/analysis_tools/benchmark_detector.py',
        argv if argv is not None else sys.argv[1:],
        f'One Mask R-CNN training iteration (mmengine `train_step`: forward, losses, backward, '
        f'AdamW step) on a batch of {args.batch} random {args.size[0]}x{args.size[1]} images '
        f'with 3 boxes and masks each; {allocator}', args.device, args.amp, args.repeat, 2,
        records, [])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--worker', nargs=2, metavar=('CASE', 'MODE'), help=argparse.SUPPRESS)
    parser.add_argument('--paired', metavar='BASELINE', help=argparse.SUPPRESS)
    parser.add_argument('--size', nargs=2, type=positive_int, default=[800, 1333],
                        metavar=('H', 'W'))
    parser.add_argument('--batch', type=positive_int, default=2)
    parser.add_argument('--repeat', type=positive_int, default=2,
                        help='timed iterations per process')
    parser.add_argument('--rounds', type=positive_int, default=2,
                        help='alternating passes over the cases')
    parser.add_argument('--threads', type=positive_int, default=2, help='OMP threads per case')
    add_cpu_allocator_argument(
        parser, help='malloc of the timing runs, as tools/train.py\'s: "retain" keeps freed '
        'memory for reuse, "system" the defaults (memory workers always run the defaults, see '
        'acmix_mm.utils.benchmarking)')
    parser.add_argument('--out', default='docs/benchmarks_mask_rcnn', help='path prefix')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--amp', action='store_true',
                        help='float16 AmpOptimWrapper on CUDA (bfloat16 autocast on the CPU)')
    parser.add_argument(
        '--proposals', choices=['seeded', 'model'], default=None,
        help='what the RoI heads train on (CPU, one process per case): "seeded" (default) the '
        'same seeded random proposals for both detectors, so that their RoI heads do the same '
        'work (see acmix_mm/testing/seeded_proposals.py), "model" each RPN\'s own (at random '
        'initialisation their sizes, and so RoIAlign\'s cost, differ by chance); with --device '
        'cuda or --amp only "model"')
    args = parser.parse_args(argv)
    in_process = args.device == 'cuda' or args.amp
    if args.proposals == 'seeded' and in_process:
        parser.error('--proposals seeded: only for the CPU measurement in one process per case; '
                     'with --device cuda or --amp the detectors train on their own proposals '
                     '(--proposals model)')
    args.proposals = args.proposals or ('model' if in_process else 'seeded')
    if args.worker:
        note = configure_cpu_allocator(args.cpu_allocator, on_cpu=True)
        name, mode = args.worker
        results = measure([name] + ([args.paired] if args.paired else []), mode, args.size,
                          args.batch, args.repeat, args.proposals)
        print(json.dumps([dict(r, allocator=note) for r in results]))
        return 0
    if in_process:
        return main_in_process(args, argv)
    from mmengine.utils import ProgressBar
    # each case with a baseline is timed with it in one process; memory one case a process
    jobs = [(name, 'train') for name, (_, base) in CASES.items() if base]
    jobs += [(name, 'memory') for name in CASES]
    best = fastest_over_rounds(jobs, lambda *job: run_case(args, *job), args.rounds,
                               ProgressBar(len(jobs) * args.rounds))
    sys.stdout.write('\n')
    md = table(best)
    print(md)
    import torch
    write_report(
        args.out, 'tools/analysis_tools/benchmark_detector.py',
        argv if argv is not None else sys.argv[1:],
        f'Machine: {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads per '
        f'case, CPU; torch {torch.__version__}; {allocator_note(args.cpu_allocator)}. One '
        f'Mask R-CNN training iteration (forward, losses, backward) on a batch of '
        f'{args.batch} random {args.size[0]}x{args.size[1]} images with 3 boxes and masks '
        f'each (`configs/mmdet/mask-rcnn_acmix-r50_fpn_1x_coco.py` against mmdet\'s '
        f'`mask-rcnn_r50_fpn_1x_coco.py`); {PROPOSAL_NOTES[args.proposals]}. The two '
        f'detectors are timed in one process, their iterations alternating: fastest of '
        f'{args.repeat} iterations each, the fastest of {args.rounds} such processes; the '
        f'ratio is that process\'s. Peak memory: growth of the peak resident memory over one '
        f'iteration, in a process of its own that returns freed memory at once.', md,
        list(best.values()))
    plot(best, args.out + '.png')
    print(f'wrote {args.out}.md, {args.out}.json and {args.out}.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Benchmark ACmix backbones against the frameworks' baselines: params, FLOPs (mmengine's
analysis), inference latency and throughput, training-step time, the bytes that a training forward
keeps for the backward, and peak memory.

Every case runs in a fresh process so that peak memory is that case's alone. Writes a markdown
table (with ratios against the baseline measured in the same run) and a PNG chart.

    python tools/analysis_tools/benchmark_backbones.py --out docs/benchmarks \
        [--cases acmix-r50 r50 acmix-swin-t swin-t ...] [--infer-size 224] [--train-size 512]
        [--size S] [--batch B] [--device cpu|cuda] [--amp] [--threads 2] [--repeat 5]

With ``--device cuda``, ``--amp`` or ``--in-process`` every case is measured in this one process
(see :func:`main_in_process`): each case and its baseline alternate step by step, the training
step's peak memory is read from the CUDA allocator (no process of its own is needed), and
``--amp`` runs under float16 autocast (bfloat16 on the CPU).
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
import traceback

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from acmix_mm.utils.argument_types import positive_int  # noqa: E402
from acmix_mm.utils.cpu_allocator import (add_cpu_allocator_argument,  # noqa: E402
                                           configure_cpu_allocator)
from acmix_mm.utils.benchmarking import (allocator_note, fastest_over_rounds,  # noqa: E402
                                         peak_rss_bytes, reset_peak_rss, run_worker,
                                         saved_tensor_storages, write_report)

# name -> (baseline name or None, builder kind, arguments). The ResNets' batch norms get the same
# ``norm_eval`` (see ``--norm-eval``): mmdet's ResNet defaults to frozen statistics, ACmixResNet
# (as mmseg's and mmpretrain's ResNets) to training them.
CASES = {
    'r50': (None, 'mmdet', dict(type='ResNet', depth=50)),
    'acmix-r50': ('r50', 'mmdet', dict(type='ACmixResNet', depth=50)),
    'swin-t': (None, 'mmdet', dict(type='SwinTransformer')),
    'acmix-swin-t': ('swin-t', 'mmdet', dict(type='ACmixSwinTransformer')),
    'swin-s': (None, 'mmdet', dict(type='SwinTransformer', depths=(2, 2, 18, 2))),
    'acmix-swin-s': ('swin-s', 'mmdet', dict(type='ACmixSwinTransformer', depths=(2, 2, 18, 2))),
}
# ResNet-50 stage shapes of the 3x3 position: (channels, feature size at 224x224)
for c, s in ((64, 56), (128, 28), (256, 14), (512, 7)):
    CASES[f'qkv-1x1-{c}'] = (None, 'layer', dict(channels=c, size=s, acmix=False))
    CASES[f'acmix-layer-{c}'] = (f'qkv-1x1-{c}', 'layer', dict(channels=c, size=s, acmix=True))
DEFAULT_CASES = ['r50', 'acmix-r50', 'swin-t', 'acmix-swin-t', 'qkv-1x1-64', 'acmix-layer-64',
                 'qkv-1x1-128', 'acmix-layer-128', 'qkv-1x1-256', 'acmix-layer-256',
                 'qkv-1x1-512', 'acmix-layer-512']


NORM_EVAL = False  # set by --norm-eval


def build(name):
    import torch
    from torch import nn
    _, kind, args = CASES[name]
    if kind == 'mmdet':
        import acmix_mm  # noqa: F401
        from mmdet.registry import MODELS
        from mmengine.registry import init_default_scope
        init_default_scope('mmdet')
        if args['type'].endswith('ResNet'):
            args = dict(args, norm_eval=NORM_EVAL)
        return MODELS.build(dict(args)), None
    from acmix_mm.layers import ACmix
    from acmix_mm.layers.projection import project_1x1
    c, s = args['channels'], args['size']
    if args['acmix']:
        return ACmix(c, c), s

    class ThreeProjections(nn.Module):
        """The shared Stage I of ACmix alone: its three 1x1 projections, run as ACmix runs them
        (one product, :func:`~acmix_mm.layers.projection.project_1x1`), so the ratio is the cost
        of everything else."""

        def __init__(self):
            super().__init__()
            self.in_channels = c
            self.q, self.k, self.v = (nn.Conv2d(c, c, 1) for _ in range(3))

        def forward(self, x):
            weight = torch.cat([self.q.weight, self.k.weight, self.v.weight]).view(3 * c, c)
            bias = torch.cat([self.q.bias, self.k.bias, self.v.bias])
            return project_1x1(x, weight, bias)

    return ThreeProjections(), s


def count_gflops(model, x):
    """mmengine's FLOP count (with ACmix's handles); None where mmengine is not installed (the
    layer cases need nothing but torch, e.g. on a bare GPU machine)."""
    try:
        from acmix_mm.utils.flop_count import acmix_flop_analyzer
    except ImportError:
        return None
    return acmix_flop_analyzer(model, (x, )).total() / 1e9


def build_with_input(name, size, device, batch):
    """The case's model on ``device`` and a random input batch; layer cases keep their own
    ``(channels, size)``. Returns ``(model, x, size)``."""
    import torch
    model, fixed = build(name)
    model.to(device)
    hw = fixed or size
    x = torch.randn(batch, model.in_channels if fixed else 3, hw, hw, device=device)
    return model, x, hw


def prepare(name, mode, size, device, batch):
    """Builds one case: its result dict (no timings yet), step function and grad context."""
    import torch
    model, x, hw = build_with_input(name, size, device, batch)
    result = dict(name=name, mode=mode, size=hw, batch=batch, device=device,
                  params_m=sum(p.numel() for p in model.parameters()) / 1e6)
    if mode == 'infer':
        model.eval()
        result['gflops'] = count_gflops(model, x[:1])
        return result, lambda: model(x), torch.no_grad
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        out = model(x)
        loss = sum(o.float().mean() for o in (out if isinstance(out, (list, tuple)) else [out]))
        loss.backward()
        for p in params:
            p.grad = None
    step.saved_mb = lambda: saved_mb(model, x)
    return result, step, torch.enable_grad


def saved_mb(model, x):
    """MB of the storages a training forward keeps for the backward (the activations; each
    storage once, the parameters left out)."""
    saved, _ = saved_tensor_storages(lambda: model(x), exclude=list(model.parameters()))
    return sum(saved.values()) / 2**20


def measure(names, mode, size, device, repeat, batch):
    """Cases ``names`` in this process, their timed steps alternating step by step so that a slow
    spell of the machine hits them alike; returns one result dict per case. With two names the
    first gets ``baseline_seconds``, the second's time in the same process. Mode ``memory``
    (one case) measures the training step's peak, in a process that returns freed memory."""
    import torch
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    cases = [prepare(n, 'train' if mode == 'memory' else mode, size, device, batch)
             for n in names]
    for _, step, ctx in cases:
        with ctx():
            step()  # warm-up
    sync()
    if mode == 'memory':
        repeat = 1
        if device == 'cuda':
            torch.cuda.reset_peak_memory_stats()
        base = reset_peak_rss()
    times = [[] for _ in cases]
    for _ in range(repeat):
        for (_, step, ctx), case_times in zip(cases, times):
            with ctx():
                t = time.perf_counter()
                step()
                sync()
                case_times.append(time.perf_counter() - t)
    results = []
    for (result, _, _), case_times in zip(cases, times):
        result.update(mode=mode, seconds=min(case_times))  # the least disturbed run
        result['throughput'] = batch / result['seconds']
        results.append(result)
    if mode == 'memory':
        results[0]['peak_mb'] = (torch.cuda.max_memory_allocated() / 2**20 if device == 'cuda'
                                 else max(0, peak_rss_bytes() - base) / 2**20)
        with torch.enable_grad():
            results[0]['saved_mb'] = cases[0][1].saved_mb()
    if len(results) == 2:
        results[0]['baseline_seconds'] = results[1]['seconds']
    return results


class TextProgress:
    """Progress lines where mmengine's ProgressBar is unavailable."""

    def __init__(self, total):
        self.total, self.done = total, 0

    def update(self):
        self.done += 1
        print(f'[{self.done}/{self.total}]', flush=True)


def run_case(args, name, mode, size):
    """Runs one case in a fresh process, timed against its baseline in that process where the
    baseline is benchmarked too; training memory is measured in a process of its own (see
    :mod:`acmix_mm.utils.benchmarking`, with the C library's malloc defaults); timings with
    ``--cpu-allocator``."""
    base = CASES[name][0]
    paired = ['--paired', base] if mode != 'memory' and base in args.cases else []
    return run_worker(osp.abspath(__file__),
                      ['--worker', name, mode, str(size), '--device', args.device, '--repeat',
                       str(args.repeat), '--batch', str(args.batch), '--cpu-allocator',
                       'system' if mode == 'memory' else args.cpu_allocator] + paired +
                      (['--norm-eval'] if args.norm_eval else []), args.threads,
                      measure_memory=mode == 'memory')


def fmt(value):
    return '-' if value is None else f'{value:.2f}'


def fmt_ratio(value):
    return '' if value is None else f'{value:.2f}x'


# the targets of issue 12 (CPU): ACmix / baseline, drawn as lines on the chart
TARGETS = {('acmix-r50', 'infer'): 1.15, ('acmix-r50', 'train'): 1.35,
           ('acmix-r50', 'saved'): 1.05, ('acmix-swin-t', 'infer'): 1.0,
           ('acmix-swin-t', 'train'): 1.0, ('acmix-layer-64', 'infer'): 3.0,
           ('acmix-layer-64', 'train'): 5.0}
RATIO_KINDS = ('infer', 'train', 'saved', 'memory')


def case_ratios(name, by):
    """ACmix / baseline of case ``name`` per kind of :data:`RATIO_KINDS` (None where unmeasured);
    ``by`` maps ``(name, mode)`` to results."""
    inf, tr, mem = (by.get((name, m)) for m in ('infer', 'train', 'memory'))
    bmem = by.get((CASES[name][0], 'memory'))
    ratios = {k: r['seconds'] / r['baseline_seconds'] if r and 'baseline_seconds' in r else None
              for k, r in (('infer', inf), ('train', tr))}
    for kind, key in (('saved', 'saved_mb'), ('memory', 'peak_mb')):
        ratios[kind] = (mem[key] / bmem[key] if mem and bmem and mem.get(key) is not None
                        and bmem.get(key) else None)
    return ratios


def table(results):
    by = {(r['name'], r['mode']): r for r in results}
    rows = ['| case | baseline | params (M) | GFLOPs | infer latency (ms) | infer ratio | '
            'train step (ms) | train ratio | saved for backward (MB) | saved ratio | '
            'train peak mem (MB) | mem ratio |',
            '|---|---|---|---|---|---|---|---|---|---|---|---|']
    ratios = {}
    for name in dict.fromkeys(r['name'] for r in results):
        inf, tr, mem = (by.get((name, m)) for m in ('infer', 'train', 'memory'))
        base = CASES[name][0]
        r = case_ratios(name, by)
        rows.append(
            f'| {name} | {base or "-"} | {inf["params_m"]:.2f} | {fmt(inf["gflops"])} | '
            f'{inf["seconds"] * 1e3:.1f} | {fmt_ratio(r["infer"])} | '
            + (f'{tr["seconds"] * 1e3:.1f} | {fmt_ratio(r["train"])} | ' if tr else ' | | ')
            + (f'{fmt(mem.get("saved_mb"))} | {fmt_ratio(r["saved"])} | '
               f'{mem["peak_mb"]:.0f} | {fmt_ratio(r["memory"])} |' if mem else ' | | | |'))
        if base:
            ratios[name] = r
    return '\n'.join(rows), ratios


def plot(ratios, path):
    """Bars of ACmix / baseline per case and kind, the targets as black lines over their bars."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(11, 4.5))
    labels = {'infer': 'inference time', 'train': 'training step time',
              'saved': 'saved for backward', 'memory': 'training peak memory'}
    width = 0.8 / len(RATIO_KINDS)
    for i, kind in enumerate(RATIO_KINDS):
        xs = [c + (i - (len(RATIO_KINDS) - 1) / 2) * width for c in range(len(ratios))]
        values = [r[kind] or 0 for r in ratios.values()]
        bars = ax.bar(xs, values, width, label=labels[kind], color=f'C{i}')
        ax.bar_label(bars, [f'{v:.2f}' if v else '' for v in values], fontsize=6, rotation=90,
                     padding=2)
        for x, name in zip(xs, ratios):
            target = TARGETS.get((name, kind))
            if target is not None:
                ax.hlines(target, x - width / 2, x + width / 2, colors='k', linewidth=2.5,
                          label='target' if 'target' not in ax.get_legend_handles_labels()[1]
                          else None)
    ax.axhline(1, color='grey', linewidth=0.8, linestyle='--')
    ax.set_xticks(range(len(ratios)), list(ratios), rotation=15)
    ax.set_yscale('log')  # ratios: 2x and 0.5x equally far from 1
    ax.set_ylabel('ACmix / baseline (same process), log scale')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def prepare_in_process(name, mode, size, device, batch, amp):
    """Builds one case for :func:`main_in_process`: its result dict and step function (the
    forward under autocast with ``amp``, the loss and backward outside it, the loss scaled as
    a float16 GradScaler scales it)."""
    import torch

    from acmix_mm.utils.device_timing import autocast, dtype_name
    model, x, hw = build_with_input(name, size, device, batch)
    result = dict(name=name, mode=mode, size=hw, batch=batch, device=device,
                  dtype=dtype_name(device, amp), gflops=None,
                  params_m=sum(p.numel() for p in model.parameters()) / 1e6)
    if mode == 'infer':
        model.eval()

        @torch.no_grad()
        def infer():
            with autocast(device, amp):
                model(x)
        return result, infer
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    scaler = torch.amp.GradScaler(device) if amp and device == 'cuda' else None

    def step():
        with autocast(device, amp):
            out = model(x)
        loss = sum(o.float().mean() for o in (out if isinstance(out, (list, tuple)) else [out]))
        (scaler.scale(loss) if scaler else loss).backward()
        for p in params:
            p.grad = None
    return result, step


def case_groups(names):
    """``names`` grouped for timing: each case with its baseline where that is listed too (the
    case first), every other case alone."""
    paired_baselines = {CASES[n][0] for n in names if CASES[n][0] in names}
    groups = []
    for n in names:
        if n not in paired_baselines:
            groups.append([n] + ([CASES[n][0]] if CASES[n][0] in names else []))
    return groups


def measure_in_process(names, mode, size, device, repeat, batch, amp):
    """Cases ``names`` in this process, steps alternating (:mod:`acmix_mm.utils.device_timing`);
    the first gets ``baseline_seconds`` where there are two. Training also yields one ``memory``
    record per case: the step's peak memory over the state before it."""
    from acmix_mm.utils.device_timing import step_peak_mb, time_alternating
    cases = [prepare_in_process(n, mode, size, device, batch, amp) for n in names]
    seconds = time_alternating([step for _, step in cases], device, repeat)
    results = []
    for (result, step), t in zip(cases, seconds):
        result.update(seconds=t, throughput=batch / t)
        results.append(result)
        if mode == 'train':
            results.append(dict(result, mode='memory', peak_mb=step_peak_mb(step, device)))
    if len(names) == 2:
        results[0].update(baseline=names[1],
                          baseline_seconds=results[1 if mode == 'infer' else 2]['seconds'])
    return results


def main_in_process(args, argv):
    """``--device cuda`` / ``--amp`` / ``--in-process``: every case group measured in this
    process, one group after the other; a group that fails (out of memory, a kernel error) is
    reported and the others still run. Exits non-zero if any failed."""
    import torch

    from acmix_mm.utils.device_timing import describe, dtype_name, environment
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: torch.cuda.is_available() is False on this machine')
    allocator = configure_cpu_allocator(args.cpu_allocator, on_cpu=args.device == 'cpu')
    torch.manual_seed(0)
    results, failures = [], []
    for mode in ('infer', 'train'):
        size = args.infer_size if mode == 'infer' else args.train_size
        for names in case_groups(args.cases):
            print(f'{mode} {" vs ".join(names)} ({dtype_name(args.device, args.amp)}, batch '
                  f'{args.batch}, {size}x{size})', flush=True)
            try:
                results += measure_in_process(names, mode, size, args.device, args.repeat,
                                              args.batch, args.amp)
            except Exception as e:  # noqa: BLE001  (reported, the other groups go on)
                traceback.print_exc()
                failures.append(f'{mode} {"/".join(names)}: {type(e).__name__}: {e}')
                print('FAILED', failures[-1], flush=True)
            if args.device == 'cuda':
                torch.cuda.empty_cache()
    env = environment(args.device)
    for r in results:
        r['environment'] = env
    timed = {r['name'] for r in results if r['mode'] == 'infer'}  # the table's rows need these
    md, ratios = table([r for r in results if r['name'] in timed])
    if failures:
        md += '\n\nFailed: ' + '; '.join(failures)
    print(md)
    write_report(
        args.out, 'tools/analysis_tools/benchmark_backbones.py',
        argv if argv is not None else sys.argv[1:],
        f'Machine: {describe(env)}. {dtype_name(args.device, args.amp)}, batch {args.batch}; '
        f'inference at {args.infer_size}x{args.infer_size}, training step (forward + backward'
        f'{", loss scaled" if args.amp and args.device == "cuda" else ""}) at '
        f'{args.train_size}x{args.train_size}; ResNets\' batch norms '
        f'{"frozen (norm_eval)" if args.norm_eval else "trained"} in both; layer cases at their '
        f'ResNet-50 stage size. Each '
        f'case and its baseline in one process, steps alternating, fastest of {args.repeat} '
        f'after 2 warm-up steps each (CUDA events on a GPU). Peak memory: the training step\'s '
        f'peak over the memory allocated before it (CUDA allocator; on the CPU the growth of '
        f'the peak resident memory). {allocator}.', md, results)
    if ratios:
        plot(ratios, args.out + '.png')
    print(f'wrote {args.out}.md, {args.out}.json' + (' and .png' if ratios else ''))
    return 1 if failures else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--worker', nargs=3, metavar=('CASE', 'MODE', 'SIZE'), help=argparse.SUPPRESS)
    parser.add_argument('--paired', metavar='BASELINE', help=argparse.SUPPRESS)
    parser.add_argument('--cases', nargs='+', default=DEFAULT_CASES, choices=sorted(CASES))
    parser.add_argument('--infer-size', type=positive_int, default=224)
    parser.add_argument('--train-size', type=positive_int, default=512)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--amp', action='store_true',
                        help='float16 autocast (bfloat16 on the CPU); measured in one process')
    parser.add_argument('--in-process', action='store_true',
                        help='measure every case in this process, as --device cuda does (on the '
                        'CPU: to check that path; its peak memory over-counts)')
    parser.add_argument('--threads', type=positive_int, default=2, help='OMP threads per case')
    add_cpu_allocator_argument(
        parser, help='malloc of the timing runs, as tools/train.py\'s: "retain" keeps freed '
        'memory for reuse, "system" the defaults (memory workers always run the defaults, see '
        'acmix_mm.utils.benchmarking)')
    parser.add_argument('--repeat', type=positive_int, default=5,
                        help='timed runs per case (the fastest is reported)')
    parser.add_argument('--rounds', type=positive_int, default=2,
                        help='passes over all cases; each case reports its fastest pass')
    parser.add_argument('--size', type=positive_int,
                        help='input size of inference and training (sets both sizes above)')
    parser.add_argument('--batch', type=positive_int, default=1)
    parser.add_argument('--norm-eval', action='store_true',
                        help='ResNet cases train with frozen batch-norm statistics (mmdet\'s '
                        'detection setting); by default their batch norms train, in both the '
                        'case and its baseline')
    parser.add_argument('--out', default='docs/benchmarks', help='path prefix of .md and .png')
    args = parser.parse_args(argv)
    global NORM_EVAL
    NORM_EVAL = args.norm_eval
    if args.size:
        args.infer_size = args.train_size = args.size
    if args.worker:
        name, mode, size = args.worker
        names = [name] + ([args.paired] if args.paired else [])
        note = configure_cpu_allocator(args.cpu_allocator, on_cpu=args.device == 'cpu')
        results = measure(names, mode, int(size), args.device, args.repeat, args.batch)
        print(json.dumps([dict(r, allocator=note) for r in results]
                         if isinstance(results, list) else dict(results, allocator=note)))
        return 0
    if args.device == 'cuda' or args.amp or args.in_process:
        return main_in_process(args, argv)
    try:
        from mmengine.utils import ProgressBar
    except ImportError:
        ProgressBar = TextProgress
    # a baseline of another listed case is timed in that case's processes
    baselines = {CASES[c][0] for c in args.cases}
    jobs = [(c, m, args.infer_size if m == 'infer' else args.train_size)
            for c in args.cases for m in ('infer', 'train', 'memory')
            if m == 'memory' or c not in baselines]
    best = fastest_over_rounds(jobs, lambda *job: run_case(args, *job), args.rounds,
                               ProgressBar(len(jobs) * args.rounds))
    results = list(best.values())
    sys.stdout.write('\n')
    md, ratios = table(results)
    print(md)
    import platform

    import torch
    write_report(
        args.out, 'tools/analysis_tools/benchmark_backbones.py',
        argv if argv is not None else sys.argv[1:],
        f'Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
        f'{args.threads} threads per case, device {args.device}; torch {torch.__version__}; '
        f'{allocator_note(args.cpu_allocator)}.'
        f' Inference at {args.infer_size}x{args.infer_size}, training step (forward + '
        f'backward) at {args.train_size}x{args.train_size}, batch {args.batch}; ResNets\' '
        f'batch norms {"frozen (norm_eval)" if args.norm_eval else "trained"} in both; layer '
        f'cases at their ResNet-50 stage size. Each case is timed in one process with its '
        f'baseline, their steps alternating: fastest of {args.repeat} runs, the fastest of '
        f'{args.rounds} such processes; the ratio is that process\'s. Peak memory: on CUDA '
        f'the allocator\'s peak; on the CPU the growth of the peak resident memory over the '
        f'state before one training step, in a process that returns freed memory at once.',
        md, results)
    if ratios:
        plot(ratios, args.out + '.png')
    print(f'wrote {args.out}.md, {args.out}.json and {args.out}.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())

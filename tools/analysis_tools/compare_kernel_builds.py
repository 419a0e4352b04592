"""Compares two builds of the C++ CPU extension in one process: whether their results are bitwise
equal and how their times compare, at the shapes of ACmix-ResNet-50's layers (inference, 224).

    python -m acmix_mm.layers.kernels.build   # in each checkout: prints the library it built
    python tools/analysis_tools/compare_kernel_builds.py OLD.so NEW.so \
        [--rounds 15] [--calls 5] [--threads 2] [--out PREFIX]

On a machine whose speed drifts (a shared VM), the same code timed in separate processes moves by
more than a kernel change does. Here both libraries run in one process on the same inputs, their
calls alternating (each timed run after an untimed call of the same build, the builds taking turns
to go first); each time is the fastest of ``--rounds`` runs of ``--calls`` calls. Kernels: the
attention forward and backward (``sliding_window_forward`` / ``_backward``) and stage II as the
layer runs it in inference (``acmix_mix_paths``) and in training (``acmix_stage_backward``).
"""
import argparse
import functools
import importlib.util
import os
import os.path as osp
import platform
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from acmix_mm.layers import ACmix  # noqa: E402
from acmix_mm.utils.argument_types import positive_int  # noqa: E402
from acmix_mm.utils.benchmarking import write_report  # noqa: E402

# (channels, input side, stride): ACmix-ResNet-50's layers at 224x224
SHAPES = [(64, 56, 1), (128, 56, 2), (128, 28, 1), (256, 28, 2), (256, 14, 1), (512, 14, 2),
          (512, 7, 1)]
# the kernels compared: their name in the report -> the extension's function
KERNELS = {'attention forward': 'sliding_window_forward',
           'attention backward': 'sliding_window_backward',
           'stage II': 'acmix_mix_paths',
           'stage II backward': 'acmix_stage_backward'}


def load_library(path: str, argument: str):
    """The extension module in the library at ``path``; SystemExit naming ``argument`` where it
    is not a library of this extension."""
    if not osp.isfile(path):
        raise SystemExit(f"{argument} '{path}' is not a file (the library that "
                         '`python -m acmix_mm.layers.kernels.build` prints)')
    name = osp.basename(path).split('.')[0]
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (ImportError, AttributeError) as error:
        raise SystemExit(f"{argument} '{path}' does not load as a Python extension: {error}")
    missing = [f for f in KERNELS.values() if not hasattr(module, f)]
    if missing:
        raise SystemExit(f"{argument} '{path}' lacks {', '.join(missing)}: not a build of "
                         "acmix_mm's CPU kernels")
    return module


def calls(layer: ACmix, side: int):
    """``name -> f(module)`` for each kernel of ``KERNELS`` on a seeded input of ``layer`` (its
    ``qkv`` at ``side x side``); each runs that kernel of the given extension module."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, layer.in_channels, side, side, generator=gen)
    with torch.no_grad():
        qkv = layer.project(x).contiguous()
    n, d, s = layer.heads, layer.head_dim, layer.stride
    q, k, v = qkv.view(1, 3, n, d, side, side).unbind(1)
    pe = layer.position_term(side, side, x.dtype, x.device).detach()
    grid = layer.position_grid_flat(side, side, x.dtype, x.device)
    out_side = (side + s - 1) // s
    grad = torch.randn(1, layer.out_channels, out_side, out_side, generator=gen)
    scale = float(d) ** -0.5
    p = {name: t.detach() for name, t in layer.named_parameters()}
    stage = (grid, p['conv_p.weight'], p['conv_p.bias'], p['fc.weight'], p.get('fc.bias'),
             p['dep_conv.weight'], p.get('dep_conv.bias'), float(p['rate1']), p['rate2'], n,
             layer.kernel_att, s, layer.dilation)
    geometry = (scale, layer.kernel_att, s, layer.dilation)
    arguments = {
        'sliding_window_forward': (q, k, v, pe, *geometry),
        'sliding_window_backward': (grad.view(1, n, d, out_side, out_side), q, k, v, pe,
                                    *geometry, None),
        'acmix_mix_paths': (qkv, *stage),
        'acmix_stage_backward': (grad, qkv, *stage),
    }
    return {name: functools.partial(_call, function, arguments[function])
            for name, function in KERNELS.items()}


def _call(function: str, arguments: tuple, module):
    return getattr(module, function)(*arguments)


def differences(a, b):
    """Whether two results (tensors, or lists of tensors and Nones) are bitwise equal, and the
    largest absolute difference between them."""
    pairs = list(zip(a, b)) if isinstance(a, (list, tuple)) else [(a, b)]
    equal, largest = len(a) == len(b) if isinstance(a, (list, tuple)) else True, 0.0
    for x, y in pairs:
        if x is None or y is None:
            equal = equal and x is None and y is None
            continue
        equal = equal and torch.equal(x, y)
        if x.numel() and x.shape == y.shape:
            largest = max(largest, float((x - y).abs().max()))
    return equal, largest


def compare(old, new, rounds: int, calls_per_run: int, shapes=None, progress=print):
    """One result per (shape, kernel): both modules' fastest time per call in ms, their ratio and
    whether their results are bitwise equal (and their largest absolute difference)."""
    torch.manual_seed(0)
    cases = []
    for channels, side, stride in SHAPES if shapes is None else shapes:
        layer = ACmix(channels, channels, stride=stride).eval()
        for kernel, run in calls(layer, side).items():
            with torch.no_grad():
                equal, difference = differences(run(old), run(new))
            cases.append(dict(channels=channels, side=side, stride=stride, kernel=kernel,
                              bitwise_equal=equal, max_abs_difference=difference, run=run,
                              old_ms=float('inf'), new_ms=float('inf')))
    with torch.no_grad():
        for r in range(rounds):
            # Each build's timed calls follow an untimed call of its own, and the builds swap
            # places every round: timed in a fixed order, the second of one build loaded twice
            # measured 0.83x-1.00x of the first (the first call warmed the caches for it).
            order = [('old_ms', old), ('new_ms', new)][::1 if r % 2 == 0 else -1]
            for case in cases:
                for key, module in order:
                    case['run'](module)
                    start = time.perf_counter()
                    for _ in range(calls_per_run):
                        case['run'](module)
                    elapsed = (time.perf_counter() - start) / calls_per_run * 1e3
                    case[key] = min(case[key], elapsed)
            progress(f'round {r + 1}/{rounds}')
    results = []
    for case in cases:
        case.pop('run')
        case['ratio'] = case['new_ms'] / case['old_ms']
        results.append(case)
    return results


def shape_label(r) -> str:
    return f"{r['channels']}@{r['side']}x{r['side']}" + (f"/{r['stride']}" if r['stride'] > 1
                                                         else '')


def plot(results, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    shapes = list(dict.fromkeys(shape_label(r) for r in results))
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(shapes)), 4.5))
    width = 0.8 / len(KERNELS)
    for i, kernel in enumerate(KERNELS):
        rows = [r for r in results if r['kernel'] == kernel]
        ax.bar([shapes.index(shape_label(r)) + (i - (len(KERNELS) - 1) / 2) * width
                for r in rows], [r['ratio'] for r in rows], width, label=kernel)
    ax.axhline(1.0, color='k', lw=0.8)
    ax.set_xticks(range(len(shapes)))
    ax.set_xticklabels(shapes, fontsize=8)
    ax.set_ylabel('new time / old time')
    ax.set_title('two builds of the CPU kernels, one process (below 1: the new one is faster)')
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('old', help='library of the build to compare against (.so)')
    parser.add_argument('new', help='library of the build under test (.so)')
    parser.add_argument('--rounds', type=positive_int, default=15)
    parser.add_argument('--calls', type=positive_int, default=5, help='calls per timed run')
    parser.add_argument('--threads', type=positive_int, default=2)
    parser.add_argument('--out', help='writes OUT.md, OUT.json and OUT.png')
    args = parser.parse_args(argv)
    old = load_library(args.old, 'OLD')
    new = load_library(args.new, 'NEW')
    torch.set_num_threads(args.threads)
    results = compare(old, new, args.rounds, args.calls)
    rows = ['| kernel | shape | old (ms) | new (ms) | new / old | bitwise equal |',
            '|---|---|---|---|---|---|']
    for r in results:
        equal = 'yes' if r['bitwise_equal'] else f"no (max diff {r['max_abs_difference']:.3g})"
        rows.append(f"| {r['kernel']} | {shape_label(r)} | {r['old_ms']:.3f} | "
                    f"{r['new_ms']:.3f} | {r['ratio']:.3f} | {equal} |")
    table = '\n'.join(rows)
    print(table)
    if args.out:
        setting = (f'Machine: {platform.machine()}, {os.cpu_count()} CPUs; torch '
                   f'{torch.__version__}, {args.threads} threads, float32, batch 1. OLD '
                   f'{osp.basename(args.old)}, NEW {osp.basename(args.new)}, alternating in one '
                   f'process: fastest of {args.rounds} runs of {args.calls} calls each.')
        write_report(args.out, 'tools/analysis_tools/compare_kernel_builds.py',
                     sys.argv[1:] if argv is None else argv, setting, table, results)
        plot(results, args.out + '.png')
        print(f'wrote {args.out}.md, .json, .png')
    if not all(r['bitwise_equal'] for r in results):
        print('the builds differ in their results (see "bitwise equal")')


if __name__ == '__main__':
    main()

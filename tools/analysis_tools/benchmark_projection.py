"""Times the implementations of ACmix's Stage I projections on the CPU (those that
:mod:`acmix_mm.layers.projection` times), forward and backward, and writes which is fastest:
for the ResNet variant (``--variant resnet``, ``project_1x1``) oneDNN's 1x1 convolution, the
batched matrix product and oneDNN's matrix product at the ResNet-50 stage shapes of the
benchmarks (inference 224, training 512) and of Mask R-CNN (800x1333); for the Swin variant
(``--variant swin``, ``project_tokens``) PyTorch's BLAS product (``F.linear``, which mmdet's Swin
runs) and oneDNN's at Swin-T's ``qkv`` and ``proj`` shapes (inference 224, training 512).

    python tools/analysis_tools/benchmark_projection.py --out docs/benchmark_projection \
        [--variant resnet] [--threads 2] [--repeat 5]

Each shape's candidates alternate, fastest of ``--repeat`` runs each; the chart shows each
candidate's time over the first candidate's (the convolution, or the BLAS product).
"""
import argparse
import os
import os.path as osp
import platform
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from acmix_mm.layers import projection  # noqa: E402
from acmix_mm.utils.argument_types import positive_int  # noqa: E402
from acmix_mm.utils.benchmarking import write_report  # noqa: E402

# (input channels, H, W): ACmix's input in ResNet-50's 3x3 position, the strided blocks at the
# larger (input) size
SHAPES = {
    'infer 224': [(64, 56, 56), (128, 56, 56), (128, 28, 28), (256, 28, 28), (256, 14, 14),
                  (512, 14, 14), (512, 7, 7)],
    'train 512': [(64, 128, 128), (128, 128, 128), (128, 64, 64), (256, 64, 64), (256, 32, 32),
                  (512, 32, 32), (512, 16, 16)],
    'mask r-cnn 800x1344': [(64, 200, 336), (128, 200, 336), (128, 100, 168), (256, 100, 168),
                            (256, 50, 84), (512, 50, 84), (512, 25, 42)],
}

# (tokens, Cin, Cout): Swin-T's qkv and proj in each stage, batch 1
TOKEN_SHAPES = {
    f'swin-t {mode} {size}': [shape for i, c in enumerate((96, 192, 384, 768))
                             for shape in (((size // 4 >> i) ** 2, c, 3 * c),
                                           ((size // 4 >> i) ** 2, c, c))]
    for mode, size in (('infer', 224), ('train', 512))
}


def captured(forward, backward):
    """The candidates (name -> callable) that ``forward()`` and ``backward()`` hand to the module's
    chooser (:func:`acmix_mm.layers.projection.fastest`), captured by replacing it."""
    found = []

    def capture(key, runs):
        found.append(runs)
        return next(iter(runs.values()))()

    original = projection.fastest
    projection.fastest = capture
    try:
        with torch.no_grad():
            forward()
            backward()
    finally:
        projection.fastest = original
    return found[0], found[1]


def candidates(x, weight, bias, grad):
    """The forward and backward candidates of ``project_1x1`` for one shape."""
    return captured(lambda: projection.project_1x1(x, weight, bias),
                    lambda: projection.project_1x1_backward(x, weight, grad, True))


def token_candidates(x, weight, bias, grad):
    """:func:`candidates` of ``project_tokens``: ``x`` ``(L, Cin)``, ``grad`` ``(L, Cout)``."""
    return captured(lambda: projection._tokens_forward(x, weight, bias),
                    lambda: projection._tokens_backward(x, weight, grad, (True, True, True)))


def cases(variant):
    """``(setting, shape fields, forward candidates, backward candidates)`` of every shape."""
    gen = torch.Generator().manual_seed(0)
    if variant == 'swin':
        for setting, shapes in TOKEN_SHAPES.items():
            for length, c_in, c_out in shapes:
                x = torch.randn(length, c_in, generator=gen)
                weight = torch.randn(c_out, c_in, generator=gen) * c_in ** -0.5
                bias = torch.randn(c_out, generator=gen)
                grad = torch.randn(length, c_out, generator=gen)
                yield (setting, dict(tokens=length, channels=c_in, out_channels=c_out),
                       *token_candidates(x, weight, bias, grad))
        return
    for setting, shapes in SHAPES.items():
        for c, h, w in shapes:
            x = torch.randn(1, c, h, w, generator=gen)
            weight = torch.randn(3 * c, c, generator=gen) * c ** -0.5
            bias = torch.randn(3 * c, generator=gen)
            grad = torch.randn(1, 3 * c, h * w, generator=gen)
            yield setting, dict(channels=c, height=h, width=w), *candidates(x, weight, bias, grad)


def shape_label(r):
    """The shape of a result: ``Cin@HxW`` or ``L x Cin->Cout``."""
    if 'tokens' in r:
        return f"{r['tokens']} x {r['channels']}->{r['out_channels']}"
    return f"{r['channels']}@{r['height']}x{r['width']}"


def best_times(runs, repeat):
    times = {name: float('inf') for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            run()
            start = time.perf_counter()
            run()
            times[name] = min(times[name], time.perf_counter() - start)
    return times


def plot(results, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    labels = [f"{r['setting']}\n{shape_label(r)}" for r in results]
    names = list(results[0]['forward_ms'])
    base = names[0]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.55 * len(results)), 7), sharex=True)
    pos = range(len(results))
    width = 0.8 / len(names)
    for ax, part in zip(axes, ('forward', 'backward')):
        for i, name in enumerate(names):
            ratios = [r[f'{part}_ms'][name] / r[f'{part}_ms'][base] for r in results]
            ax.bar([p + (i - (len(names) - 1) / 2) * width for p in pos], ratios, width,
                   label=name)
        ax.axhline(1.0, color='k', lw=0.8)
        ax.set_yscale('log')
        ax.set_ylabel(f'{part} time / {base}')
        ax.legend(fontsize=7)
    axes[1].set_xticks(list(pos))
    axes[1].set_xticklabels(labels, rotation=90, fontsize=7)
    axes[0].set_title(f'projections of ACmix (below 1: faster than {base})')
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='docs/benchmark_projection')
    parser.add_argument('--variant', choices=('resnet', 'swin'), default='resnet',
                        help="the ResNet variant's 1x1 projections or the Swin variant's tokens")
    parser.add_argument('--threads', type=positive_int, default=2)
    parser.add_argument('--repeat', type=positive_int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results, rows = [], []
    shapes = TOKEN_SHAPES if args.variant == 'swin' else SHAPES
    total = sum(len(v) for v in shapes.values())
    for setting, fields, fwd, bwd in cases(args.variant):
        tf, tb = best_times(fwd, args.repeat), best_times(bwd, args.repeat)
        r = dict(setting=setting, **fields,
                 forward_ms={k: v * 1e3 for k, v in tf.items()},
                 backward_ms={k: v * 1e3 for k, v in tb.items()},
                 forward_fastest=min(tf, key=tf.get), backward_fastest=min(tb, key=tb.get))
        results.append(r)
        if not rows:
            rows = ['| setting | shape | ' + ' | '.join(
                f'{part} {name} (ms)' for part in ('forward', 'backward') for name in tf) +
                    ' | fastest forward | fastest backward |',
                    '|' + '---|' * (4 + len(tf) + len(tb))]
        rows.append(f'| {setting} | {shape_label(r)} | ' + ' | '.join(
            f'{t * 1e3:.2f}' for t in list(tf.values()) + list(tb.values())) +
                    f" | {r['forward_fastest']} | {r['backward_fastest']} |")
        print(f'[{len(results)}/{total}] {rows[-1]}', flush=True)
    what = ('q, k, v of Cin channels each (shape Cin@HxW)' if args.variant == 'resnet' else
            "Swin-T's qkv and proj (shape: tokens x Cin->Cout); backward: input and weight "
            'gradients')
    setting = (f'Machine: {platform.machine()}, {os.cpu_count()} CPUs; torch '
               f'{torch.__version__}, {args.threads} threads, float32, batch 1; {what}. Fastest of '
               f'{args.repeat} alternating runs per candidate.')
    write_report(args.out, 'tools/analysis_tools/benchmark_projection.py',
                 sys.argv[1:] if argv is None else argv, setting, '\n'.join(rows), results)
    plot(results, args.out + '.png')
    print(f'wrote {args.out}.md, .json, .png')


if __name__ == '__main__':
    main()

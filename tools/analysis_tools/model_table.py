"""Params and FLOPs of the ACmix ImageNet classifiers (configs/mmpretrain) at 224x224, counted by
mmengine's analysis tools, next to the paper's figures. Writes a markdown table and a PNG chart.

    .venv/bin/python tools/analysis_tools/model_table.py --out docs/model_table

FLOPs are mmengine's standard ``get_model_complexity_info`` (what the get_flops tools of mmdet,
mmseg and mmpretrain report): one multiply-add is one FLOP (the papers' convention), and
``import acmix_mm`` has registered the handles of :mod:`acmix_mm.utils.flop_count` for the
operators mmengine does not know (the ResNet variant's fused projections and sliding-window
attention, the Swin windows' biased logits).
"""
import argparse
import os
import sys
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = [  # (name, config, paper params M, paper FLOPs G, paper top-1)
    ('ACmix-ResNet-26', 'acmix-resnet26_8xb32_in1k.py', 10.6, 2.3, 76.1),
    ('ACmix-ResNet-38', 'acmix-resnet38_8xb32_in1k.py', 14.6, 2.9, 77.4),
    ('ACmix-ResNet-50', 'acmix-resnet50_8xb32_in1k.py', 18.6, 3.6, 77.8),
    ('ACmix-Swin-T', 'acmix-swin-tiny_16xb64_in1k.py', 30.0, 4.6, 81.9),
    ('ACmix-Swin-S', 'acmix-swin-small_16xb64_in1k.py', 51.0, 9.0, 83.5),
]


def count(config: str, size: int = 224):
    from mmengine.analysis import get_model_complexity_info
    from mmengine.config import Config
    from mmpretrain.registry import MODELS as REGISTRY
    model = REGISTRY.build(Config.fromfile(os.path.join(ROOT, 'configs/mmpretrain', config)).model)
    model.eval()
    with torch.no_grad():
        info = get_model_complexity_info(model, inputs=(torch.randn(1, 3, size, size), ),
                                         show_table=False, show_arch=False)
    return info['params'] / 1e6, info['flops'] / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='docs/model_table', help='path prefix of .md and .png')
    args = parser.parse_args(argv)
    import acmix_mm  # noqa: F401
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    from mmengine.utils import ProgressBar
    MMLogger.get_instance('model_table', log_level='WARNING')
    init_default_scope('mmpretrain')

    rows = []
    bar = ProgressBar(len(MODELS))
    for name, config, p_params, p_flops, top1 in MODELS:
        params, flops = count(config)
        rows.append((name, config, params, p_params, flops, p_flops, top1))
        bar.update()
    sys.stdout.write('\n')
    lines = [
        '| model | config | params (M), measured | params (M), paper | FLOPs (G), measured | '
        'FLOPs (G), paper | paper top-1 |', '|---|---|---|---|---|---|---|'
    ] + [f'| {n} | `configs/mmpretrain/{c}` | {p:.2f} | {pp} | {f:.2f} | {pf} | {t} |'
         for n, c, p, pp, f, pf, t in rows]
    table = '\n'.join(lines)
    print(table)
    os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
    with open(args.out + '.md', 'w') as f:
        f.write(f'Measured by `python tools/analysis_tools/model_table.py` (torch {torch.__version__},'
                ' 1x3x224x224, 1000 classes). Top-1 is the paper\'s; it is not measured here.\n\n')
        f.write(table + '\n\nFLOPs count multiply-adds, the ResNet variant\'s sliding-window '
                'attention included (2 x 49 x C x H_out x W_out per layer, logits and weighted '
                'sum; '
                'see `acmix_mm/utils/flop_count.py`).\n')
    _plot(rows, args.out + '.png')
    print(f'wrote {args.out}.md and {args.out}.png')
    return 0


def _plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = [r[0] for r in rows]
    x = range(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (i, j, label) in zip(axes, [(2, 3, 'params (M)'), (4, 5, 'FLOPs (G) at 224x224')]):
        ax.bar([k - 0.2 for k in x], [r[i] for r in rows], 0.4, label='measured (mmengine)')
        ax.bar([k + 0.2 for k in x], [r[j] for r in rows], 0.4, label='paper')
        ax.set_xticks(list(x), names, rotation=20)
        ax.set_title(label)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == '__main__':
    sys.exit(main())

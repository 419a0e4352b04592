"""Params and FLOPs of the ACmix ImageNet classifiers (configs/mmpretrain) at 224x224, counted by
mmengine's analysis tools, next to the paper's figures. Writes a markdown table and a PNG chart.

    .venv/bin/python tools/analysis_tools/model_table.py --out docs/model_table

mmengine's FlopAnalyzer counts one multiply-add as one FLOP (the papers' convention). It has no
handle for ``aten::scaled_dot_product_attention`` (the Swin windows' ``q @ k^T`` and ``attn @ v``),
so one is registered here: ``2 * B * heads * N_q * N_k * d``. The sliding-window attention of the
ResNet variant runs as element-wise products that the analyzer does not count (see the table's
note).
"""
import argparse
import os
import sys
from typing import Any, List

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = [  # (name, config, paper params M, paper FLOPs G, paper top-1)
    ('ACmix-ResNet-26', 'acmix-resnet26_8xb32_in1k.py', 10.6, 2.3, 76.1),
    ('ACmix-ResNet-38', 'acmix-resnet38_8xb32_in1k.py', 14.6, 2.9, 77.4),
    ('ACmix-ResNet-50', 'acmix-resnet50_8xb32_in1k.py', 18.6, 3.6, 77.8),
    ('ACmix-Swin-T', 'acmix-swin-tiny_16xb64_in1k.py', 30.0, 4.6, 81.9),
    ('ACmix-Swin-S', 'acmix-swin-small_16xb64_in1k.py', 51.0, 9.0, 83.5),
]


def sdpa_flop_handle(inputs: List[Any], outputs: List[Any]) -> int:
    """Multiply-adds of ``softmax(q @ k^T) @ v`` for q ``(..., N_q, d)``, k/v ``(..., N_k, d)``."""
    from mmengine.analysis.jit_handles import get_shape
    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    batch = 1
    for s in q[:-2]:
        batch *= s
    return 2 * batch * q[-2] * k[-2] * q[-1]


def count(config: str, size: int = 224):
    from mmengine.analysis import FlopAnalyzer, parameter_count
    from mmengine.config import Config
    from mmpretrain.registry import MODELS as REGISTRY
    model = REGISTRY.build(Config.fromfile(os.path.join(ROOT, 'configs/mmpretrain', config)).model)
    model.eval()
    analyzer = FlopAnalyzer(model, (torch.randn(1, 3, size, size), ))
    analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flop_handle)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return parameter_count(model)[''] / 1e6, analyzer.total() / 1e9


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
        f.write(table + '\n\nThe ResNet variant\'s sliding-window attention (logits and weighted sum, '
                'about 2 x 49 x C x H x W multiply-adds per layer) runs as element-wise products, '
                'which mmengine\'s FlopAnalyzer does not count.\n')
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

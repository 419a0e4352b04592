"""Export the backbone of an acmix_mm config to ONNX and check it in onnxruntime.

    python tools/deployment/export_onnx.py CONFIG --out FILE.onnx [--checkpoint CKPT]
                                           [--shape H W] [--opset N]

``model.backbone`` of any mmdet, mmseg or mmpretrain config is built (with the weights of
``--checkpoint``: a whole-model checkpoint's ``backbone.*`` tensors or a backbone's own, read
weights-only), exported with torch.export's ONNX exporter at ``2 x 3 x H x W`` with dynamic batch,
height and width, and checked: only standard ONNX operators (ACmix's sliding-window attention is
exported as a decomposition into standard operators, ``sliding_window_attention_unfolded`` in
``acmix_mm.layers.kernels.sliding_window_python``: the window copies of keys and values as
one-hot convolutions, so onnxruntime and TensorRT run it without a plugin), then onnxruntime
runs the file at two other sizes (batch 3, one of them odd) and the largest difference from
PyTorch is printed. The exit status is 1 when it exceeds ``--rtol`` (1e-4) of the output's
largest magnitude.

Swin (mmdet's, and so ACmix-Swin) decides in Python, from the input size, whether to pad (patch
embedding, windows, patch merging) and whether a stage's windows shift (only where the stage has
more than ``window_size`` tokens a side); the graph keeps the decisions taken at the export size.
Export at a size that is not a multiple of 32 (the default, 225 x 225, pads everywhere and
shifts in every stage, as any larger input does) and in the range you deploy. ACmix-ResNet has
no such branches.
"""
import argparse
import os.path as osp
import sys
from typing import List, Sequence, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

STANDARD_DOMAINS = ('', 'ai.onnx')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='mmdet / mmseg / mmpretrain config with an ACmix backbone')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--checkpoint', help='weights: a whole-model or backbone checkpoint')
    parser.add_argument('--shape', nargs=2, type=int, default=[225, 225], metavar=('H', 'W'),
                        help='export input size (default 225 225, see above for Swin)')
    parser.add_argument('--opset', type=int, default=18, help='ONNX opset (default 18)')
    parser.add_argument('--rtol', type=float, default=1e-4,
                        help='largest accepted difference, relative to the largest output value')
    args = parser.parse_args(argv)
    if min(args.shape) < 32:
        parser.error(f'--shape must be at least 32 32 (the backbones downsample 32 times), got '
                     f'{args.shape[0]} {args.shape[1]}')
    return args


def build_backbone(config: str, checkpoint=None):
    """``model.backbone`` of ``config``, built in its framework's registry, in eval mode, with
    the weights of ``checkpoint`` (strict) when given."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import acmix_mm  # noqa: F401  (registers the backbones and the weights-only loaders)
    from acmix_mm.models.utils import extract_state_dict, read_checkpoint
    if not osp.isfile(config):
        raise FileNotFoundError(f'config {config!r} does not exist')
    cfg = Config.fromfile(config)
    backbone_cfg = cfg.model.backbone
    backbone_cfg.pop('init_cfg', None)
    backbone_cfg.pop('pretrained', None)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    backbone = MODELS.build(backbone_cfg)
    if checkpoint:
        ckpt = read_checkpoint(checkpoint)
        state = extract_state_dict(ckpt, prefix='backbone.') or extract_state_dict(ckpt)
        backbone.load_state_dict(state, strict=True)
    return backbone.eval()


def export(backbone, out: str, shape: Sequence[int], opset: int) -> None:
    """Writes ``backbone`` (example input ``2 x 3 x H x W``) to ``out`` with dynamic batch and
    size."""
    import torch
    from torch.export import Dim
    x = torch.randn(2, 3, *shape)  # batch 1 would be specialised
    # Dim.AUTO: named Dims make torch.export refuse guards that hold for every size but that it
    # cannot prove (ceil divisions in the slicing); the check at other sizes below catches a
    # size that was really fixed.
    dims = {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}
    with torch.no_grad():
        names = [f'out{i}' for i in range(len(backbone(x)))]
        torch.onnx.export(backbone, (x, ), out, dynamo=True, opset_version=opset,
                          input_names=['input'], output_names=names,
                          dynamic_shapes={'x': dims}, external_data=False)


def nonstandard_ops(path: str) -> List[str]:
    """``domain::op`` of every node (functions included) outside the standard ONNX domains."""
    import onnx
    model = onnx.load(path)
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    return sorted({f'{n.domain}::{n.op_type}' for n in nodes if n.domain not in STANDARD_DOMAINS})


def check_sizes(shape: Sequence[int]) -> List[Tuple[int, int]]:
    """Two input sizes other than ``shape``: a larger even one and an odd one."""
    h, w = shape
    return [(h + 32, w + 64), (h + 17, w + 9)]


def largest_difference(backbone, path: str, size: Tuple[int, int]) -> Tuple[float, float]:
    """Runs ``path`` in onnxruntime and ``backbone`` in PyTorch on a ``3 x 3 x H x W`` input;
    returns the largest absolute difference over all outputs and the largest output
    magnitude."""
    import numpy as np
    import onnxruntime as ort
    import torch
    x = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
    with torch.no_grad():
        expected = [t.numpy() for t in backbone(x)]
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    if [g.shape for g in got] != [e.shape for e in expected]:
        raise RuntimeError(f'onnxruntime output shapes {[g.shape for g in got]} differ from '
                           f'PyTorch {[e.shape for e in expected]} at {size}: the export size '
                           'fixed a padding decision; export at a size that is not a multiple '
                           'of 32 (see --help)')
    diff = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
    scale = max(float(np.abs(e).max()) for e in expected)
    return diff, scale


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        backbone = build_backbone(args.config, args.checkpoint)
    except FileNotFoundError as e:
        sys.exit(f'error: {e}')
    export(backbone, args.out, args.shape, args.opset)
    print(f'wrote {args.out} (exported at 2x3x{args.shape[0]}x{args.shape[1]}, dynamic batch, '
          'height and width)')
    foreign = nonstandard_ops(args.out)
    if foreign:
        print(f'error: non-standard ONNX operators: {", ".join(foreign)}', file=sys.stderr)
        return 1
    worst = 0.0
    for size in check_sizes(args.shape):
        diff, scale = largest_difference(backbone, args.out, size)
        rel = diff / max(scale, 1e-12)
        worst = max(worst, rel)
        print(f'onnxruntime vs PyTorch at 3x3x{size[0]}x{size[1]}: largest difference '
              f'{diff:.3g} ({rel:.3g} of the largest output value {scale:.3g})')
    if worst > args.rtol:
        print(f'error: largest relative difference {worst:.3g} exceeds {args.rtol:g}',
              file=sys.stderr)
        return 1
    print(f'ok: largest relative difference {worst:.3g} <= {args.rtol:g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

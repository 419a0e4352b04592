"""Time and peak memory of one whole UperNet training iteration (data preprocessing, forward,
losses, backward, AdamW step), ACmix backbones against mmseg's, on random ADE20K-sized batches.

Each ACmix model and its baseline are built in this process and their iterations alternate
(:mod:`acmix_mm.testing.train_iteration`); ``--amp`` trains under mmengine's AmpOptimWrapper
(float16 autocast, dynamic loss scaling) on CUDA, bfloat16 autocast on the CPU. The losses of the
last iteration are reported and checked to be finite. Writes ``OUT.md``, ``OUT.json``, ``OUT.png``.

    python tools/analysis_tools/benchmark_segmentor.py --device cuda [--amp] \
        [--cases upernet_acmix-swin-t upernet_acmix-r50] [--size 512 512] [--batch 8] \
        [--repeat 3] --out docs/benchmarks_upernet_cuda
"""
import argparse
import os.path as osp
import sys
import traceback

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
from acmix_mm.utils.argument_types import non_negative_int, positive_int  # noqa: E402

# ACmix case -> (its config, the baseline's config)
CASES = {
    'upernet_acmix-swin-t': (
        osp.join(ROOT, 'configs/mmseg/upernet_acmix-swin-t_8xb2-160k_ade20k-512x512.py'),
        'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'),
    'upernet_acmix-r50': (
        osp.join(ROOT, 'configs/mmseg/upernet_acmix-r50_4xb4-160k_ade20k-512x512.py'),
        'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'),
}


def baseline_name(case: str) -> str:
    return case.replace('acmix-', '')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--cases', nargs='+', default=list(CASES), choices=list(CASES))
    parser.add_argument('--size', nargs=2, type=positive_int, default=[512, 512],
                        metavar=('H', 'W'))
    parser.add_argument('--batch', type=positive_int, default=8)
    parser.add_argument('--device', default='cuda', choices=['cpu', 'cuda'])
    parser.add_argument('--amp', action='store_true',
                        help='float16 AmpOptimWrapper on CUDA (bfloat16 autocast on the CPU)')
    parser.add_argument('--repeat', type=positive_int, default=3,
                        help='timed iterations of each model')
    parser.add_argument('--warmup', type=non_negative_int, default=2,
                        help='untimed iterations of each model first')
    parser.add_argument('--out', default='docs/benchmarks_upernet', help='path prefix')
    args = parser.parse_args(argv)
    if min(args.size) < 32:
        parser.error(f'--size must be at least 32 32 (UperNet downsamples 32x), got {args.size}')
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch
    from mmengine.logging import MMLogger
    from mmseg.registry import MODELS

    import acmix_mm  # noqa: F401  (registers the backbones)
    from acmix_mm.testing import segmentation_batch
    from acmix_mm.testing.train_iteration import measure_pair, write_iteration_report
    from acmix_mm.utils.device_timing import dtype_name
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: torch.cuda.is_available() is False on this machine')
    torch.manual_seed(0)
    # init_weights logs every parameter at INFO level: thousands of lines per model
    MMLogger.get_current_instance().setLevel('WARNING')
    batch = segmentation_batch(args.batch, tuple(args.size))
    records, failures = [], []
    for case in args.cases:
        base = baseline_name(case)
        configs = {case: CASES[case][0], base: CASES[case][1]}
        print(f'{case} vs {base}: {dtype_name(args.device, args.amp)}, batch {args.batch} of '
              f'{args.size[0]}x{args.size[1]}', flush=True)
        try:
            pair = measure_pair(MODELS, configs, [case, base], batch, args.device, args.amp,
                                args.repeat, args.warmup)
        except Exception as e:  # noqa: BLE001  (reported; the next case still runs)
            traceback.print_exc()
            failures.append(f'{case}: {type(e).__name__}: {e}')
            print('FAILED', failures[-1], flush=True)
            continue
        for r in pair:
            print(f'  {r["name"]}: {r["seconds"] * 1e3:.1f} ms, peak {r["peak_mb"]:.0f} MB, '
                  f'losses {r["losses"]}', flush=True)
        records += pair
        if args.device == 'cuda':
            torch.cuda.empty_cache()
    return write_iteration_report(
        args.out, 'tools/analysis_tools/benchmark_segmentor.py',
        argv if argv is not None else sys.argv[1:],
        f'One UperNet training iteration (mmengine `train_step`: data preprocessing, forward, '
        f'losses, backward, AdamW step) on a batch of {args.batch} random '
        f'{args.size[0]}x{args.size[1]} images with random ADE20K labels (150 classes)',
        args.device, args.amp, args.repeat, args.warmup, records, failures)


if __name__ == '__main__':
    sys.exit(main())

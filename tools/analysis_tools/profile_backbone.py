"""Where a backbone's inference or training step spends its time: torch.profiler's table of
operators and kernels over a few steps of one case of ``benchmark_backbones.py``.

    python tools/analysis_tools/profile_backbone.py acmix-r50 [--mode train] [--device cuda]
        [--amp] [--batch 32] [--size 224] [--steps 3] [--top 25] [--out OUT.txt]

The steps are built as ``benchmark_backbones.py --in-process`` builds them (the forward under
autocast with ``--amp``, the loss scaled as a float16 GradScaler scales it), run twice untimed
(compilation, caches), then ``--steps`` times under the profiler. The table is sorted by the
device's self time (CUDA) or the CPU's, printed and written to ``--out``.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import benchmark_backbones as bench  # noqa: E402
from acmix_mm.utils.argument_types import positive_int  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('case', choices=sorted(bench.CASES),
                        help='a case of benchmark_backbones.py')
    parser.add_argument('--mode', choices=('infer', 'train'), default='train')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cuda')
    parser.add_argument('--amp', action='store_true',
                        help='float16 autocast (bfloat16 on the CPU)')
    parser.add_argument('--batch', type=positive_int, default=2)
    parser.add_argument('--size', type=positive_int, default=224,
                        help='input size of the backbone cases (layer cases keep their own)')
    parser.add_argument('--steps', type=positive_int, default=3, help='profiled steps')
    parser.add_argument('--top', type=positive_int, default=25, help='rows of the table')
    parser.add_argument('--out', help='also write the table to this file')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch
    from torch.profiler import ProfilerActivity, profile
    if args.device == 'cuda' and not torch.cuda.is_available():
        sys.exit(f'--device cuda: no CUDA device is visible to torch {torch.__version__}')
    case, step = bench.prepare_in_process(args.case, args.mode, args.size, args.device,
                                          args.batch, args.amp)
    sync = torch.cuda.synchronize if args.device == 'cuda' else (lambda: None)
    for _ in range(2):
        step()
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == 'cuda'
                                           else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        sync()
    key = 'self_cuda_time_total' if args.device == 'cuda' else 'self_cpu_time_total'
    title = (f'{args.case} {args.mode}, {args.device}{" amp" if args.amp else ""}, batch '
             f'{args.batch} of {case["size"]}x{case["size"]}, {args.steps} steps, sorted by '
             f'{key}')
    text = title + '\n' + prof.key_averages().table(sort_by=key, row_limit=args.top,
                                                    max_name_column_width=70)
    print(text, flush=True)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())

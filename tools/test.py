"""Evaluate a checkpoint with mmengine's Runner (the config's evaluator: COCO AP, mIoU, top-1).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR]
                                           [--cfg-options k=v ...] [--launcher ...]
                                           [--cpu-allocator {retain,system}]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    from acmix_mm.engine import add_common_args
    parser = argparse.ArgumentParser(description='Test (evaluate) a checkpoint')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--show-dir', help='also write ground truth | prediction images here')
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch
    from mmengine.logging import print_log
    from mmengine.runner import Runner

    from acmix_mm.engine import load_run_config, setup_cpu_distributed
    from acmix_mm.utils.cpu_allocator import configure_cpu_allocator
    from acmix_mm.visualization import save_predictions
    if not osp.isfile(args.checkpoint):
        sys.exit(f'error: checkpoint {args.checkpoint!r} does not exist')
    try:
        cfg = load_run_config(args.config, args.work_dir, args.launcher, args.cfg_options,
                              args.local_rank)
    except FileNotFoundError as e:
        sys.exit(f'error: {e}')
    cfg.load_from = args.checkpoint
    setup_cpu_distributed(cfg)
    allocator_note = configure_cpu_allocator(args.cpu_allocator, not torch.cuda.is_available())
    runner = Runner.from_cfg(cfg)
    print_log(allocator_note, logger='current')
    metrics = runner.test()
    if args.show_dir and runner.rank == 0:
        paths = save_predictions(runner, args.show_dir)
        print(f'wrote {len(paths)} prediction images to {args.show_dir}')
    return metrics


if __name__ == '__main__':
    main()

"""Evaluate a checkpoint with mmengine's Runner (the config's evaluator: COCO AP, mIoU, top-1).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR]
                                           [--cfg-options k=v ...] [--launcher ...]
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Test (evaluate) a checkpoint')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the evaluation log goes')
    parser.add_argument('--show-dir', help='also write ground truth | prediction images here')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    import acmix_mm  # noqa: F401
    from acmix_mm.engine import setup_cpu_distributed
    from acmix_mm.visualization import save_predictions
    from mmengine.config import Config
    from mmengine.runner import Runner
    for name, path in (('config', args.config), ('checkpoint', args.checkpoint)):
        if not osp.isfile(path):
            sys.exit(f'error: {name} {path!r} does not exist')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    if args.show_dir and runner.rank == 0:
        paths = save_predictions(runner, args.show_dir)
        print(f'wrote {len(paths)} prediction images to {args.show_dir}')
    return metrics


if __name__ == '__main__':
    main()

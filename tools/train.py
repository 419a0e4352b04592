"""Train with mmengine's Runner: any acmix_mm config (mmdet, mmseg or mmpretrain based).

ExactResumeHook is added to every config that does not name it (random states saved with each
checkpoint, so that ``--resume`` after a kill repeats the interrupted run exactly).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                                 [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]
                                 [--cpu-allocator {retain,system}]

On the CPU, glibc keeps freed memory for reuse unless ``--cpu-allocator system``
(:mod:`acmix_mm.utils.cpu_allocator`).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    from acmix_mm.engine import add_common_args
    parser = argparse.ArgumentParser(description='Train a model with an acmix_mm config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from CKPT, or from the latest checkpoint of the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision: float16 with loss scaling on a GPU, '
                        'bfloat16 autocast on the CPU')
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch
    from mmengine.logging import print_log
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from acmix_mm.engine import (configure_amp, enable_exact_resume, load_run_config,
                                 setup_cpu_distributed)
    from acmix_mm.utils.cpu_allocator import configure_cpu_allocator
    try:
        cfg = load_run_config(args.config, args.work_dir, args.launcher, args.cfg_options,
                              args.local_rank)
    except FileNotFoundError as e:
        sys.exit(f'error: {e}')
    amp_note = configure_amp(cfg, torch.cuda.is_available()) if args.amp else None
    enable_exact_resume(cfg)
    if args.resume:
        cfg.resume = True
        cfg.load_from = None if args.resume == 'auto' else args.resume
    setup_cpu_distributed(cfg)
    allocator_note = configure_cpu_allocator(args.cpu_allocator, not torch.cuda.is_available())
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    print_log(allocator_note, logger='current')
    if amp_note:
        print_log(amp_note, logger='current')
    runner.train()


if __name__ == '__main__':
    main()

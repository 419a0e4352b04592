"""What tools/train.py and tools/test.py share: the common command-line options and loading a
config with them applied."""
import argparse
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config, DictAction

from ..utils.cpu_allocator import add_cpu_allocator_argument


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--work-dir``, ``--cfg-options``, ``--launcher``, the launcher's ``--local-rank`` and
    ``--cpu-allocator`` (see :mod:`acmix_mm.utils.cpu_allocator`)."""
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher for distributed runs')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_cpu_allocator_argument(parser)


def load_run_config(config: str, work_dir: Optional[str] = None, launcher: str = 'none',
                    cfg_options: Optional[dict] = None, local_rank: int = 0) -> Config:
    """Reads ``config``, applies the options and sets the work dir; a missing file is an error
    that names it."""
    if not osp.isfile(config):
        raise FileNotFoundError(f'config {config!r} does not exist')
    os.environ.setdefault('LOCAL_RANK', str(local_rank))
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg

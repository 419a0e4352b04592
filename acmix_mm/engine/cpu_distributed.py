"""Distributed training without a GPU, through mmengine's own extension points.

mmengine 0.10.7's ``pytorch`` launcher calls ``torch.cuda.set_device`` and its Runner wraps the
model with ``device_ids=[LOCAL_RANK]``; both fail on a CPU-only machine. When no GPU is present,
:func:`setup_cpu_distributed` initialises a gloo process group from the launcher's environment
(the Runner then skips its own initialisation) and selects
:class:`AnyDeviceDistributedDataParallel` through ``model_wrapper_cfg``. With a GPU nothing
changes, so the command that runs here is the one a GPU cluster runs with NCCL.
"""
import atexit
import os

import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class AnyDeviceDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that leaves out ``device_ids`` for CPU modules (where
    DistributedDataParallel requires it to be None)."""

    def __init__(self, module: torch.nn.Module, device_ids=None, **kwargs) -> None:
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        super().__init__(module=module, device_ids=None if on_cpu else device_ids, **kwargs)


def setup_cpu_distributed(cfg) -> bool:
    """Prepares ``cfg`` (an mmengine Config) for a CPU run of a distributed launcher.

    Returns:
        True when it set up gloo on the CPU; False when there is nothing to do (no launcher, or
        a GPU is available and mmengine's own path applies).
    """
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return False
    if cfg.launcher == 'slurm':
        _slurm_env_to_torch_env()
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise RuntimeError(f'launcher={cfg.launcher!r} needs the environment variables {missing}; '
                           'start the job with torchrun (tools/dist_train.sh) or srun')
    os.environ.setdefault('LOCAL_RANK', '0')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                world_size=int(os.environ['WORLD_SIZE']))
        # mmengine never destroys the group; gloo's threads left running at interpreter exit
        # can abort the process ("terminate called without an active exception").
        atexit.register(_destroy_process_group)
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type='AnyDeviceDistributedDataParallel',
                                     broadcast_buffers=False,
                                     find_unused_parameters=cfg.get('find_unused_parameters',
                                                                    False))
    return True


def _destroy_process_group() -> None:
    if dist.is_initialized():
        try:
            # every rank reaches exit before any tears its connections down: a rank that destroys
            # the group while a peer still runs can abort that peer's gloo threads
            dist.barrier()
        except RuntimeError:
            pass
        dist.destroy_process_group()


def _slurm_env_to_torch_env() -> None:
    """srun sets SLURM_* variables; torch's env:// rendezvous reads RANK, WORLD_SIZE, ..."""
    os.environ.setdefault('RANK', os.environ.get('SLURM_PROCID', '0'))
    os.environ.setdefault('WORLD_SIZE', os.environ.get('SLURM_NTASKS', '1'))
    os.environ.setdefault('LOCAL_RANK', os.environ.get('SLURM_LOCALID', '0'))
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ and 'SLURM_NODELIST' in os.environ:
        import subprocess
        out = subprocess.run(['scontrol', 'show', 'hostnames', os.environ['SLURM_NODELIST']],
                             capture_output=True, text=True)
        os.environ['MASTER_ADDR'] = out.stdout.split()[0] if out.stdout else '127.0.0.1'

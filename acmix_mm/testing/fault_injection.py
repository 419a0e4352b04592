"""A hook that kills its own process with SIGKILL right after a given checkpoint was written:
what a cluster's out-of-memory killer or a pre-empted job does, for resume tests.

    custom_imports = dict(imports=['acmix_mm', 'acmix_mm.testing.fault_injection'])
    custom_hooks = [dict(type='SigkillAfterCheckpointHook', after_iter=10)]
"""
import os
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SigkillAfterCheckpointHook(Hook):
    """Sends SIGKILL to its own process after training iteration ``after_iter`` (1-based, as in
    ``iter_N.pth``), after every other hook of that iteration, the CheckpointHook included.

    Args:
        after_iter: the iteration after which the process dies.
    """

    priority = 'LOWEST'

    def __init__(self, after_iter: int) -> None:
        if not isinstance(after_iter, int) or after_iter < 1:
            raise ValueError(f'after_iter must be a positive int, got {after_iter!r}')
        self.after_iter = after_iter

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.after_iter:
            os.kill(os.getpid(), signal.SIGKILL)

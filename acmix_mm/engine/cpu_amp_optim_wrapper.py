"""Mixed precision on the CPU: bfloat16 autocast through mmengine's optimizer-wrapper interface.

mmengine 0.10.7's ``AmpOptimWrapper`` refuses to start without a GPU (NPU, MLU, MUSA). On the
CPU, autocast computes in bfloat16, which has float32's exponent range, so no loss scaling is
needed: :class:`CPUAmpOptimWrapper` is the plain ``OptimWrapper`` with the forward and loss of
each training step under ``torch.autocast('cpu', dtype=torch.bfloat16)``.
:func:`configure_amp` is what ``--amp`` of ``tools/train.py`` applies.
"""
from contextlib import contextmanager
from typing import Iterator

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn

# AmpOptimWrapper arguments that have no meaning without loss scaling
_GPU_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose training forward runs under bfloat16 autocast on the CPU (the
    gradients and the optimizer state stay float32)."""

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """mmengine's context (gradient accumulation) plus CPU bfloat16 autocast."""
        with super().optim_context(model), torch.autocast('cpu', dtype=torch.bfloat16):
            yield


def configure_amp(cfg, cuda_available: bool) -> str:
    """Turns on mixed precision in the mmengine config ``cfg`` and returns a sentence for the
    log: mmengine's ``AmpOptimWrapper`` (float16 with dynamic loss scaling) with a GPU,
    :class:`CPUAmpOptimWrapper` (bfloat16 autocast) without one."""
    wrapper = cfg.optim_wrapper
    if cuda_available:
        wrapper.type = 'AmpOptimWrapper'
        wrapper.setdefault('loss_scale', 'dynamic')
        return 'mixed precision: AmpOptimWrapper (float16 autocast, dynamic loss scaling)'
    wrapper.type = 'CPUAmpOptimWrapper'
    for key in _GPU_ONLY_KEYS:
        wrapper.pop(key, None)
    return ('mixed precision: no GPU, so --amp trains with bfloat16 autocast on the CPU '
            '(CPUAmpOptimWrapper; no loss scaling needed)')

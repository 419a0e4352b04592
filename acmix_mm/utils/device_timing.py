"""Timing, mixed precision and peak memory of benchmark steps on the CPU or a CUDA GPU.

The benchmark tools time a case and its baseline in one process, their steps alternating, so that
a slow spell of the machine hits both alike. On CUDA a step is timed with CUDA events (the
device's own clock, after a synchronisation), and its peak memory is the allocator's peak over the
step less what was allocated before it (the step's working memory: activations, gradients,
workspace); on the CPU, wall-clock time and the growth of the peak resident memory.
"""
import contextlib
import platform
import time
from typing import Callable, ContextManager, Dict, List, Optional, Sequence

import torch

from .benchmarking import peak_rss_bytes, reset_peak_rss


def amp_dtype(device: str) -> torch.dtype:
    """The autocast dtype of ``--amp``: float16 on CUDA (as mmengine's AmpOptimWrapper trains),
    bfloat16 on the CPU (the dtype CPU autocast supports)."""
    return torch.float16 if device == 'cuda' else torch.bfloat16


def dtype_name(device: str, amp: bool) -> str:
    """``'float32'`` or e.g. ``'float16 (autocast)'``, as the reports print it."""
    return f'{str(amp_dtype(device))[6:]} (autocast)' if amp else 'float32'


def autocast(device: str, amp: bool) -> ContextManager:
    """``torch.autocast`` to :func:`amp_dtype` when ``amp``, else a no-op context."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=amp_dtype(device))


def synchronize(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def time_step(step: Callable[[], object], device: str) -> float:
    """Seconds that one call of ``step`` takes (CUDA events on a GPU, after the work queued
    before it has finished)."""
    if device != 'cuda':
        start = time.perf_counter()
        step()
        return time.perf_counter() - start
    torch.cuda.synchronize()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    step()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3


def time_alternating(steps: Sequence[Callable[[], object]], device: str, repeat: int,
                     warmup: int = 2) -> List[float]:
    """The fastest of ``repeat`` timed calls of each step, the steps alternating call by call
    (after ``warmup`` untimed calls of each: autotuning, Triton compilation, allocator growth)."""
    if repeat < 1 or warmup < 0:
        raise ValueError(f'repeat must be >= 1 and warmup >= 0, got repeat={repeat}, '
                         f'warmup={warmup}')
    for _ in range(warmup):
        for step in steps:
            step()
    synchronize(device)
    times: List[List[float]] = [[] for _ in steps]
    for _ in range(repeat):
        for step, step_times in zip(steps, times):
            step_times.append(time_step(step, device))
    return [min(t) for t in times]


def step_peak_mb(step: Callable[[], object], device: str) -> float:
    """Peak memory of one call of ``step`` over the state before it, in MiB (on CUDA the
    allocator's peak; on the CPU the peak resident memory, which over-counts what the allocator
    keeps cached)."""
    if device != 'cuda':
        base = reset_peak_rss()
        step()
        return max(0, peak_rss_bytes() - base) / 2**20
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def environment(device: str) -> Dict[str, Optional[str]]:
    """What the results were measured on: the GPU (or CPU), torch, CUDA, Triton, Python."""
    try:
        import triton
        triton_version: Optional[str] = triton.__version__
    except ImportError:
        triton_version = None
    cuda = device == 'cuda'
    return dict(
        device=device,
        device_name=(torch.cuda.get_device_name() if cuda else
                     platform.processor() or platform.machine()),
        torch=torch.__version__, cuda=torch.version.cuda if cuda else None,
        triton=triton_version, python=platform.python_version(),
        tf32_matmul=str(torch.backends.cuda.matmul.allow_tf32) if cuda else None,
        tf32_cudnn=str(torch.backends.cudnn.allow_tf32) if cuda else None)


def describe(env: Dict[str, Optional[str]]) -> str:
    """One line naming the machine and versions of :func:`environment`."""
    text = f'{env["device_name"]} ({env["device"]}), torch {env["torch"]}'
    if env.get('cuda'):
        text += (f', CUDA {env["cuda"]}, TF32 matmul {env["tf32_matmul"]}, '
                 f'TF32 cuDNN {env["tf32_cudnn"]}')
    return text + f', Triton {env["triton"] or "not installed"}, Python {env["python"]}'

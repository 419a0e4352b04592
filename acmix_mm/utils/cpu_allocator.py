"""glibc's malloc for CPU training and testing: keep freed memory for the next allocation.

With its defaults glibc serves every allocation over 32 MB (and, below that, whatever exceeds its
dynamic threshold) with fresh pages from the kernel and returns them when the block is freed; the
next tensor of that size faults its pages in again, each one zeroed by the kernel. A training
iteration of a detector at 800x1333 allocates and frees gigabytes of such tensors, and ACmix's
layers, with larger temporaries than a convolution's, more of them (the README's speed section
has the measurements).

:func:`retain_freed_memory` makes glibc serve every allocation from its heap (no ``mmap`` per
block, ``M_MMAP_MAX = 0``) and never give freed heap memory back (``M_TRIM_THRESHOLD = -1``), so
that later tensors reuse pages that are already mapped (glibc still maps blocks of over 64 MB
that threads other than the main one allocate; PyTorch's CPU work allocates in the calling
thread). The process's resident memory then stays at its high-water mark. ``tools/train.py``,
``tools/test.py``, ``tools/demo.py`` and the benchmarks' timing runs do this on the CPU unless
``--cpu-allocator system`` is given (:func:`add_cpu_allocator_argument`); like ``jemalloc`` or
``tcmalloc`` (which PyTorch's CPU tuning guide recommends through ``LD_PRELOAD``), it changes the
whole process, baseline models alike.
"""
import argparse
import ctypes
import platform
from typing import Optional

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
CPU_ALLOCATORS = ('retain', 'system')


def add_cpu_allocator_argument(
        parser: argparse.ArgumentParser,
        help: str = 'on the CPU: "retain" makes glibc keep freed memory for reuse (fewer page '
        'faults, faster; resident memory stays at its peak), "system" keeps its defaults'
) -> None:
    """``--cpu-allocator {retain,system}`` (default ``retain``), for
    :func:`configure_cpu_allocator`."""
    parser.add_argument('--cpu-allocator', choices=CPU_ALLOCATORS, default='retain', help=help)


def _glibc() -> Optional[ctypes.CDLL]:
    """The C library when it is glibc (which has ``mallopt`` with these meanings), else None."""
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return None
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols, glibc's among them
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def retain_freed_memory() -> bool:
    """Makes glibc's malloc keep freed memory for reuse (see the module's doc), for the rest of
    the process and the processes it forks.

    Returns:
        True where it took effect; False where the C library is not glibc (nothing changes).
    """
    libc = _glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success; -1 as the trim threshold means "never trim"
    return libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, -1) == 1


def configure_cpu_allocator(choice: str, on_cpu: bool) -> str:
    """Applies ``--cpu-allocator``.

    Args:
        choice: ``'retain'`` (:func:`retain_freed_memory`) or ``'system'`` (glibc's defaults).
        on_cpu: whether the run computes on the CPU; otherwise nothing changes.

    Returns:
        A line for the log that says what the process's allocator does.

    Raises:
        ValueError: for a ``choice`` not in :data:`CPU_ALLOCATORS`.
    """
    if choice not in CPU_ALLOCATORS:
        raise ValueError(f'cpu_allocator must be one of {CPU_ALLOCATORS}, got {choice!r}')
    if not on_cpu:
        return 'CPU allocator: unchanged (the run computes on a GPU)'
    if choice == 'system':
        return "CPU allocator: the C library's defaults (--cpu-allocator system)"
    if retain_freed_memory():
        return ('CPU allocator: glibc keeps freed memory for reuse (M_MMAP_MAX=0, '
                'M_TRIM_THRESHOLD=-1: fewer page faults, resident memory stays at its peak; '
                '--cpu-allocator system keeps the defaults)')
    return ("CPU allocator: the C library's defaults (not glibc: --cpu-allocator retain has "
            'no effect)')

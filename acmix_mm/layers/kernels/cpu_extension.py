"""Builds (once, cached) and loads the C++ CPU kernels with ``torch.utils.cpp_extension``.

The set-up script builds them; later loads reuse the cached library and rebuild only when the
source changes. The library is tagged with the instruction set it was built for, so a cache
shared by machines with different CPUs never runs instructions a machine lacks.
"""
import functools
import logging
import os.path as osp
import platform
from types import ModuleType
from typing import List, Optional

_SOURCE = osp.join(osp.dirname(osp.abspath(__file__)), 'sliding_window_cpu.cpp')
logger = logging.getLogger(__name__)


def _cpu_flags() -> set:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def _isa_flags() -> List[str]:
    if platform.machine() in ('x86_64', 'AMD64') and {'avx2', 'fma'} <= _cpu_flags():
        return ['-mavx2', '-mfma']
    return []


@functools.lru_cache(maxsize=None)
def load_cpu_extension(verbose: bool = False) -> Optional[ModuleType]:
    """The compiled module (``forward``, ``backward``), or None where it cannot be built."""
    from torch.utils.cpp_extension import load
    isa = _isa_flags()
    name = 'acmix_mm_cpu_' + ('avx2' if isa else 'generic')
    try:
        return load(name=name, sources=[_SOURCE], extra_cflags=['-O3', '-ffp-contract=fast', '-fno-trapping-math', '-fopenmp'] + isa,
                    extra_ldflags=['-fopenmp'], verbose=verbose)
    except Exception as exc:  # no compiler, no ninja, a failed build: the fallback takes over
        logger.warning('acmix_mm: the C++ CPU kernel is unavailable (%s); using the PyTorch '
                       'fallback', exc)
        return None

"""Builds (once, cached) and loads the C++ CPU kernels with ``torch.utils.cpp_extension``.

The set-up script builds them; later loads reuse the cached library and rebuild only when the
source changes. The library is tagged with the instruction set it was built for, so a cache
shared by machines with different CPUs never runs instructions a machine lacks.
"""
import functools
import hashlib
import os.path as osp
import platform
import warnings
from types import ModuleType
from typing import Any, List, Optional

import torch

_DIR = osp.dirname(osp.abspath(__file__))
_SOURCES = [osp.join(_DIR, name)
            for name in ('extension.cpp', 'sliding_window_cpu.cpp', 'conv_path_cpu.cpp',
                         'acmix_inference_cpu.cpp', 'acmix_backward_cpu.cpp')]
_HEADERS = [osp.join(_DIR, name)
            for name in ('cpu_vectors.h', 'transpose_tiles.h', 'kernels.h')]


def _cpu_flags() -> set:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


_AVX512 = ('avx512f', 'avx512vl', 'avx512dq', 'avx512bw')


def _isa_flags() -> List[str]:
    """The compiler's instruction-set flags for this CPU: AVX2 and FMA, plus AVX-512 where the
    CPU has it (the attention kernel then runs 64-byte vectors with twice the registers)."""
    flags = _cpu_flags()
    if platform.machine() not in ('x86_64', 'AMD64') or not {'avx2', 'fma'} <= flags:
        return []
    return ['-mavx2', '-mfma'] + ([f'-m{f}' for f in _AVX512] if set(_AVX512) <= flags else [])


def _source_digest() -> str:
    """Names the build after its sources and headers (torch rebuilds on a changed source file but
    does not see headers) and their folder: torch's build folder records the sources' paths, so
    two checkouts sharing one name would rebuild it in turn on every load."""
    digest = hashlib.sha1(_DIR.encode())
    for path in _SOURCES + _HEADERS:
        with open(path, 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()[:10]


@functools.lru_cache(maxsize=None)
def load_cpu_extension(verbose: bool = False) -> Optional[ModuleType]:
    """The compiled module (``sliding_window_forward``, ``sliding_window_backward``,
    ``conv_path_forward``, ``conv_path_backward``, ``conv_path_pack``, ``conv_path_unpack``,
    ``acmix_mix_paths``, ``acmix_stage_backward``), or None where it cannot be built."""
    from torch.utils.cpp_extension import load
    isa = _isa_flags()
    tag = 'avx512' if '-mavx512f' in isa else 'avx2' if isa else 'generic'
    name = f'acmix_mm_cpu_{tag}_{_source_digest()}'
    try:
        return load(name=name, sources=_SOURCES,
                    extra_cflags=['-O3', '-ffp-contract=fast', '-fno-trapping-math', '-fopenmp'] +
                    isa, extra_ldflags=['-fopenmp'], verbose=verbose)
    except Exception as exc:  # no compiler, no ninja, a failed build: the fallback takes over
        warnings.warn(kernels_unavailable_message(exc), RuntimeWarning, stacklevel=2)
        return None


def run_kernel(name: str, *args: Any) -> Any:
    """``load_cpu_extension().<name>(*args)``, recorded by ``torch.profiler`` as
    ``acmix_mm::<name>``: the extension's functions are plain calls, not dispatcher operators, so
    a profile would otherwise count their time as no operator's (or as the enclosing one's)."""
    kernel = getattr(load_cpu_extension(), name)
    if not torch.autograd._profiler_enabled():  # a record costs ~15 us, as much as a small kernel
        return kernel(*args)
    with torch.profiler.record_function(f'acmix_mm::{name}'):
        return kernel(*args)


def kernels_unavailable_message(exc: BaseException) -> str:
    """The one-time warning where the C++ kernels cannot be built: the cause and the fix."""
    cause = (str(exc).strip().splitlines() or [''])[0][:300]
    return (f'acmix_mm: the C++ CPU kernels could not be built ({type(exc).__name__}: {cause}), '
            'so every ACmix layer on the CPU runs the much slower PyTorch fallback. Fix: install '
            'a C++ compiler with OpenMP (e.g. `apt-get install g++`) and `pip install ninja`, then '
            'build them with `python -m acmix_mm.layers.kernels.build` (it shows the compiler '
            'output). ACMIX_MM_KERNEL=python selects the fallback without trying to build.')

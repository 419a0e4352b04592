"""cpu_allocator: with ``retain`` a freed block's pages serve the next allocation without page
faults (measured in a fresh process, where the setting applies); bad choices are named."""
import json
import os
import subprocess
import sys

import pytest

from acmix_mm.utils import cpu_allocator
from acmix_mm.utils.cpu_allocator import configure_cpu_allocator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _huge_pages_always():
    """Transparent huge pages for every mapping: a fresh 64 MB block then faults in 2 MB pages."""
    try:
        with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
            return '[always]' in f.read()
    except OSError:
        return False


# Faults of allocating and touching 64 MB, freeing it, then 48 MB: first straight from the C
# library (nothing allocates between the calls, so a freed block at the heap's top is trimmed back
# to the system unless M_TRIM_THRESHOLD says never), then as PyTorch tensors. The second block fits
# in the first one's freed memory whatever else the heap holds; a block of the same size may not
# (posix_memalign asks for the size plus the alignment, and whether two freed neighbours merge
# depends on where small allocations landed: seen both ways, and CI failed on it).
FAULTS = '''
import ctypes, importlib.util, json, resource, sys
# the module alone: importing the package imports the OpenMMLab stack (seconds)
spec = importlib.util.spec_from_file_location('cpu_allocator', 'acmix_mm/utils/cpu_allocator.py')
cpu_allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cpu_allocator)
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
minflt = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
note = cpu_allocator.configure_cpu_allocator(sys.argv[1], on_cpu=True)

def faults_of_malloc(mb):
    before = minflt()
    p = libc.malloc(mb << 20)
    libc.memset(p, 1, mb << 20)
    libc.free(p)
    return minflt() - before

malloc_faults = [faults_of_malloc(mb) for mb in (64, 48)]
import torch

def faults_of_a_tensor(mb):
    before = minflt()
    t = torch.ones(mb * 2**18)
    t.add_(1)
    return minflt() - before

print(json.dumps(dict(note=note, malloc_faults=malloc_faults,
                      faults=[faults_of_a_tensor(mb) for mb in (64, 48)])))
'''


def _faults(choice):
    # the C library's and PyTorch's allocation settings left out of the environment
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('MALLOC_', 'GLIBC_TUNABLES', 'THP_MEM_ALLOC'))}
    out = subprocess.run([sys.executable, '-c', FAULTS, choice], capture_output=True, text=True,
                         env=dict(env, OMP_NUM_THREADS='1'), cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.skipif(cpu_allocator._glibc() is None, reason='the C library is not glibc')
@pytest.mark.skipif(_huge_pages_always(), reason='transparent huge pages for every mapping')
def test_retain_reuses_freed_pages_and_system_faults_them_again():
    pages = 2**20 // 4096  # a megabyte's
    system, retain = _faults('system'), _faults('retain')
    for faults in ('malloc_faults', 'faults'):
        assert system[faults][1] > 48 * pages // 2, system
        assert retain[faults][0] > 64 * pages // 2, retain
        assert retain[faults][1] < 48 * pages // 20, retain
    assert 'keeps freed memory' in retain['note'] and 'defaults' in system['note']


def test_bad_choice_is_named():
    with pytest.raises(ValueError, match=r"cpu_allocator must be one of \('retain', 'system'\), "
                       r"got 'jemalloc'"):
        configure_cpu_allocator('jemalloc', on_cpu=True)


def test_gpu_runs_and_other_c_libraries_keep_the_allocator(monkeypatch):
    monkeypatch.setattr(cpu_allocator, 'retain_freed_memory', lambda: pytest.fail('changed'))
    assert 'unchanged' in configure_cpu_allocator('retain', on_cpu=False)
    monkeypatch.undo()
    monkeypatch.setattr(cpu_allocator, '_glibc', lambda: None)
    assert cpu_allocator.retain_freed_memory() is False
    assert 'no effect' in configure_cpu_allocator('retain', on_cpu=True)

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


# Faults of allocating, touching and freeing 64 MB, four times over. (Freed blocks serve the
# next one once they are adjacent: the second allocation, a little larger than the first block
# for its alignment, may not fit in it.)
FAULTS = '''
import importlib.util, json, resource, sys
import torch
# the module alone: importing the package imports the OpenMMLab stack (seconds)
spec = importlib.util.spec_from_file_location('cpu_allocator', 'acmix_mm/utils/cpu_allocator.py')
cpu_allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cpu_allocator)
note = cpu_allocator.configure_cpu_allocator(sys.argv[1], on_cpu=True)

def faults_of_a_64mb_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(16 * 2**20)
    t.add_(1)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

print(json.dumps(dict(note=note, faults=[faults_of_a_64mb_tensor() for _ in range(4)])))
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
    pages = 64 * 2**20 // 4096
    system, retain = _faults('system'), _faults('retain')
    assert min(system['faults']) > pages // 2, system
    assert retain['faults'][0] > pages // 2 and min(retain['faults'][1:]) < pages // 20, retain
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

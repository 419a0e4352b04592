"""Helpers of the benchmark tools, which run every case in a fresh process.

Peak memory on the CPU: the worker runs with :data:`RETURN_FREED_MEMORY_ENV`, so that glibc hands
every freed block over 64 KiB back to the system at once; resident memory then follows the tensors
alive, and the peak over a step (Linux ``VmHWM`` after ``clear_refs``) is that step's working set.
"""
import json
import os
import subprocess
import sys
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple, Union

RETURN_FREED_MEMORY_ENV = {'MALLOC_MMAP_THRESHOLD_': '65536', 'MALLOC_TRIM_THRESHOLD_': '0'}


def allocator_note(cpu_allocator: str = 'system') -> str:
    """How the workers (which inherit this environment) get CPU memory, for the reports: PyTorch
    reads ``THP_MEM_ALLOC_ENABLE`` once, at start-up; with ``1`` it puts every allocation of
    2 MB or more on transparent huge pages (512 times fewer page faults on fresh memory).
    ``cpu_allocator`` is the timing workers' ``--cpu-allocator``
    (:mod:`acmix_mm.utils.cpu_allocator`; memory workers always keep the C library's defaults,
    see the module's doc)."""
    if os.environ.get('THP_MEM_ALLOC_ENABLE') == '1':
        pages = 'allocations of 2 MB or more on transparent huge pages (THP_MEM_ALLOC_ENABLE=1)'
    else:
        pages = "PyTorch's default CPU allocation (4 KiB pages; THP_MEM_ALLOC_ENABLE unset)"
    if cpu_allocator == 'retain':
        return (pages + '; timings with glibc keeping freed memory for reuse (--cpu-allocator '
                'retain, as tools/train.py and tools/test.py run on the CPU)')
    return pages + "; timings with the C library's malloc defaults (--cpu-allocator system)"


def _status_kb(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def reset_peak_rss() -> int:
    """Resets the process's peak resident memory (``clear_refs``); returns the current resident
    memory in bytes."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    return _status_kb('VmRSS') * 1024


def peak_rss_bytes() -> int:
    """Peak resident memory since the last :func:`reset_peak_rss`, in bytes."""
    return _status_kb('VmHWM') * 1024


def saved_tensor_storages(fn: Callable[[], Any],
                          exclude: Iterable = ()) -> Tuple[Dict[int, int], Any]:
    """Runs ``fn`` (a forward pass) and records what autograd saves for the backward.

    Args:
        fn: called with no arguments, gradients enabled.
        exclude: tensors whose storages are not counted (the parameters, kept anyway).

    Returns:
        ``{storage address: bytes}`` of every storage saved (each once, however many tensors view
        it) and ``fn``'s result.
    """
    import torch
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return saved, out


def run_worker(script: str, args: List[str], threads: int,
               measure_memory: bool) -> Union[dict, List[dict]]:
    """Runs ``python script args`` in a fresh process with ``threads`` OpenMP threads and returns
    the last JSON line it prints; a failure raises with the end of its stderr."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if measure_memory:
        env.update(RETURN_FREED_MEMORY_ENV)
    out = subprocess.run([sys.executable, script] + args, capture_output=True, text=True, env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(('{', '['))]
    if out.returncode or not lines:
        raise RuntimeError(f'{" ".join(args)} failed:\n{out.stderr[-3000:]}')
    return json.loads(lines[-1])


def fastest_over_rounds(jobs: Sequence[tuple], run: Callable[..., Union[dict, List[dict]]],
                        rounds: int, progress) -> Dict[Tuple[str, str], dict]:
    """Runs every job ``rounds`` times, the jobs alternating so that a slow spell of the machine
    hits them all, and keeps each ``(name, mode)``'s fastest result (``run(*job)`` returns a dict,
    or a list of them, with ``name``, ``mode`` and ``seconds``); ``progress.update()`` after each
    run."""
    best = {}
    for _ in range(rounds):
        for job in jobs:
            results = run(*job)
            for result in results if isinstance(results, list) else [results]:
                key = (result['name'], result['mode'])
                if key not in best or result['seconds'] < best[key]['seconds']:
                    best[key] = result
            progress.update()
    return best


def write_report(out: str, script: str, argv: List[str], setting: str, table: str,
                 results: List[dict]) -> None:
    """Writes ``out.md`` (the command that produced it, the measuring ``setting`` and the markdown
    ``table``) and ``out.json`` (the raw ``results``); the caller draws ``out.png``."""
    os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
    with open(out + '.md', 'w') as f:
        f.write(f'Command: `python {script} {" ".join(argv)}`\n\n{setting}\n\n{table}\n')
    with open(out + '.json', 'w') as f:
        json.dump(results, f, indent=1)

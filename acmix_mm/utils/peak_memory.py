"""Peak resident memory of a step on Linux, for benchmarks that run each case in its own process.

Run the process with :data:`RETURN_FREED_MEMORY_ENV` so that glibc hands every freed block over
64 KiB back to the system at once: resident memory then follows the tensors alive, and the peak
over a step is that step's peak working set.
"""
RETURN_FREED_MEMORY_ENV = {'MALLOC_MMAP_THRESHOLD_': '65536', 'MALLOC_TRIM_THRESHOLD_': '0'}


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

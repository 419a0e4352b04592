"""Local file writes that are never seen half-done: mmengine's ``LocalBackend`` with ``put`` and
``put_text`` writing to a temporary name in the same directory, then renaming.

mmengine's ``save_checkpoint`` ends in ``get_file_backend(path).put(bytes, path)``. With the
plain ``LocalBackend`` a job killed during that write leaves a truncated ``iter_N.pth`` under the
final name. Here the bytes go to ``.iter_N.pth.<pid>.tmp``, are flushed to disk (``fsync``) and
only then renamed (``os.replace``, atomic on POSIX and Windows): the final name holds either
nothing or a complete file. Importing ``acmix_mm`` registers this class for local paths (the
``''`` prefix and the name ``local``), so every checkpoint a Runner writes to a local disk goes
through it.
"""
import os
import os.path as osp
from pathlib import Path
from typing import Union

from mmengine.fileio import LocalBackend, register_backend


def write_atomically(data: Union[bytes, str], filepath: Union[str, Path],
                     encoding: str = 'utf-8') -> None:
    """Writes ``data`` to ``filepath`` through a temporary file and a rename.

    Args:
        data: bytes, or text encoded with ``encoding``.
        filepath: the final path; its directory is created if missing.
        encoding: text encoding for ``str`` data.
    """
    filepath = os.fspath(filepath)
    directory = osp.dirname(osp.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    tmp = osp.join(directory, f'.{osp.basename(filepath)}.{os.getpid()}.tmp')
    payload = data.encode(encoding) if isinstance(data, str) else data
    try:
        with open(tmp, 'wb') as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` whose writes are atomic (see :func:`write_atomically`)."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        """Writes the bytes ``obj`` to ``filepath`` atomically."""
        write_atomically(obj, filepath)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        """Writes the text ``obj`` to ``filepath`` atomically."""
        write_atomically(obj, filepath, encoding)


register_backend('local', AtomicLocalBackend, force=True, prefixes='')

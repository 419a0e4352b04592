"""``python TOOL ARGS`` for the tests, without importing the OpenMMLab stack again for every call.

Importing torch, mmengine, mmdet, mmseg, mmpretrain and acmix_mm takes 6-9 s on a 2-core machine,
and the tests run the project's tools several dozen times. :func:`run` hands each call of a Python
tool to a server process that has imported them once; the server forks, and the child runs the
tool as ``python TOOL ARGS`` does: its own process, ``sys.argv`` and ``sys.path[0]`` as the
interpreter sets them, ``__name__ == '__main__'``, the given working directory and environment,
stdin from ``/dev/null``, stdout and stderr captured, an uncaught exception printed as a traceback
with exit status 1, ``sys.exit`` codes kept, exit handlers run. What the server imported saw the
server's environment: a call whose environment matters at import time (``TRITON_INTERPRET``), or
any command other than ``python SCRIPT.py``, runs in a fresh interpreter through
:func:`subprocess.run`, as do all calls where ``os.fork`` is unavailable.
"""
import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from typing import Dict, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# imported before the tools are: mmengine's registries filled by the three frameworks and acmix_mm
PRELOAD = ('torch', 'mmengine.runner', 'mmdet.models', 'mmseg.models', 'mmpretrain.models',
           'acmix_mm')
# environment variables that modules read when imported: calls that change them get a fresh process
IMPORT_TIME_ENV = ('TRITON_INTERPRET', 'PYTHONPATH', 'PYTHONHASHSEED', 'LD_PRELOAD',
                   'TORCH_EXTENSIONS_DIR', 'MPLBACKEND')

_SERVER = r'''
import importlib, json, os, sys, time
sys.path.insert(0, ROOT)
for name in PRELOAD:
    importlib.import_module(name)
del sys.path[0]
base_path = sys.path[1:]  # sys.path[0] is this server's directory; each tool gets its own
requests, replies = sys.stdin, os.fdopen(os.dup(1), 'w')
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing but replies on the reply pipe


def child(req):
    import atexit, runpy
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                            (1, req['stdout'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, req['stderr'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    os.chdir(req['cwd'])
    os.environ.clear()
    os.environ.update(req['env'])
    script = req['argv'][0]
    sys.argv = list(req['argv'])
    sys.path[:] = [os.path.dirname(os.path.abspath(script))] + base_path
    code = 0
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException as exc:
        tb = exc.__traceback__  # from the script's frame on, as the interpreter prints it
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next
        tb = tb or exc.__traceback__
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code & 0xFF)


while True:
    line = requests.readline()
    if not line:
        break
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(req)
    deadline = time.monotonic() + req['timeout']
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            reply = dict(returncode=os.waitstatus_to_exitcode(status))
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            reply = dict(timeout=True)
            break
        time.sleep(0.005)
    replies.write(json.dumps(reply) + '\n')
    replies.flush()
'''


class _Server:
    """The forking server: started on first use, stopped when the test session's process exits."""

    def __init__(self) -> None:
        self._proc: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()
        atexit.register(self.close)

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            code = f'ROOT = {ROOT!r}\nPRELOAD = {PRELOAD!r}\n' + _SERVER
            self._proc = subprocess.Popen([sys.executable, '-c', code], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True, cwd=ROOT)
        return self._proc

    def run(self, argv: Sequence[str], cwd: str, env: Dict[str, str],
            timeout: float) -> subprocess.CompletedProcess:
        with self._lock, tempfile.TemporaryDirectory() as tmp:
            out, err = os.path.join(tmp, 'stdout'), os.path.join(tmp, 'stderr')
            proc = self._start()
            request = dict(argv=list(argv[1:]), cwd=cwd, env=env, timeout=timeout, stdout=out,
                           stderr=err)
            proc.stdin.write(json.dumps(request) + '\n')
            proc.stdin.flush()
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError('the tool server of tests/tool_process.py ended; exit status '
                                   f'{proc.wait()}')
            reply = json.loads(line)
            stdout, stderr = (open(p, errors='replace').read() if os.path.exists(p) else ''
                              for p in (out, err))
            if reply.get('timeout'):
                raise subprocess.TimeoutExpired(list(argv), timeout, stdout, stderr)
            return subprocess.CompletedProcess(list(argv), reply['returncode'], stdout, stderr)

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=30)


_server = _Server()


def forks(argv: Sequence[str], env: Dict[str, str]) -> bool:
    """Whether :func:`run` hands ``argv`` to the server: ``python SCRIPT.py ...`` with this
    interpreter, ``os.fork`` available, and the import-time variables unchanged."""
    return (hasattr(os, 'fork') and len(argv) >= 2 and argv[0] == sys.executable
            and str(argv[1]).endswith('.py')
            and all(env.get(k) == os.environ.get(k) for k in IMPORT_TIME_ENV))


def run(argv: Sequence[str], cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None) -> subprocess.CompletedProcess:
    """``subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)``,
    Python tools through the forking server (see the module's doc).

    Raises:
        subprocess.TimeoutExpired: where the call ran past ``timeout`` seconds (it is killed).
    """
    argv = [str(a) for a in argv]
    env = dict(os.environ if env is None else env)
    cwd = os.path.abspath(os.getcwd() if cwd is None else str(cwd))
    if not forks(argv, env):
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
    return _server.run(argv, cwd, env, 1e9 if timeout is None else timeout)


__all__ = ['run', 'forks']

"""tests/tool_process.py: a Python tool run through the forking server behaves as in a fresh
``python TOOL ARGS`` (compared with :func:`subprocess.run` of the same call)."""
import os
import subprocess
import sys
import textwrap

import pytest

import tool_process

SCRIPT = textwrap.dedent('''
    import atexit, os, sys
    atexit.register(lambda: print('exit handler ran', flush=True))
    print('name', __name__, 'argv', sys.argv[1:], 'cwd', os.getcwd())
    print('path0', sys.path[0], 'var', os.environ.get('TOOL_PROCESS_VAR'))
    print('stdin', repr(sys.stdin.read()))
    print('to stderr', file=sys.stderr)
    action = sys.argv[1]
    if action == 'exit':
        sys.exit(int(sys.argv[2]))
    if action == 'message':
        sys.exit('a message for sys.exit')
    if action == 'raise':
        raise ValueError('raised by the tool')
    if action == 'sleep':
        import time
        time.sleep(60)
''')


@pytest.fixture
def script(tmp_path):
    path = tmp_path / 'tools' / 'tool.py'
    path.parent.mkdir()
    path.write_text(SCRIPT)
    return str(path)


@pytest.mark.parametrize('args', [['ok'], ['exit', '3'], ['exit', '0'], ['message'], ['raise']])
def test_forked_call_matches_a_fresh_interpreter(script, tmp_path, args):
    argv = [sys.executable, script, *args]
    env = dict(os.environ, TOOL_PROCESS_VAR='set for this call')
    assert tool_process.forks(argv, env)
    got = tool_process.run(argv, cwd=str(tmp_path), env=env, timeout=60)
    want = subprocess.run(argv, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)
    assert 'set for this call' in got.stdout and "name __main__" in got.stdout
    assert got.returncode == (int(args[1]) if args[0] == 'exit' else 0 if args[0] == 'ok' else 1)


def test_timeout_kills_the_call(script):
    with pytest.raises(subprocess.TimeoutExpired):
        tool_process.run([sys.executable, script, 'sleep'], timeout=2)
    assert tool_process.run([sys.executable, script, 'exit', '5'], timeout=60).returncode == 5


def test_calls_that_must_not_fork_get_a_fresh_interpreter(script):
    env = dict(os.environ, TRITON_INTERPRET='1')
    assert not tool_process.forks([sys.executable, script, 'ok'], env)
    assert not tool_process.forks(['bash', '-c', 'true'], dict(os.environ))
    out = tool_process.run(['bash', '-c', 'echo from bash; exit 4'])
    assert (out.returncode, out.stdout) == (4, 'from bash\n')

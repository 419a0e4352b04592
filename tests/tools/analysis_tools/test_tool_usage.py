"""The GPU tools print their usage on any machine (no CUDA, no Triton needed for --help)."""
import os
import sys

import pytest
import torch

import tool_process

from . import load_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def run(args):
    return tool_process.run(args, cwd=ROOT, timeout=120)


def test_gpu_check_prints_usage_without_a_gpu():
    out = run([sys.executable, 'tools/analysis_tools/gpu_check_sliding_window.py', '--help'])
    assert out.returncode == 0 and out.stdout.startswith('usage: gpu_check_sliding_window.py')


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message of a CPU-only machine')
def test_gpu_check_says_it_needs_cuda():
    out = run([sys.executable, 'tools/analysis_tools/gpu_check_sliding_window.py'])
    assert out.returncode == 1 and 'needs a CUDA GPU' in out.stderr


def test_wheelhouse_script_prints_usage_and_refuses_bad_arguments():
    script = 'tools/analysis_tools/make_gpu_wheelhouse.sh'
    out = run(['bash', script, '--help'])
    assert out.returncode == 0 and 'MMCV_WITH_OPS=0' in out.stdout
    out = run(['bash', script, 'a', 'b'])
    assert out.returncode == 1 and 'got 2 arguments: a b' in out.stderr
    out = run(['bash', script, '--fast'])
    assert out.returncode == 1 and "unknown option '--fast'" in out.stderr


def test_segmentor_benchmark_refuses_bad_arguments_by_name(capsys):
    """In this process: the parse comes before any work (two interpreters took 17 s)."""
    tool = load_tool('benchmark_segmentor', 'tools/analysis_tools/benchmark_segmentor.py')
    for argv, message in ((['--batch', '0'], 'argument --batch: must be a positive integer, got 0'),
                          (['--size', '16', '64'], '--size must be at least 32 32')):
        with pytest.raises(SystemExit) as exit_info:
            tool.parse_args(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err

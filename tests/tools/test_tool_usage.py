"""Every tool, called without its arguments or with bad ones, prints its usage or a clear error
(never a traceback or bash's "unbound variable") and exits non-zero."""
import os
import sys

import pytest

import tool_process

from . import load_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
CONFIG = 'configs/demo/upernet_acmix-swin-slim_demo-shapes.py'
PY = [sys.executable]

CASES = [
    # command, a word the output must contain
    (['bash', 'tools/dist_train.sh'], 'usage: bash tools/dist_train.sh CONFIG NPROC'),
    (['bash', 'tools/dist_train.sh', CONFIG], 'usage: bash tools/dist_train.sh CONFIG NPROC'),
    (['bash', 'tools/dist_train.sh', '--help'], 'usage: bash tools/dist_train.sh CONFIG NPROC'),
    (['bash', 'tools/dist_train.sh', CONFIG, 'two'], "NPROC (processes per node) must be a "
                                                     "positive integer, got 'two'"),
    (['bash', 'tools/dist_train.sh', CONFIG, '0'], 'NPROC'),
    (['bash', 'tools/dist_train.sh', 'configs/nope.py', '2'], "CONFIG 'configs/nope.py' does "
                                                              'not exist'),
    (['bash', 'tools/dist_test.sh'], 'usage: bash tools/dist_test.sh CONFIG CHECKPOINT NPROC'),
    (['bash', 'tools/dist_test.sh', CONFIG, 'x.pth'], 'usage: bash tools/dist_test.sh'),
    (['bash', 'tools/dist_test.sh', CONFIG, 'x.pth', '-1'], 'NPROC'),
    (['bash', 'tools/dist_launch.sh'], 'usage: bash tools/dist_launch.sh SCRIPT NPROC'),
    (['bash', 'tools/dist_launch.sh', 'nope.py', '2', CONFIG], "SCRIPT 'nope.py'"),
    (['bash', 'tools/slurm_train.sh'], 'usage: GPUS=16 bash tools/slurm_train.sh PARTITION'),
    (['bash', 'tools/slurm_train.sh', 'p', 'job', 'configs/nope.py'], "'configs/nope.py'"),
    (PY + ['tools/train.py'], 'usage: train.py'),
    (PY + ['tools/train.py', CONFIG, '--no-such-option'], 'unrecognized arguments'),
    (PY + ['tools/train.py', 'configs/nope.py'], "config 'configs/nope.py' does not exist"),
    (PY + ['tools/train.py', CONFIG, '--cpu-allocator', 'jemalloc'],
     "argument --cpu-allocator: invalid choice: 'jemalloc' (choose from 'retain', 'system')"),
    (PY + ['tools/test.py'], 'usage: test.py'),
    (PY + ['tools/test.py', CONFIG], 'the following arguments are required: checkpoint'),
    (PY + ['tools/test.py', CONFIG, 'missing.pth'], "checkpoint 'missing.pth' does not exist"),
    (PY + ['tools/demo.py', '--iters', '0'], 'argument --iters: must be a positive integer, got 0'),
    (PY + ['tools/demo.py', '--iters', 'ten'],
     "argument --iters: must be a positive integer, got 'ten'"),
    (PY + ['tools/model_converters/acmix2mm.py'], 'usage: acmix2mm.py'),
    (PY + ['tools/model_converters/acmix2mm.py', 'missing.pth', 'out.pth'], 'is not a file'),
    (PY + ['tools/analysis_tools/plot_curves.py'], 'usage: plot_curves.py'),
    (PY + ['tools/analysis_tools/plot_curves.py', 'missing.json'], "'missing.json' does not "
                                                                   'exist'),
    (PY + ['tools/analysis_tools/model_table.py', '--no-such-option'], 'usage: model_table.py'),
    (PY + ['tools/analysis_tools/benchmark_backbones.py', '--cases', 'nope'], 'invalid choice'),
    (PY + ['tools/analysis_tools/benchmark_detector.py', '--batch', 'two'],
     "argument --batch: must be a positive integer, got 'two'"),
    (PY + ['tools/analysis_tools/benchmark_projection.py', '--variant', 'vit'],
     "argument --variant: invalid choice: 'vit'"),
    (PY + ['tools/analysis_tools/profile_backbone.py'], 'usage: profile_backbone.py'),
    (PY + ['tools/analysis_tools/profile_backbone.py', 'acmix-r50', '--steps', '0'],
     'argument --steps: must be a positive integer, got 0'),
    (PY + ['tools/analysis_tools/profile_backbone.py', 'resnet-50'], "invalid choice: 'resnet-50'"),
    (PY + ['tools/analysis_tools/compare_kernel_builds.py'], 'usage: compare_kernel_builds.py'),
    (PY + ['tools/analysis_tools/compare_kernel_builds.py', 'missing.so', 'missing.so'],
     "OLD 'missing.so' is not a file"),
    (PY + ['tools/analysis_tools/compare_kernel_builds.py', 'README.md', 'README.md'],
     "OLD 'README.md' does not load as a Python extension"),
    (PY + ['tools/analysis_tools/compare_kernel_builds.py', 'a.so', 'b.so', '--rounds', '0'],
     'argument --rounds: must be a positive integer, got 0'),
    (PY + ['tools/analysis_tools/gpu_check_kernels.py', '--warm', 'float64'],
     "argument --warm: invalid choice: 'float64'"),
]


@pytest.mark.parametrize('command,word', CASES, ids=[' '.join(c[1:])[:70] for c, _ in CASES])
def test_bad_call_prints_usage_or_clear_error(command, word):
    out = tool_process.run(command, cwd=ROOT, timeout=120,
                           env=dict(os.environ, PYTHON=sys.executable))
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-2000:]
    assert word in text, text[-2000:]
    assert 'Traceback' not in text and 'unbound variable' not in text, text[-2000:]


# tool, its function that parses the command line, arguments it needs besides the option
INTEGER_OPTIONS = {
    ('tools/demo.py', 'main', ()): ['--iters', '--num-train'],
    ('tools/analysis_tools/benchmark_backbones.py', 'main', ()): [
        '--infer-size', '--train-size', '--threads', '--repeat', '--rounds', '--size', '--batch'],
    ('tools/analysis_tools/benchmark_detector.py', 'main', ()): [
        '--batch', '--repeat', '--rounds', '--threads'],
    ('tools/analysis_tools/benchmark_projection.py', 'main', ()): ['--threads', '--repeat'],
    ('tools/analysis_tools/benchmark_configs.py', 'parse_args', (CONFIG, )): [
        '--batch', '--repeat', '--threads'],
    ('tools/analysis_tools/benchmark_segmentor.py', 'parse_args', ()): ['--batch', '--repeat'],
    ('tools/analysis_tools/profile_backbone.py', 'parse_args', ('acmix-r50', )): [
        '--batch', '--size', '--steps', '--top'],
    ('tools/analysis_tools/compare_kernel_builds.py', 'main', ('a.so', 'b.so')): [
        '--rounds', '--calls', '--threads'],
}
INTEGER_CASES = [(tool, option, value) for tool, options in INTEGER_OPTIONS.items()
                 for option in options for value in ('0', '-2', 'two')]


@pytest.mark.parametrize('tool, option, value', INTEGER_CASES,
                         ids=[f'{t[0].split("/")[-1]} {o} {v}' for t, o, v in INTEGER_CASES])
def test_integer_options_refuse_what_is_not_a_positive_integer(tool, option, value, capsys):
    """In this process (the parse comes before any work): argparse's exit, naming the option."""
    path, function, needed = tool
    module = load_tool(os.path.basename(path)[:-3], path)
    with pytest.raises(SystemExit) as exit_info:
        getattr(module, function)([*needed, option, value])
    shown = value if value.lstrip('-').isdigit() else repr(value)
    assert exit_info.value.code == 2
    assert f'argument {option}: must be a positive integer, got {shown}' in capsys.readouterr().err


@pytest.mark.parametrize('path, option', [
    ('tools/analysis_tools/benchmark_detector.py', '--size'),
    ('tools/analysis_tools/benchmark_configs.py', '--size'),
    ('tools/analysis_tools/benchmark_segmentor.py', '--size')])
def test_size_pairs_refuse_a_non_positive_side(path, option, capsys):
    module = load_tool(os.path.basename(path)[:-3], path)
    parse = getattr(module, 'parse_args', None) or module.main
    needed = [CONFIG] if 'configs' in path else []
    with pytest.raises(SystemExit):
        parse([*needed, option, '512', '0'])
    assert f'argument {option}: must be a positive integer, got 0' in capsys.readouterr().err


def test_segmentor_warmup_may_be_zero_but_not_negative(capsys):
    module = load_tool('benchmark_segmentor', 'tools/analysis_tools/benchmark_segmentor.py')
    assert module.parse_args(['--warmup', '0']).warmup == 0
    with pytest.raises(SystemExit):
        module.parse_args(['--warmup', '-1'])
    assert 'argument --warmup: must be a non-negative integer, got -1' in capsys.readouterr().err

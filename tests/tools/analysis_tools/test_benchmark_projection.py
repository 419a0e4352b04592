import json
import os

import pytest
import torch
import torch.nn.functional as F

from . import load_tool

TOOL_PATH = 'tools/analysis_tools/benchmark_projection.py'


def test_token_shapes_are_swin_t_qkv_and_proj():
    tool = load_tool('benchmark_projection', TOOL_PATH)
    for mode, size in (('infer', 224), ('train', 512)):
        expected = []
        for stage, channels in enumerate((96, 192, 384, 768)):
            side = size // 4 // 2**stage  # patch embedding 4x, then patch merging halves
            expected += [(side * side, channels, 3 * channels), (side * side, channels, channels)]
        assert tool.TOKEN_SHAPES[f'swin-t {mode} {size}'] == expected


def test_token_candidates_compute_the_linear_layer_and_its_gradients():
    tool = load_tool('benchmark_projection', TOOL_PATH)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 24, generator=gen)
    weight = torch.randn(72, 24, generator=gen)
    bias = torch.randn(72, generator=gen)
    grad = torch.randn(50, 72, generator=gen)
    forward, backward = tool.token_candidates(x, weight, bias, grad)
    assert 'blas' in forward and 'blas' in backward
    xr, wr = x.clone().requires_grad_(), weight.clone().requires_grad_()
    out = F.linear(xr, wr, bias)
    out.backward(grad)
    for name, run in forward.items():
        torch.testing.assert_close(run(), out.detach(), msg=name)
    for name, run in backward.items():
        grad_x, grad_w = run()
        torch.testing.assert_close(grad_x, xr.grad, msg=name)
        torch.testing.assert_close(grad_w, wr.grad, msg=name)


@pytest.mark.parametrize('variant, candidate, shape', [
    ('swin', 'blas', '49 x 96->288'),
    ('resnet', 'conv', '64@7x7'),
])
def test_report_of_a_tiny_run(tmp_path, monkeypatch, variant, candidate, shape):
    tool = load_tool('benchmark_projection', TOOL_PATH)
    monkeypatch.setattr(tool, 'TOKEN_SHAPES', {'tiny': [(49, 96, 288)]})
    monkeypatch.setattr(tool, 'SHAPES', {'tiny': [(64, 7, 7)]})
    out = str(tmp_path / 'proj')
    tool.main(['--variant', variant, '--repeat', '1', '--threads', '1', '--out', out])
    results = json.load(open(out + '.json'))
    assert len(results) == 1 and tool.shape_label(results[0]) == shape
    assert candidate in results[0]['forward_ms'] and results[0]['forward_ms'][candidate] > 0
    times = results[0]['backward_ms']
    assert results[0]['backward_fastest'] == min(times, key=times.get)
    md = open(out + '.md').read()
    assert f'| tiny | {shape} |' in md and f'--variant {variant}' in md
    assert os.path.getsize(out + '.png') > 5000

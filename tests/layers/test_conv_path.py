"""``conv_path_backward`` (the ResNet variant's training path) against autograd through the
composition."""
import pytest
import torch

from acmix_mm.layers import build_dep_conv, build_fc
from acmix_mm.layers.conv_path import conv_path, conv_path_backward


@pytest.mark.parametrize('backend', ['auto', 'python'])
@pytest.mark.parametrize('h,w,heads,d,stride,dilation,kernel,fc_bias', [
    (9, 11, 2, 8, 1, 1, 3, False), (7, 10, 3, 5, 1, 2, 3, True), (8, 9, 2, 4, 1, 1, 1, False),
    (6, 13, 1, 8, 1, 1, 5, False), (10, 7, 2, 3, 1, 1, 7, True), (11, 9, 2, 4, 2, 1, 3, False),
    (13, 10, 1, 8, 3, 2, 5, False)])
def test_backward_matches_autograd(monkeypatch, backend, h, w, heads, d, stride, dilation, kernel,
                                   fc_bias):
    monkeypatch.setenv('ACMIX_MM_KERNEL', backend)
    torch.manual_seed(0)
    fc = build_fc(heads, kernel, bias=fc_bias).double()
    dep_conv = build_dep_conv(2 * d, d, kernel, stride, dilation).double()
    with torch.no_grad():
        for p in list(fc.parameters()) + list(dep_conv.parameters()):
            p.copy_(torch.randn_like(p))
    scale = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    qkv = torch.randn(2, 3 * heads, d, h, w, dtype=torch.float64, requires_grad=True)
    names = ['qkv', 'out_scale'] + [f'fc.{n}' for n, _ in fc.named_parameters()] + [
        f'dep_conv.{n}' for n, _ in dep_conv.named_parameters()]
    wrt = [qkv, scale] + list(fc.parameters()) + list(dep_conv.parameters())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('ACMIX_MM_KERNEL', 'python')  # the composition, under autograd
        out = conv_path(qkv, fc, dep_conv, scale)
    grad_out = torch.randn_like(out)
    want = dict(zip(names, torch.autograd.grad(out, wrt, grad_out)))
    got = conv_path_backward(qkv.detach(), grad_out, fc, dep_conv, scale)
    assert set(got) == set(names)
    for name in names:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-10, msg=name)


def test_parameters_without_gradient_get_none():
    fc, dep_conv = build_fc(2, 3, bias=False), build_dep_conv(8, 4, 3)
    dep_conv.weight.requires_grad_(False)
    qkv, grad_out = torch.randn(1, 6, 4, 5, 5), torch.randn(1, 8, 5, 5)
    got = conv_path_backward(qkv, grad_out, fc, dep_conv, torch.ones(1))
    assert got['dep_conv.weight'] is None and got['out_scale'] is None
    assert got['fc.weight'].shape == fc.weight.shape and got['qkv'].shape == qkv.shape

"""``conv_path_backward`` (the ResNet variant's training path) against autograd through the
composition."""
import pytest
import torch

from acmix_mm.layers import build_dep_conv, build_fc
from acmix_mm.layers.conv_path import conv_path, conv_path_backward


def _modules(heads, d, stride, dilation, kernel, fc_bias):
    torch.manual_seed(0)
    fc = build_fc(heads, kernel, bias=fc_bias).double()
    dep_conv = build_dep_conv(2 * d, d, kernel, stride, dilation).double()
    with torch.no_grad():
        for p in list(fc.parameters()) + list(dep_conv.parameters()):
            p.copy_(torch.randn_like(p))
    return fc, dep_conv


# d below, at and off the vector width (4 doubles, 8 with AVX-512); strides 1 to 4, with
# dilation; 1x1 maps
@pytest.mark.parametrize('backend', ['auto', 'python'])
@pytest.mark.parametrize('grad_layout', [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('h,w,heads,d,stride,dilation,kernel,fc_bias,addends', [
    (9, 11, 2, 8, 1, 1, 3, False, 0), (7, 10, 3, 5, 1, 2, 3, True, 3),
    (8, 9, 2, 4, 1, 1, 1, False, 0), (6, 13, 1, 8, 1, 1, 5, False, 3),
    (10, 7, 2, 3, 1, 1, 7, True, 0), (11, 9, 2, 4, 2, 1, 3, False, 3),
    (13, 10, 1, 8, 3, 2, 5, False, 1), (14, 15, 2, 6, 4, 1, 3, False, 3),
    (1, 1, 2, 4, 1, 1, 3, True, 3), (5, 1, 1, 8, 2, 1, 3, False, 3),
    (13, 10, 1, 8, 3, 2, 5, False, 'in place'), (9, 12, 2, 5, 1, 1, 3, True, 'in place')])
def test_backward_matches_autograd(monkeypatch, backend, grad_layout, h, w, heads, d, stride,
                                   dilation, kernel, fc_bias, addends):
    """Every gradient, with ``addends`` maps (0: none) added times ``addend_scale`` to qkv's; the
    output gradient planar (as ACmix's) or channels-last. 'in place': one addend, which receives
    qkv's gradient."""
    in_place = addends == 'in place'
    addends = 1 if in_place else addends
    monkeypatch.setenv('ACMIX_MM_KERNEL', backend)
    fc, dep_conv = _modules(heads, d, stride, dilation, kernel, fc_bias)
    scale = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    qkv = torch.randn(2, 3 * heads, d, h, w, dtype=torch.float64, requires_grad=True)
    extra = [torch.randn(2, 3 * heads // addends, d, h, w, dtype=torch.float64)
             for _ in range(addends)]
    names = ['qkv', 'out_scale'] + [f'fc.{n}' for n, _ in fc.named_parameters()] + [
        f'dep_conv.{n}' for n, _ in dep_conv.named_parameters()]
    wrt = [qkv, scale] + list(fc.parameters()) + list(dep_conv.parameters())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('ACMIX_MM_KERNEL', 'python')  # the composition, under autograd
        out = conv_path(qkv, fc, dep_conv, scale)
    grad_out = torch.randn(out.shape, dtype=out.dtype).contiguous(memory_format=grad_layout)
    want = dict(zip(names, torch.autograd.grad(out, wrt, grad_out)))
    if extra:
        want['qkv'] = want['qkv'] - 1.3 * torch.cat(extra, 1)
    got = conv_path_backward(qkv.detach(), grad_out, fc, dep_conv, scale, addends=extra,
                             addend_scale=-1.3, in_place=in_place)
    assert set(got) == set(names)
    assert in_place == (bool(extra) and got['qkv'].data_ptr() == extra[0].data_ptr())
    for name in names:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-10, msg=name)


# float32: rows transposed in 8 x 8 register tiles (d of whole tiles, with a remainder, below a
# tile; widths off the tile size; d = 20: a whole vector of 16 lanes and a remainder), the
# attention's gradient added as the rows are stored
@pytest.mark.parametrize('in_place', [False, True])
@pytest.mark.parametrize('h,w,d,stride', [(6, 21, 16, 1), (7, 13, 12, 2), (5, 9, 5, 1),
                                          (8, 8, 8, 3), (5, 11, 20, 1)])
def test_float32_backward_within_round_off(h, w, d, stride, in_place):
    heads = 2
    fc, dep_conv = _modules(heads, d, stride, 1, 3, False)
    qkv = torch.randn(2, 3 * heads, d, h, w, dtype=torch.float64)
    grad_out = torch.randn(2, 2 * d, -(-h // stride), -(-w // stride), dtype=torch.float64)
    extra = [torch.randn(2, heads, d, h, w, dtype=torch.float64) for _ in range(3)]
    if in_place:
        extra = [torch.cat(extra, 1)]
    scale = torch.tensor([0.7], dtype=torch.float64)
    want = conv_path_backward(qkv, grad_out, fc, dep_conv, scale, extra, 0.4)
    got = conv_path_backward(qkv.float(), grad_out.float(), fc.float(), dep_conv.float(),
                             scale.float(), [e.float() for e in extra], 0.4, in_place)
    for name, value in want.items():
        if value is not None:
            torch.testing.assert_close(got[name].double(), value, rtol=1e-4, atol=1e-3, msg=name)


def test_parameters_without_gradient_get_none():
    fc, dep_conv = build_fc(2, 3, bias=False), build_dep_conv(8, 4, 3)
    dep_conv.weight.requires_grad_(False)
    qkv, grad_out = torch.randn(1, 6, 4, 5, 5), torch.randn(1, 8, 5, 5)
    got = conv_path_backward(qkv, grad_out, fc, dep_conv, torch.ones(1))
    assert got['dep_conv.weight'] is None and got['out_scale'] is None
    assert got['fc.weight'].shape == fc.weight.shape and got['qkv'].shape == qkv.shape


@pytest.mark.parametrize('count', [2, 'strided'])
def test_in_place_needs_one_contiguous_addend(count):
    fc, dep_conv = _modules(2, 4, 1, 1, 3, False)
    qkv = torch.randn(1, 6, 4, 5, 5, dtype=torch.float64)
    grad_out = torch.randn(1, 8, 5, 5, dtype=torch.float64)
    addends = ([torch.randn(1, 3, 4, 5, 5, dtype=torch.float64) for _ in range(2)]
               if count == 2 else [torch.randn(1, 6, 4, 5, 10, dtype=torch.float64)[..., ::2]])
    with pytest.raises(ValueError, match='in_place needs one contiguous addend'):
        conv_path_backward(qkv, grad_out, fc, dep_conv, torch.ones(1, dtype=torch.float64),
                           addends, 0.5, in_place=True)

import pytest
import torch
import torch.nn.functional as F

from acmix_mm.layers import ACmix, position_grid, reflect_pad2d, shift_kernels
from spec_reference import spec_acmix_from_module, spec_reflect_pad


def randomised(m: ACmix) -> ACmix:
    """Random values everywhere, so that no term of the computation hides behind its init."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return m


@pytest.mark.parametrize('h,w,stride,dilation,k_att,k_conv,heads', [
    (8, 8, 1, 1, 7, 3, 4),     # the paper's setting
    (9, 7, 2, 1, 7, 3, 4),     # odd sizes with stride 2 (the reference crashes)
    (6, 10, 2, 1, 7, 3, 2),
    (5, 5, 1, 2, 3, 3, 4),     # dilation
    (3, 2, 1, 1, 7, 5, 1),     # window larger than the map: repeated reflection
    (1, 1, 2, 1, 7, 3, 4),     # a single pixel
    (7, 6, 3, 1, 5, 1, 2),     # stride 3, 1x1 conv path
])
def test_matches_spec(h, w, stride, dilation, k_att, k_conv, heads):
    m = randomised(ACmix(6, 8, kernel_att=k_att, heads=heads, kernel_conv=k_conv, stride=stride,
                         dilation=dilation)).double()
    x = torch.randn(2, 6, h, w, dtype=torch.float64)
    out = m(x)
    assert out.shape == (2, 8, -(-h // stride), -(-w // stride))
    torch.testing.assert_close(out, spec_acmix_from_module(m, x), rtol=1e-9, atol=1e-9)


def test_float32_batch1_matches_spec():
    m = randomised(ACmix(16, 16, stride=2))
    x = torch.randn(1, 16, 11, 13)
    ref = spec_acmix_from_module(m.double(), x.double())
    out = m.float()(x)
    torch.testing.assert_close(out, ref.float(), rtol=1e-4, atol=1e-4)


def test_half_precision_dtypes_run():
    m = randomised(ACmix(8, 8))
    x = torch.randn(1, 8, 6, 6)
    ref = m(x)
    out = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.1)


def test_gradcheck_float64():
    m = randomised(ACmix(4, 4, kernel_att=3, heads=2, stride=2)).double()
    x = torch.randn(1, 4, 5, 4, dtype=torch.float64, requires_grad=True)
    params = tuple(m.parameters())
    assert torch.autograd.gradcheck(lambda x, *ps: m(x), (x, *params))


def test_parameter_names_and_init_follow_reference():
    m = ACmix(64, 64)
    names = {n for n, _ in m.named_parameters()}
    assert names == {'rate1', 'rate2', 'conv1.weight', 'conv1.bias', 'conv2.weight', 'conv2.bias',
                     'conv3.weight', 'conv3.bias', 'conv_p.weight', 'conv_p.bias', 'fc.weight',
                     'dep_conv.weight', 'dep_conv.bias'}
    assert m.fc.weight.shape == (9, 12, 1, 1)
    assert m.dep_conv.weight.shape == (64, 9, 3, 3) and m.dep_conv.groups == 16
    assert m.rate1.item() == 0.5 and m.rate2.item() == 0.5
    w = m.dep_conv.weight
    for j in range(9):  # shift kernel j has its single 1 at (j // 3, j % 3)
        assert torch.equal(w[:, j].flatten(1).argmax(1), torch.full((64,), j))
    assert w.sum().item() == 64 * 9 and m.dep_conv.bias.abs().sum() == 0


def test_shift_init_makes_dep_conv_a_shift():
    """With shift kernels, output channel o of group c is input channel (c, j) shifted."""
    k = shift_kernels(2, 3)
    x = torch.randn(1, 9, 5, 5)
    y = F.conv2d(x, k[:1], padding=1)
    expected = sum(F.pad(x[:, j:j + 1], (1, 1, 1, 1))[..., j // 3:j // 3 + 5, j % 3:j % 3 + 5]
                   for j in range(9))
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize('size,pad', [(5, 2), (3, 3), (2, 3), (1, 3), (4, 9)])
def test_reflect_pad_any_size(size, pad):
    x = torch.randn(1, 2, size, size + 1)
    torch.testing.assert_close(reflect_pad2d(x, pad), spec_reflect_pad(x, pad))


@pytest.mark.parametrize('kwargs,match', [
    (dict(in_channels=8, out_channels=10, heads=4), '`heads` \\(4\\) must divide `out_channels`'),
    (dict(in_channels=8, out_channels=8, kernel_att=4), '`kernel_att` must be an odd'),
    (dict(in_channels=8, out_channels=8, kernel_conv=2), '`kernel_conv` must be an odd'),
    (dict(in_channels=8, out_channels=8, stride=0), '`stride` must be a positive int'),
    (dict(in_channels=8, out_channels=8, dilation=1.5), '`dilation` must be a positive int'),
    (dict(in_channels=0, out_channels=8), '`in_channels` must be a positive int'),
])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ACmix(**kwargs)


def test_bad_input_shape_is_named():
    with pytest.raises(ValueError, match=r'expects input of shape \(B, 8, H, W\)'):
        ACmix(8, 8)(torch.randn(1, 4, 5, 5))


@pytest.mark.parametrize('stride', [1, 2])
def test_gradients_match_spec(stride):
    """Training gradients (kernel, recomputation of both paths) against autograd through the
    straightforward spec implementation, for the input and every parameter."""
    m = randomised(ACmix(16, 16, stride=stride)).double()
    x = torch.randn(2, 16, 12, 15, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, 16, -(-12 // stride), -(-15 // stride), dtype=torch.float64)
    wrt = [x] + list(m.parameters())
    got = torch.autograd.grad(m(x), wrt, grad_out)
    want = torch.autograd.grad(spec_acmix_from_module(m, x), wrt, grad_out)
    for (name, _), g, r in zip([('x', None)] + list(m.named_parameters()), got, want):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9, msg=name)


def _spec_projection(layer, x):
    weight = torch.cat([layer.conv1.weight, layer.conv2.weight, layer.conv3.weight])
    bias = torch.cat([layer.conv1.bias, layer.conv2.bias, layer.conv3.bias])
    return F.conv2d(x, weight, bias)


def test_inference_projection_follows_every_parameter_change():
    """Inference copies the three projections into a buffer kept by the layer: a change of the
    parameters by any route (``.data`` too, as mmengine's EMA hook swaps them) shows at once."""
    torch.manual_seed(0)
    layer = ACmix(8, 8, heads=2).double().eval()
    x = torch.randn(1, 8, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        first = layer.project(x).clone()
        torch.testing.assert_close(first, _spec_projection(layer, x))
        layer.conv2.weight.data.copy_(torch.randn_like(layer.conv2.weight))  # no version bump
        layer.conv3.bias.data.mul_(-3.0)
        second = layer.project(x)
        torch.testing.assert_close(second, _spec_projection(layer, x))
        assert not torch.allclose(second, first)
        other = ACmix(8, 8, heads=2).double().eval()  # a second layer has its own buffers
        other.project(x)
        torch.testing.assert_close(layer.project(x), second)
    layer.float()
    with torch.no_grad():  # a changed dtype gets new buffers
        torch.testing.assert_close(layer.project(x.float()), _spec_projection(layer, x.float()))
    layer.train()  # with gradients: no shared buffer
    out = layer.project(x.float())
    assert out.requires_grad and out.grad_fn is not None


def test_tied_projections_are_read_in_place_and_never_stale():
    """The three projections live in one tensor (``tie_projections``): inference reads them
    there without a copy, through construction, dtype and device moves, ``load_state_dict``,
    ``share_memory`` and deep copies; where a parameter no longer sits in it (``.data``
    replaced), the weights are copied again and follow the change."""
    import copy
    torch.manual_seed(0)
    layer = ACmix(8, 8, heads=2).eval()
    x = torch.randn(1, 8, 6, 6, dtype=torch.float64)

    def read_in_place(m):
        with torch.no_grad():
            weight, bias = m.projection_weights()
            xd = x.to(weight.dtype)
            torch.testing.assert_close(m.project(xd), _spec_projection(m, xd))
        return (weight.data_ptr() == m.conv1.weight.data_ptr()
                and bias.data_ptr() == m.conv1.bias.data_ptr())

    assert read_in_place(layer)
    layer.double()
    assert read_in_place(layer) and layer.conv3.weight.dtype == torch.float64
    other = ACmix(8, 8, heads=2).double().eval()
    other.load_state_dict(randomised(copy.deepcopy(layer)).state_dict())
    assert read_in_place(other) and torch.equal(other.conv2.bias, randomised(layer).conv2.bias)
    layer.share_memory()
    assert layer.conv1.weight.is_shared() and layer.conv3.bias.is_shared()
    assert read_in_place(layer)
    copied = copy.deepcopy(layer)  # each parameter copied on its own, then tied again
    assert read_in_place(copied) and not copied.conv1.weight.is_shared()
    assert copied.conv2.weight.data_ptr() != layer.conv2.weight.data_ptr()
    layer.conv2.weight.data = torch.randn_like(layer.conv2.weight)  # no longer in the tie
    assert not read_in_place(layer)
    layer.tie_projections()
    assert read_in_place(layer)
    names = [name for name, _ in layer.named_parameters()]
    assert names[2:8] == ['conv1.weight', 'conv1.bias', 'conv2.weight', 'conv2.bias',
                          'conv3.weight', 'conv3.bias']
    params = list(layer.parameters())
    assert len({id(p) for p in params}) == len(params) and all(p.is_leaf for p in params)


def test_state_made_under_inference_mode_serves_training():
    """The projection buffers and the shared position grid, made under ``inference_mode``, still
    serve a training step (inference tensors cannot be written outside that mode)."""
    layer = ACmix(8, 8, heads=2)
    x = torch.randn(1, 8, 5, 7)
    with torch.inference_mode():
        layer(x)
    layer(x).sum().backward()
    assert layer.conv_p.weight.grad is not None
    grid = layer.position_grid_flat(5, 7, torch.float32, torch.device('cpu'))
    assert torch.equal(grid.view(1, 2, 5, 7), position_grid(5, 7, torch.float32, 'cpu'))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('cin,c,heads,k_att,k_conv,stride,dilation,h,w', [
    (16, 16, 4, 7, 3, 1, 1, 9, 11),
    (8, 12, 3, 5, 1, 2, 1, 7, 6),
    (6, 8, 2, 3, 5, 3, 2, 10, 13),
    (8, 8, 2, 7, 3, 1, 1, 1, 1),
    (8, 8, 2, 5, 3, 1, 1, 4, 37),  # rows wide enough for the conv path's by-position kernel
    (6, 6, 2, 3, 5, 1, 2, 3, 40),
])
def test_fused_stage_two_equals_the_operators(monkeypatch, dtype, cin, c, heads, k_att, k_conv,
                                              stride, dilation, h, w):
    """Inference runs stage II as one call of the extension; it gives exactly what the separate
    operators (the attention operator, the conv-path kernel, the positional term) give."""
    layer = randomised(ACmix(cin, c, kernel_att=k_att, heads=heads, kernel_conv=k_conv,
                             stride=stride, dilation=dilation)).to(dtype).eval()
    x = torch.randn(2, cin, h, w, dtype=dtype)
    with torch.no_grad():
        assert layer._fused_stage_two(layer.project(x))
        fused = layer(x)
        monkeypatch.setattr(ACmix, '_fused_stage_two', lambda self, qkv: False)
        separate = layer(x)
    assert torch.equal(fused, separate)
    torch.testing.assert_close(fused.double(), spec_acmix_from_module(layer.double(), x.double()),
                               rtol=1e-4 if dtype == torch.float32 else 1e-9,
                               atol=1e-4 if dtype == torch.float32 else 1e-9)


def test_frozen_layer_in_grad_mode_runs_the_inference_path(monkeypatch):
    """A layer with nothing to differentiate (frozen parameters, an input that needs no
    gradient: mmdet's ``frozen_stages``) in grad mode runs as inference does (the fused stage
    II), with the same result and no graph."""
    layer = randomised(ACmix(6, 8, heads=2)).requires_grad_(False)
    x = torch.randn(2, 6, 9, 10)
    with torch.no_grad():
        want = layer(x)
    fused = []
    original = ACmix._fused_stage_two

    def recording(self, qkv):
        fused.append(original(self, qkv))
        return fused[-1]

    monkeypatch.setattr(ACmix, '_fused_stage_two', recording)
    out = layer(x)
    assert fused == [True] and not out.requires_grad and out.grad_fn is None
    assert torch.equal(out, want)
    torch.testing.assert_close(out.double(), spec_acmix_from_module(layer.double(), x.double()),
                               rtol=1e-4, atol=1e-4)

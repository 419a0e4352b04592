"""The fused C++ convolution path against the PyTorch composition it replaces in inference."""
import pytest
import torch

from acmix_mm.layers import build_dep_conv, build_fc, conv_path, conv_path_channels_last
from acmix_mm.layers.kernels.conv_path_op import (fused_conv_path, fused_conv_path_applies,
                                                  pack_weight)
from acmix_mm.layers.kernels.cpu_extension import load_cpu_extension


def _modules(heads, d, out_channels, stride=1, dilation=1, fc_bias=True, seed=0, kernel=3):
    torch.manual_seed(seed)
    fc = build_fc(heads, kernel, bias=fc_bias).double()
    dep_conv = build_dep_conv(out_channels, d, kernel, stride=stride, dilation=dilation).double()
    with torch.no_grad():
        for p in list(fc.parameters()) + list(dep_conv.parameters()):
            p.copy_(torch.randn_like(p))
    return fc, dep_conv


def _width(w):
    """A width, or 'W0[+n]': n more than the extension's planar_rows_min_width."""
    if isinstance(w, int):
        return w
    return load_cpu_extension().planar_rows_min_width + int(w[3:] or 0)


def _composed_and_fused(fn, *args, **kwargs):
    with torch.no_grad():
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv('ACMIX_MM_KERNEL', 'python')
            composed = fn(*args, **kwargs)
        fused = fn(*args, **kwargs)
    return composed, fused


# (B, H, W, heads, d, channels out per group M, kernel_conv): d a multiple of the vector width
# and not; kernels 1, 5 and 7 (k^2 = 1, 25, 49) leave 1- and 2-wide register-block remainders
@pytest.mark.parametrize('b,h,w,heads,d,m,kernel', [
    (1, 9, 11, 3, 8, 3, 3), (2, 7, 5, 2, 6, 2, 3), (1, 5, 13, 4, 12, 5, 3), (1, 1, 1, 1, 4, 1, 3),
    (1, 6, 7, 2, 8, 2, 1), (1, 7, 8, 1, 5, 4, 5), (2, 5, 10, 2, 4, 1, 7), (1, 9, 4, 1, 8, 2, 7)])
def test_channels_last_matches_composition(b, h, w, heads, d, m, kernel):
    fc, dep_conv = _modules(heads, d, d * m, kernel=kernel)
    qkv = torch.randn(b, h, w, 3 * heads * d, dtype=torch.float64)
    scale, extra = torch.tensor([0.7], dtype=torch.float64), torch.randn(d * m, dtype=torch.float64)
    composed, fused = _composed_and_fused(conv_path_channels_last, qkv, heads, fc, dep_conv,
                                          out_scale=scale, out_bias=extra)
    assert fused.shape == (b, h, w, d * m) and fused.is_contiguous()
    torch.testing.assert_close(fused, composed, rtol=1e-12, atol=1e-12)


# planar (B, 3N, d, H, W) maps as the ResNet variant has them; kernel, stride and dilation of
# dep_conv (strides 3 and 4, stride with dilation, odd sizes)
@pytest.mark.parametrize('h,w,d,stride,dilation,fc_bias,kernel', [
    (9, 20, 8, 1, 1, False, 3), (10, 19, 4, 2, 1, False, 3), (12, 17, 3, 1, 2, True, 3),
    (11, 13, 8, 3, 1, False, 3), (13, 9, 4, 2, 2, False, 3), (9, 22, 8, 1, 1, False, 1),
    (10, 11, 5, 1, 1, True, 5), (7, 18, 8, 1, 1, False, 7), (14, 15, 4, 4, 1, False, 7),
    (9, 10, 3, 3, 2, True, 5)])
def test_planar_matches_composition(h, w, d, stride, dilation, fc_bias, kernel):
    heads = 2
    fc, dep_conv = _modules(heads, d, 2 * heads * d, stride, dilation, fc_bias, kernel=kernel)
    qkv = torch.randn(2, 3 * heads, d, h, w, dtype=torch.float64)
    composed, fused = _composed_and_fused(conv_path, qkv, fc, dep_conv)
    out_shape = (2, 2 * heads * d, -(-h // stride), -(-w // stride))
    assert fused.shape == composed.shape == out_shape
    torch.testing.assert_close(fused, composed, rtol=1e-12, atol=1e-12)
    # with the scaled result and a residual added as the kernel writes (ACmix's rates)
    scales = [torch.tensor([s], dtype=torch.float64) for s in (0.7, -1.3)]
    residual = torch.randn(out_shape, dtype=torch.float64)
    composed, fused = _composed_and_fused(conv_path, qkv, fc, dep_conv, scales[0], residual,
                                          scales[1])
    assert fused.is_contiguous()
    torch.testing.assert_close(fused, composed, rtol=1e-12, atol=1e-12)


# planar rows at stride 1 from the extension's planar_rows_min_width (W0) up take the
# by-position kernel: widths of whole vectors and not (float64: 8 lanes with AVX-512, 4 with
# AVX2), up to 9 vectors a row (blocks of 4 and remainders), M of 1 to 6 (blocks of 4 and
# remainders), kernels 1, 3, 5, 7 (K2 in blocks of 9 and remainders), dilation, maps shorter than
# the kernel, batch 2; 3 * heads > 64 maps and a width below W0 take the channel kernel. Only
# planar outputs take it: those with a residual (without one the output is channels-last).
@pytest.mark.parametrize('b,h,extra_w,heads,d,m,kernel,dilation,fc_bias', [
    (2, 5, 0, 2, 3, 1, 3, 1, True), (1, 6, 1, 1, 4, 3, 3, 2, False),
    (1, 4, 9, 3, 2, 6, 5, 1, True), (1, 3, 15, 2, 2, 5, 7, 1, False),
    (1, 4, 4, 1, 3, 2, 1, 1, True), (1, 2, 8, 1, 2, 2, 5, 1, True),
    (1, 5, 32, 4, 16, 4, 3, 1, True), (1, 3, 38, 22, 1, 1, 3, 1, False),
    (1, 4, -1, 2, 3, 4, 3, 1, True)])
def test_planar_rows_match_composition(b, h, extra_w, heads, d, m, kernel, dilation, fc_bias):
    w = load_cpu_extension().planar_rows_min_width + extra_w
    fc, dep_conv = _modules(heads, d, d * m, 1, dilation, fc_bias, kernel=kernel)
    qkv = torch.randn(b, 3 * heads, d, h, w, dtype=torch.float64)
    composed, fused = _composed_and_fused(conv_path, qkv, fc, dep_conv)
    assert fused.shape == composed.shape == (b, d * m, h, w)
    torch.testing.assert_close(fused, composed, rtol=1e-12, atol=1e-12)
    scales = [torch.tensor([s], dtype=torch.float64) for s in (0.7, -1.3)]
    residual = torch.randn(b, d * m, h, w, dtype=torch.float64)
    composed, fused = _composed_and_fused(conv_path, qkv, fc, dep_conv, scales[0], residual,
                                          scales[1])
    torch.testing.assert_close(fused, composed, rtol=1e-12, atol=1e-12)


# float32 planar maps: rows transposed in 8 x 8 register tiles (d of whole tiles, a remainder
# of channels, fewer channels than a vector; widths off the tile size; d = 20: a whole vector
# of 16 lanes (AVX-512) and a remainder)
@pytest.mark.parametrize('h,w,d,stride', [(6, 21, 16, 1), (5, 13, 12, 2), (7, 9, 5, 1),
                                          (4, 8, 8, 1), (5, 11, 20, 1), (4, 'W0+21', 5, 1),
                                          (3, 'W0', 16, 1)])
@pytest.mark.parametrize('with_residual', [False, True])
def test_planar_float32_within_round_off(h, w, d, stride, with_residual):
    """W0: the extension's planar_rows_min_width, float32 rows of 16 or 8 lanes; with a residual
    the output is planar (rows of W0 and more: the by-position kernel), without channels-last."""
    heads = 2
    w = _width(w)
    fc, dep_conv = _modules(heads, d, 2 * heads * d, stride)
    qkv = torch.randn(2, 3 * heads, d, h, w, dtype=torch.float64)
    extra = ()
    if with_residual:
        residual = torch.randn(2, 2 * heads * d, -(-h // stride), -(-w // stride),
                               dtype=torch.float64)
        extra = (torch.tensor([0.7], dtype=torch.float64), residual,
                 torch.tensor([-1.3], dtype=torch.float64))
    composed, _ = _composed_and_fused(conv_path, qkv, fc, dep_conv, *extra)
    _, fused = _composed_and_fused(conv_path, qkv.float(), fc.float(), dep_conv.float(),
                                   *(e.float() for e in extra))
    torch.testing.assert_close(fused.double(), composed, rtol=1e-5, atol=1e-4)


def test_float32_within_round_off():
    fc, dep_conv = _modules(3, 32, 96)
    qkv = torch.randn(1, 14, 14, 288, dtype=torch.float64)
    composed, _ = _composed_and_fused(conv_path_channels_last, qkv, 3, fc, dep_conv)
    _, fused = _composed_and_fused(conv_path_channels_last, qkv.float(), 3, fc.float(),
                                   dep_conv.float())
    torch.testing.assert_close(fused.double(), composed, rtol=1e-5, atol=1e-4)


def test_applies_only_where_no_gradient_is_needed(monkeypatch):
    x = torch.randn(2, 3)
    w = torch.randn(3, requires_grad=True)
    assert fused_conv_path_applies(x, None)
    assert not fused_conv_path_applies(x, w)  # no backward for this call: the composition
    assert fused_conv_path_applies(x, w, differentiable=True)
    with torch.no_grad():
        assert fused_conv_path_applies(x, w)
        assert not fused_conv_path_applies(x.half())
        monkeypatch.setenv('ACMIX_MM_KERNEL', 'python')
        assert not fused_conv_path_applies(x, w)


@pytest.mark.parametrize('b,h,w,heads,d,m,dilation,kernel', [
    (1, 9, 11, 3, 8, 3, 1, 3), (2, 7, 5, 2, 6, 2, 1, 3), (1, 6, 13, 1, 4, 4, 2, 3),
    (1, 5, 8, 2, 8, 2, 1, 1), (1, 7, 9, 1, 5, 4, 1, 5), (2, 8, 7, 2, 4, 1, 1, 7),
    (1, 11, 10, 1, 8, 2, 2, 5), (1, 1, 1, 1, 4, 1, 1, 3)])
def test_backward_matches_composition(b, h, w, heads, d, m, dilation, kernel):
    """Gradients of the maps and of every parameter through the kernel's backward against
    autograd through the PyTorch composition."""
    fc, dep_conv = _modules(heads, d, d * m, dilation=dilation, kernel=kernel)
    qkv = torch.randn(b, h, w, 3 * heads * d, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(b, h, w, d * m, dtype=torch.float64)
    wrt = [qkv, scale] + list(fc.parameters()) + list(dep_conv.parameters())

    def grads():
        out = conv_path_channels_last(qkv, heads, fc, dep_conv, out_scale=scale)
        return type(out.grad_fn).__name__, torch.autograd.grad(out, wrt, grad_out)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('ACMIX_MM_KERNEL', 'python')
        composed, want = grads()
    fused, got = grads()
    assert (fused, composed) == ('_FusedConvPathBackward', 'PermuteBackward0')
    for name, g, r in zip(['qkv', 'scale', 'fc.weight', 'fc.bias', 'dep_conv.weight',
                           'dep_conv.bias'], got, want):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10, msg=name)


def test_backward_refuses_strided_calls():
    fc, dep_conv = _modules(1, 8, 8)
    maps = torch.randn(1, 6, 6, 3, 8, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match='stride 1, channels-last maps and no addend only'):
        fused_conv_path(maps, fc.weight, fc.bias, dep_conv.weight, dep_conv.bias, 2, 1)


def _packing_by_reshapes(weight, bias, d):
    """The kernel's layout of dep_conv's weight and bias by tensor reshapes: weight
    ``(d * M, K2, k, k)`` as ``(chunks, M, k, k, K2, lanes)`` (output channel ``c * M + m`` in
    lane ``c % lanes`` of chunk ``c // lanes``), bias as ``(M, d_pad)``, padding lanes zero."""
    c_out, k2, k, _ = weight.shape
    m = c_out // d
    lanes = load_cpu_extension().vector_bytes // weight.element_size()
    d_pad = -(-d // lanes) * lanes
    packed = weight.reshape(d, m, k2, k, k).permute(1, 3, 4, 2, 0)
    packed = torch.nn.functional.pad(packed, (0, d_pad - d)).reshape(m, k, k, k2, -1, lanes)
    bias = weight.new_zeros(c_out) if bias is None else bias
    return (packed.permute(4, 0, 1, 2, 3, 5).contiguous(),
            torch.nn.functional.pad(bias.reshape(d, m).t(), (0, d_pad - d)))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('d,m,kernel', [(3, 4, 3), (8, 1, 1), (12, 4, 3), (20, 2, 5)])
@pytest.mark.parametrize('with_bias,scale', [(True, None), (False, 'one'), (True, 'channels')])
def test_pack_weight_lays_out_the_scaled_weight_for_the_kernel(dtype, d, m, kernel, with_bias,
                                                               scale):
    """:func:`pack_weight` (the extension's ``conv_path_pack``) lays out ``scale * weight`` and
    ``scale * bias`` (scale one value or one per output channel) as the reshapes above do."""
    weight = torch.randn(d * m, kernel * kernel, kernel, kernel, dtype=dtype)
    bias = torch.randn(d * m, dtype=dtype) if with_bias else None
    factor = {None: None, 'one': torch.randn(1, dtype=dtype),
              'channels': torch.randn(d * m, dtype=dtype)}[scale]
    if factor is None:
        want = _packing_by_reshapes(weight, bias, d)
    else:
        want = _packing_by_reshapes(weight * factor.view(-1, 1, 1, 1),
                                    None if bias is None else bias * factor, d)
    got = pack_weight(weight, bias, d, scale=factor)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('d,m,kernel', [(3, 4, 3), (8, 1, 1), (12, 4, 3), (20, 2, 5)])
def test_kernel_unpacking_inverts_the_packing(dtype, d, m, kernel):
    """``conv_path_unpack`` (the training backward's, for dep_conv's gradients) reads the packed
    layout back into dep_conv's, padding lanes dropped."""
    weight = torch.randn(d * m, kernel * kernel, kernel, kernel, dtype=dtype)
    bias = torch.randn(d * m, dtype=dtype)
    packed, packed_bias = pack_weight(weight, bias, d)
    got_weight, got_bias = load_cpu_extension().conv_path_unpack(packed, packed_bias, d)
    assert torch.equal(got_weight, weight) and torch.equal(got_bias, bias)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('h,w,stride', [(9, 20, 1), (10, 19, 2), (7, 9, 1), (5, 6, 1), (6, 9, 2),
                                      (4, 'W0+7', 1), (5, 'W0+7', 2)])
def test_in_place_addend_gives_the_same_result_in_the_addend(dtype, h, w, stride):
    """``in_place`` (how ACmix's inference writes the conv path over the attention): the result,
    bit for bit the one written to a new tensor, lands in the addend's memory (float32 rows of
    8 x 8 register tiles and a remainder; rows narrower than a tile, written directly); it needs
    a contiguous addend that does not overlap the maps."""
    heads, d, w = 2, 8, _width(w)
    fc, dep_conv = _modules(heads, d, 2 * heads * d, stride)
    fc, dep_conv = fc.to(dtype), dep_conv.to(dtype)
    maps = torch.randn(2, 3 * heads, d, h, w, dtype=dtype).permute(0, 3, 4, 1, 2)
    packed, packed_bias = pack_weight(dep_conv.weight, dep_conv.bias, d)
    fc_w = fc.weight.reshape(fc.weight.shape[0], -1).contiguous()
    addend = torch.randn(2, 2 * heads * d, -(-h // stride), -(-w // stride), dtype=dtype)
    ext = load_cpu_extension()

    def run(add, in_place):
        return ext.conv_path_forward(maps, fc_w, fc.bias, packed, packed_bias, stride, 1, add,
                                     -0.6, in_place)

    want = run(addend, False)
    kept = addend.clone()
    got = run(addend, True)
    assert got.data_ptr() == addend.data_ptr() and not torch.equal(addend, kept)
    assert torch.equal(got, want) and torch.equal(addend, want)
    with pytest.raises(RuntimeError, match='in_place needs a contiguous addend'):
        run(None, True)
    with pytest.raises(RuntimeError, match='in_place needs a contiguous addend'):
        run(kept.transpose(2, 3).contiguous().transpose(2, 3), True)
    planes = maps.permute(0, 3, 4, 1, 2)  # the maps' own memory as the addend
    with pytest.raises(RuntimeError, match='refer to a single memory location'):
        run(planes.reshape(-1)[:addend.numel()].view(addend.shape), True)

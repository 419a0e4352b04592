"""transpose_add_: the C++ tiled transpose (and PyTorch's fallback) against the definition, on
sizes around its 8 x 8 register tiles and 64 x 64 cache tiles, strided views and both dtypes."""
import pytest
import torch

from acmix_mm.layers.kernels.transpose_op import transpose_add_


@pytest.mark.parametrize('backend', ['cpp', 'python'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('b,r,s', [(1, 8, 8), (2, 13, 29), (1, 64, 130), (3, 71, 9), (1, 1, 5)])
@pytest.mark.parametrize('with_addend', [False, True])
def test_transpose_add_equals_definition(backend, dtype, b, r, s, with_addend, monkeypatch):
    monkeypatch.setenv('ACMIX_MM_KERNEL', backend)
    gen = torch.Generator().manual_seed(r * s)
    src = torch.randn(b, r, s, dtype=dtype, generator=gen)
    addend = torch.randn(b, s, r, dtype=dtype, generator=gen) if with_addend else None
    out = torch.full((b, s, r), float('nan'), dtype=dtype)
    assert transpose_add_(out, src, addend, 0.75) is out
    want = src.transpose(1, 2) + (0 if addend is None else 0.75 * addend)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-14)


@pytest.mark.parametrize('backend', ['cpp', 'python'])
def test_transpose_add_writes_strided_views_only(backend, monkeypatch):
    """out and src as slices and strided views of larger tensors: only out's elements change."""
    monkeypatch.setenv('ACMIX_MM_KERNEL', backend)
    gen = torch.Generator().manual_seed(0)
    big_src = torch.randn(2, 40, 3 * 17, generator=gen)
    src = big_src[:, :, 17:34]  # (2, 40, 17), row stride 51
    big_out = torch.zeros(2, 3 * 17, 2 * 40)
    out = big_out[:, 17:34, ::2]  # not unit-stride along the last axis: fallback territory
    big_out2 = torch.zeros(2, 3 * 17, 40)
    out2 = big_out2[:, 17:34]  # unit last stride, row and batch strides of the larger map
    addend = torch.randn(2, 17, 40, generator=gen)
    transpose_add_(out, src, addend, -2.0)
    transpose_add_(out2, src, addend, -2.0)
    want = src.transpose(1, 2) - 2.0 * addend
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(out2, want)
    assert big_out[:, :17].abs().sum() == 0 and big_out[:, 34:].abs().sum() == 0
    assert big_out[:, :, 1::2].abs().sum() == 0
    assert big_out2[:, :17].abs().sum() == 0 and big_out2[:, 34:].abs().sum() == 0


def test_transpose_add_names_bad_shapes():
    with pytest.raises(ValueError, match=r'out and addend must be \(B, S, R\)'):
        transpose_add_(torch.empty(1, 4, 3), torch.randn(1, 4, 3))
    with pytest.raises(ValueError, match=r'out and addend must be \(B, S, R\)'):
        transpose_add_(torch.empty(1, 3, 4), torch.randn(1, 4, 3), torch.randn(1, 4, 3))

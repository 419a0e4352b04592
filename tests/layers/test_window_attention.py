import pytest
import torch

from acmix_mm.layers import window_attention


def composed(qkv, bias, scale):
    q, k, v = qkv.unbind(0)
    return torch.bmm(torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale).softmax(-1), v)


@pytest.mark.parametrize('shape', [(3, 6, 9, 4), (3, 1, 49, 8)])
def test_output_and_gradients_equal_autograd_through_the_operators(shape):
    torch.manual_seed(0)
    m, n = shape[1], shape[2]
    qkv = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    table = torch.randn(1, n, n, dtype=torch.float64, requires_grad=True)  # broadcast, as Swin's
    grad_out = torch.randn(m, n, shape[3], dtype=torch.float64)
    results = []
    for fn in (window_attention, composed):
        out = fn(qkv, table.expand(m, n, n), 0.35)
        results.append([out] + list(torch.autograd.grad(out, (qkv, table), grad_out)))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(window_attention(qkv, table.expand(m, n, n), 0.35),
                                   results[1][0], rtol=0, atol=0)


def test_gradcheck():
    torch.manual_seed(1)
    qkv = torch.randn(3, 2, 5, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: window_attention(a, b, 0.7), (qkv, bias))


@pytest.mark.parametrize('qkv_shape,bias_shape', [((2, 4, 9, 8), (4, 9, 9)),
                                                  ((3, 4, 9, 8), (4, 9, 8)),
                                                  ((3, 4, 9), (4, 9, 9))])
def test_bad_shapes_are_named(qkv_shape, bias_shape):
    with pytest.raises(ValueError, match=r'qkv must be \(3, M, n, d\) and bias \(M, n, n\)'):
        window_attention(torch.randn(qkv_shape), torch.randn(bias_shape), 1.0)

"""Window partition / reverse as row gathers, against the permuting copies they replace."""
import pytest
import torch

from acmix_mm.layers.window_rows import gather_rows, window_row_index


def partition_by_permute(x, ws, groups, heads):
    """(B, H, W, G * N * d) -> (G, B * nW * N, ws * ws, d), Swin's window order, head-major."""
    b, h, w, c = x.shape
    d = c // (groups * heads)
    x = x.view(b, h // ws, ws, w // ws, ws, groups, heads, d)
    return x.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(groups, -1, ws * ws, d)


@pytest.mark.parametrize('b,h,w,ws,groups,heads,d', [(2, 14, 21, 7, 3, 2, 4), (1, 6, 4, 2, 1, 3, 5),
                                                     (1, 7, 7, 7, 3, 1, 2)])
def test_gather_is_the_window_partition_and_its_inverse_the_reverse(b, h, w, ws, groups, heads, d):
    x = torch.randn(b, h, w, groups * heads * d, dtype=torch.float64)
    index, inverse = window_row_index(b, h, w, ws, groups, heads, x.device)
    windows = gather_rows(x.reshape(-1, d), index, inverse)
    torch.testing.assert_close(windows.view(groups, -1, ws * ws, d),
                               partition_by_permute(x, ws, groups, heads), rtol=0, atol=0)
    back = gather_rows(windows, inverse, index).view_as(x)
    torch.testing.assert_close(back, x, rtol=0, atol=0)


def test_gradient_is_the_permutes_gradient():
    b, h, w, ws, groups, heads, d = 2, 6, 4, 2, 3, 2, 3
    x = torch.randn(b, h, w, groups * heads * d, dtype=torch.float64, requires_grad=True)
    index, inverse = window_row_index(b, h, w, ws, groups, heads, x.device)
    assert torch.autograd.gradcheck(lambda t: gather_rows(t.reshape(-1, d), index, inverse), (x, ))
    assert torch.autograd.gradgradcheck(lambda t: gather_rows(t.reshape(-1, d), index, inverse),
                                        (x, ))
    g = torch.randn(groups, b * (h // ws) * (w // ws) * heads, ws * ws, d, dtype=torch.float64)
    got, = torch.autograd.grad(gather_rows(x.reshape(-1, d), index, inverse), x, g.view(-1, d))
    want, = torch.autograd.grad(partition_by_permute(x, ws, groups, heads), x, g)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='multiples of window_size 7'):
        window_row_index(1, 10, 14, 7, 3, 2, torch.device('cpu'))
    index, inverse = window_row_index(1, 7, 7, 7, 1, 1, torch.device('cpu'))
    with pytest.raises(ValueError, match=r'rows must be \(R, d\)'):
        gather_rows(torch.randn(50, 4), index, inverse)

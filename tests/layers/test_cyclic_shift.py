"""pad_and_roll / roll_and_crop against F.pad, torch.roll and slicing."""
import pytest
import torch
import torch.nn.functional as F

from acmix_mm.layers import pad_and_roll, roll_and_crop

# (H, W, Hp, Wp, shift): padded or not, shifted or not, shift past the padding, odd sizes
CASES = [(5, 6, 7, 7, 3), (7, 7, 7, 7, 3), (8, 9, 14, 14, 3), (4, 4, 7, 7, 6), (14, 21, 14, 21, 0),
         (3, 5, 7, 14, 2), (9, 2, 14, 7, 1), (1, 1, 7, 7, 5)]


def composed(x, padded_hw, shift):
    x = F.pad(x, (0, 0, 0, padded_hw[1] - x.shape[2], 0, padded_hw[0] - x.shape[1]))
    return torch.roll(x, (-shift, -shift), (1, 2))


@pytest.mark.parametrize('h,w,hp,wp,shift', CASES)
def test_pad_and_roll_equals_pad_then_roll(h, w, hp, wp, shift):
    x = torch.randn(2, h, w, 3, dtype=torch.float64)
    y = pad_and_roll(x, (hp, wp), shift)
    assert y.is_contiguous()
    torch.testing.assert_close(y, composed(x, (hp, wp), shift), rtol=0, atol=0)


@pytest.mark.parametrize('h,w,hp,wp,shift', CASES)
def test_roll_and_crop_equals_roll_then_crop(h, w, hp, wp, shift):
    x = torch.randn(2, hp, wp, 3, dtype=torch.float64)
    want = torch.roll(x, (shift, shift), (1, 2))[:, :h, :w]
    y = roll_and_crop(x, (h, w), shift)
    assert y.is_contiguous()
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    # and it undoes pad_and_roll
    z = torch.randn(2, h, w, 3, dtype=torch.float64)
    torch.testing.assert_close(roll_and_crop(pad_and_roll(z, (hp, wp), shift), (h, w), shift), z,
                               rtol=0, atol=0)


@pytest.mark.parametrize('h,w,hp,wp,shift', CASES[:4])
def test_gradients_and_second_order(h, w, hp, wp, shift):
    x = torch.randn(2, h, w, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, hp, wp, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: pad_and_roll(t, (hp, wp), shift), (x, ))
    assert torch.autograd.gradcheck(lambda t: roll_and_crop(t, (h, w), shift), (y, ))
    assert torch.autograd.gradgradcheck(lambda t: pad_and_roll(t, (hp, wp), shift), (x, ))
    # the backward is the composed operators' backward
    g = torch.randn(2, hp, wp, 2, dtype=torch.float64)
    got, = torch.autograd.grad(pad_and_roll(x, (hp, wp), shift), x, g)
    want, = torch.autograd.grad(composed(x, (hp, wp), shift), x, g)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_nothing_to_do_returns_the_input():
    x = torch.randn(1, 7, 14, 4)
    assert pad_and_roll(x, (7, 14), 0) is x
    assert roll_and_crop(x, (7, 14), 0) is x


def test_traced_graph_sees_pad_and_roll():
    x = torch.randn(1, 5, 6, 3)
    traced = torch.jit.trace(lambda t: roll_and_crop(pad_and_roll(t, (7, 7), 3) * 2, (5, 6), 3),
                             (x, ))
    kinds = {node.kind() for node in traced.graph.nodes()}
    assert 'aten::roll' in kinds and 'prim::PythonOp' not in kinds
    torch.testing.assert_close(traced(x), x * 2)


@pytest.mark.parametrize('call,match', [
    (lambda x: pad_and_roll(x[0], (7, 7), 3), r'x must be \(B, H, W, C\)'),
    (lambda x: pad_and_roll(x, (4, 7), 3), 'padded_hw .* smaller'),
    (lambda x: pad_and_roll(x, (7, ), 3), 'padded_hw must be two positive ints'),
    (lambda x: pad_and_roll(x, (7, 7), -1), 'shift must be an int >= 0'),
    (lambda x: roll_and_crop(x, (6, 6), 1), 'hw .* larger'),
    (lambda x: roll_and_crop(x, (0, 5), 1), 'hw must be two positive ints'),
])
def test_bad_arguments_name_themselves(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.randn(1, 5, 6, 3))

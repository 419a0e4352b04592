import pytest
import torch
from mmcv.cnn.bricks.drop import drop_path as mmcv_drop_path

from acmix_mm.layers import DropPath, drop_path


@pytest.mark.parametrize('shape', [(64, 5, 3), (64, 2, 3, 4)])
def test_drop_path_is_mmcvs_with_the_same_draws(shape):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(shape, dtype=torch.float64)
    results = []
    for fn in (drop_path, mmcv_drop_path):
        torch.manual_seed(3)
        out = fn(x, 0.3, True)
        x.grad = None
        out.backward(grad)
        results.append((out.detach(), x.grad.clone()))
    (ours, ours_grad), (theirs, theirs_grad) = results
    kept = ours.flatten(1).ne(0).any(1)
    assert 0 < int(kept.sum()) < shape[0]  # some samples dropped, some kept
    torch.testing.assert_close(ours, theirs, rtol=1e-15, atol=0)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-15, atol=0)
    torch.testing.assert_close(ours[kept], x.detach()[kept] / 0.7, rtol=1e-15, atol=0)


def test_drop_path_is_the_identity_outside_training_or_at_zero():
    x = torch.randn(4, 3)
    assert drop_path(x, 0.5, False) is x
    assert drop_path(x, 0., True) is x
    module = DropPath(0.5).eval()
    assert module(x) is x
    assert 'drop_prob=0.5' in repr(module)

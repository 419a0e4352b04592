import pytest
import torch
from mmdet.models.layers.transformer import PatchMerging

from acmix_mm.models.layers import OneCopyPatchMerging


def merged_pair(**kwargs):
    torch.manual_seed(0)
    theirs = PatchMerging(6, 10, **kwargs).double()
    torch.nn.init.normal_(theirs.norm.weight)
    torch.nn.init.normal_(theirs.norm.bias)
    return theirs, OneCopyPatchMerging.from_patch_merging(theirs)


@pytest.mark.parametrize('kwargs,applies', [
    (dict(), True),                                            # Swin's 2x2
    (dict(kernel_size=3, stride=3, bias=True), True),
    (dict(kernel_size=2, stride=2, padding=0), True),          # odd sizes crop, as Unfold does
    (dict(kernel_size=3, stride=2), False),                    # overlapping: mmdet's forward
    (dict(kernel_size=2, stride=2, padding='same'), False),
])
@pytest.mark.parametrize('hw', [(8, 6), (7, 9)])
def test_equals_mmdets_patch_merging(kwargs, applies, hw):
    theirs, ours = merged_pair(**kwargs)
    assert ours.one_copy_applies() is applies
    assert ours.reduction is theirs.reduction and ours.norm is theirs.norm
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = torch.randn(2, hw[0] * hw[1], 6, dtype=torch.float64, requires_grad=True)
    results = []
    for layer in (ours, theirs):
        out, size = layer(x, hw)
        x.grad = None
        out.backward(torch.cos(torch.arange(out.numel(), dtype=out.dtype)).view_as(out))
        results.append((out.detach(), size, x.grad.clone()))
    (out, size, grad), (ref, ref_size, ref_grad) = results
    assert size == ref_size
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)


def test_wrong_token_count_is_named():
    _, ours = merged_pair()
    with pytest.raises(ValueError, match=r'x has 40 tokens, input_size \(6, 6\) needs 36'):
        ours(torch.randn(1, 40, 6, dtype=torch.float64), (6, 6))


def test_from_patch_merging_draws_nothing_from_the_rng():
    theirs = PatchMerging(6, 10)
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    OneCopyPatchMerging.from_patch_merging(theirs)
    assert torch.equal(torch.rand(4), expected)

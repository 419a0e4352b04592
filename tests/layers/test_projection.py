"""project_1x1: both of its implementations (oneDNN's 1x1 convolution on small float32 maps, a
batched matrix product elsewhere) equal the projection written out."""
import pytest
import torch

from acmix_mm.layers.projection import CONV_MAX_POSITIONS, project_1x1


@pytest.mark.parametrize('size', [(5, 7), (40, 41)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_projection_equals_its_definition(size, dtype):
    assert (size[0] * size[1] <= CONV_MAX_POSITIONS) == (size == (5, 7))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, *size, generator=gen, dtype=dtype)
    weight = torch.randn(9, 6, generator=gen, dtype=dtype)
    bias = torch.randn(9, generator=gen, dtype=dtype)
    out = project_1x1(x, weight, bias)
    want = torch.einsum('oc,bchw->bohw', weight, x) + bias.view(1, -1, 1, 1)
    assert out.shape == (2, 9, *size) and out.is_contiguous()
    torch.testing.assert_close(out, want)

"""The export form of the attention (one-hot convolutions for the windows) against the fallback
that visits the window offset by offset."""
import pytest
import torch

from acmix_mm.layers.kernels.sliding_window_python import (sliding_window_attention_python,
                                                           sliding_window_attention_unfolded)

from .test_sliding_window_op import CASES


@pytest.mark.parametrize('shape,kernel,stride,dilation,with_pe', CASES)
def test_unfolded_form_equals_the_fallback(shape, kernel, stride, dilation, with_pe):
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3))
    pe = torch.randn(shape[2:], generator=gen, dtype=torch.float64) if with_pe else None
    got = sliding_window_attention_unfolded(q, k, v, pe, 0.8, kernel, stride, dilation)
    want = sliding_window_attention_python(q, k, v, pe, 0.8, kernel, stride, dilation)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

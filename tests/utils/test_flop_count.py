import torch
from mmengine.analysis import FlopAnalyzer
from torch import nn

from acmix_mm.layers import sliding_window_attention
from acmix_mm.utils.flop_count import acmix_flop_analyzer


class ExplicitAttention(nn.Module):
    def forward(self, q, k, v):
        return (q @ k.transpose(-2, -1)).softmax(-1) @ v


class FusedAttention(nn.Module):
    def forward(self, q, k, v):
        return nn.functional.scaled_dot_product_attention(q, k, v)


class FusedProjection(nn.Module):
    def forward(self, bias, w, x):
        return torch.baddbmm(bias, w, x)


class Projection(nn.Module):
    def forward(self, bias, w, x):
        return torch.bmm(w, x) + bias


class SlidingWindow(nn.Module):
    def forward(self, q, k, v):
        return sliding_window_attention(q, k, v, 5, stride=2)


def test_sdpa_counts_like_the_two_matmuls():
    q, k, v = torch.randn(2, 3, 49, 8), torch.randn(2, 3, 20, 8), torch.randn(2, 3, 20, 8)
    explicit = FlopAnalyzer(ExplicitAttention(), (q, k, v)).total()
    assert FlopAnalyzer(FusedAttention(), (q, k, v)).total() == 0  # mmengine alone
    assert acmix_flop_analyzer(FusedAttention(), (q, k, v)).total() == explicit == \
        2 * 2 * 3 * 49 * 20 * 8


def test_baddbmm_counts_like_bmm():
    args = torch.randn(2, 6, 1), torch.randn(2, 6, 4), torch.randn(2, 4, 9)
    assert acmix_flop_analyzer(FusedProjection(), args).total() == \
        FlopAnalyzer(Projection(), args).total() == 2 * 6 * 4 * 9


def test_sliding_window_counts_logits_and_weighted_sum():
    q, k, v = (torch.randn(1, 2, 3, 7, 9) for _ in range(3))
    # 4 x 5 queries of 2 heads x 3 channels, 25 window positions, two products each
    assert acmix_flop_analyzer(SlidingWindow(), (q, k, v)).total() == 2 * (2 * 3 * 4 * 5) * 25

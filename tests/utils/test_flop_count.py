"""mmengine's own FLOP counting (``FlopAnalyzer``, ``get_model_complexity_info``: what the get_flops
tools of mmdet, mmseg and mmpretrain call) counts every operator ACmix runs once acmix_mm is
imported. Expected totals are derived independently: from the layers' shapes, or from the same
backbone without ACmix (standard operators only) plus the ACmix layers' own formula."""
import math

import pytest
import torch
from mmengine.analysis import FlopAnalyzer, get_model_complexity_info
from torch import nn

import acmix_mm  # noqa: F401  (registers the handles)
from acmix_mm.layers import ACmix, sliding_window_attention


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


def flops(model, *inputs):
    return get_model_complexity_info(model, inputs=inputs, show_table=False,
                                     show_arch=False)['flops']


def test_sdpa_counts_like_the_two_matmuls():
    q, k, v = torch.randn(2, 3, 49, 8), torch.randn(2, 3, 20, 8), torch.randn(2, 3, 20, 8)
    assert FlopAnalyzer(FusedAttention(), (q, k, v)).total() == \
        FlopAnalyzer(ExplicitAttention(), (q, k, v)).total() == 2 * 2 * 3 * 49 * 20 * 8


def test_baddbmm_counts_like_bmm():
    args = torch.randn(2, 6, 1), torch.randn(2, 6, 4), torch.randn(2, 4, 9)
    assert FlopAnalyzer(FusedProjection(), args).total() == \
        FlopAnalyzer(Projection(), args).total() == 2 * 6 * 4 * 9


def test_sliding_window_counts_logits_and_weighted_sum():
    q, k, v = (torch.randn(1, 2, 3, 7, 9) for _ in range(3))
    # 4 x 5 queries of 2 heads x 3 channels, 25 window positions, two products each
    assert flops(SlidingWindow(), q, k, v) == 2 * (2 * 3 * 4 * 5) * 25


def acmix_layer_flops(layer: ACmix, h: int, w: int) -> int:
    """One ACmix layer on a ``(1, Cin, h, w)`` map, from its shapes (multiply-adds)."""
    c, n, d = layer.out_channels, layer.heads, layer.head_dim
    k2, katt = layer.kernel_conv ** 2, layer.kernel_att
    ho, wo = math.ceil(h / layer.stride), math.ceil(w / layer.stride)
    return (3 * c * layer.in_channels * h * w  # q, k, v projections
            + d * 2 * h * w  # conv_p on the position grid
            + 2 * c * ho * wo * katt * katt  # attention logits and weighted sum
            + k2 * 3 * n * d * h * w  # fc
            + c * k2 * k2 * ho * wo)  # dep_conv (k2 inputs per group, k_conv x k_conv kernel)


@pytest.mark.parametrize('stride', [1, 2])
def test_standard_function_counts_an_acmix_layer(stride):
    layer = ACmix(16, 32, heads=4, stride=stride).eval()
    with torch.no_grad():
        assert flops(layer, torch.randn(1, 16, 9, 11)) == acmix_layer_flops(layer, 9, 11)


def _input_shapes(model, kind, x):
    shapes = []
    hooks = [m.register_forward_pre_hook(lambda m, args: shapes.append((m, args[0].shape)))
             for m in model.modules() if isinstance(m, kind)]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return shapes


@pytest.mark.slow
def test_acmix_resnet50_counts_resnet50_with_acmix_for_its_3x3_convs():
    """ACmix-ResNet-50 = mmseg's ResNet-50 (every operator standard) - its bottlenecks' 3x3 convs
    + the ACmix layers that replace them."""
    from mmseg.models.backbones import ResNet

    from acmix_mm.models.backbones import ACmixResNet
    x = torch.randn(1, 3, 96, 96)
    acmix, base = ACmixResNet(depth=50).eval(), ResNet(depth=50)
    base.eval()  # mmseg's ResNet.train returns None
    expected = flops(base, x)
    for layer, (_, _, h, w) in _input_shapes(acmix, ACmix, x):
        ho, wo = math.ceil(h / layer.stride), math.ceil(w / layer.stride)
        expected += acmix_layer_flops(layer, h, w) - 9 * layer.in_channels ** 2 * ho * wo
    with torch.no_grad():
        assert flops(acmix, x) == expected


@pytest.mark.slow
def test_acmix_swin_counts_swin_with_the_conv_path_added():
    """ACmix-Swin = mmdet's Swin (every operator standard, same attention products) + each
    block's conv path: fc (3C -> 9 per position) and dep_conv (C outputs, 9 inputs, 3x3)."""
    from mmdet.models.backbones import SwinTransformer

    from acmix_mm.models.backbones import ACmixSwinTransformer
    cfg = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
    x = torch.randn(1, 3, 224, 224)  # stage maps 56, 28, 14, 7: whole windows
    acmix, base = ACmixSwinTransformer(**cfg).eval(), SwinTransformer(**cfg)
    base.eval()  # mmdet's SwinTransformer.train returns None
    expected = flops(base, x)
    for stage, depth in enumerate(cfg['depths']):
        c, hw = 32 * 2 ** stage, (56 // 2 ** stage) ** 2
        expected += depth * (9 * 3 * c * hw + c * 9 * 9 * hw)
    with torch.no_grad():
        assert flops(acmix, x) == expected

import importlib.util
import os

import torch
from mmengine.analysis import FlopAnalyzer
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
spec = importlib.util.spec_from_file_location(
    'model_table', os.path.join(ROOT, 'tools/analysis_tools/model_table.py'))
model_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model_table)


class ExplicitAttention(nn.Module):
    def forward(self, q, k, v):
        return (q @ k.transpose(-2, -1)).softmax(-1) @ v


class FusedAttention(nn.Module):
    def forward(self, q, k, v):
        return nn.functional.scaled_dot_product_attention(q, k, v)


def test_sdpa_handle_counts_like_the_two_matmuls():
    q, k, v = torch.randn(2, 3, 49, 8), torch.randn(2, 3, 20, 8), torch.randn(2, 3, 20, 8)
    explicit = FlopAnalyzer(ExplicitAttention(), (q, k, v)).total()
    fused = FlopAnalyzer(FusedAttention(), (q, k, v))
    assert fused.total() == 0  # what mmengine counts without the handle
    fused = FlopAnalyzer(FusedAttention(), (q, k, v))
    fused.set_op_handle('aten::scaled_dot_product_attention', model_table.sdpa_flop_handle)
    assert fused.total() == explicit == 2 * 2 * 3 * 49 * 20 * 8

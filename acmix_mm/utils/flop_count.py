"""mmengine's ``FlopAnalyzer`` with handles for the operators ACmix runs that it does not know.

Convention as mmengine: one multiply-add is one FLOP.

* ``aten::baddbmm`` (the fused q/k/v projections of the ResNet variant): like ``aten::bmm``.
* ``aten::scaled_dot_product_attention`` (Swin windows): ``q @ k^T`` and ``attn @ v``.
* ``acmix_mm::sliding_window_attention``: the logits and the weighted sum over every window.
"""
from typing import Any, List

import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape

from ..layers.kernels import sliding_window_attention_flops


def _product(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def baddbmm_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """``(B, n, k) @ (B, k, m)`` plus a bias: ``B * n * k * m``."""
    b, n, k = get_shape(inputs[1])
    return b * n * k * get_shape(inputs[2])[-1]


def sdpa_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """``softmax(q @ k^T) @ v`` for q ``(..., N_q, d)``, k/v ``(..., N_k, d)``."""
    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    return 2 * _product(q[:-2]) * q[-2] * k[-2] * q[-1]


def acmix_flop_analyzer(model: torch.nn.Module, inputs: tuple) -> FlopAnalyzer:
    """A quiet ``FlopAnalyzer`` of ``model`` on ``inputs`` that counts ACmix's operators."""
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle('aten::baddbmm', baddbmm_flops)
    analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flops)
    analyzer.set_op_handle('acmix_mm::sliding_window_attention', sliding_window_attention_flops)
    return analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)

"""FLOP handles for the operators ACmix runs that mmengine's analysis does not know, registered
in mmengine's own tables so that its standard tools count them.

Convention as mmengine: one multiply-add is one FLOP.

* ``aten::baddbmm`` (the fused q/k/v projections of the ResNet variant, the Swin windows' logits
  with their bias): like ``aten::bmm``.
* ``aten::scaled_dot_product_attention``: ``q @ k^T`` and ``attn @ v``.
* ``acmix_mm::sliding_window_attention``: the logits and the weighted sum over every window.

mmengine 0.10.7 has no public registration call for default handles: ``FlopAnalyzer`` (and
``get_model_complexity_info``, which builds one, hence the ``get_flops`` tools of mmdet, mmseg
and mmpretrain) starts from the table ``mmengine.analysis.complexity_analysis.
_DEFAULT_SUPPORTED_FLOP_OPS``. :func:`register_flop_handles` adds these handles there (and the
matching activation handles); ``import acmix_mm`` (or ``custom_imports``) calls it. It never
replaces a handle mmengine already has.
"""
from typing import Any, Dict, List

import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis import complexity_analysis
from mmengine.analysis.jit_handles import Handle, generic_activation_jit, get_shape

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


FLOP_HANDLES: Dict[str, Handle] = {
    'aten::baddbmm': baddbmm_flops,
    'aten::scaled_dot_product_attention': sdpa_flops,
    'acmix_mm::sliding_window_attention': sliding_window_attention_flops,
}
ACTIVATION_HANDLES: Dict[str, Handle] = {
    'aten::baddbmm': generic_activation_jit(),
    'acmix_mm::sliding_window_attention': generic_activation_jit(),
}


def register_flop_handles() -> None:
    """Adds :data:`FLOP_HANDLES` and :data:`ACTIVATION_HANDLES` to the default tables of every
    ``FlopAnalyzer`` / ``ActivationAnalyzer`` created afterwards (idempotent; a handle that
    mmengine already defines is kept)."""
    for table, handles in ((complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS, FLOP_HANDLES),
                           (complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS, ACTIVATION_HANDLES)):
        for name, handle in handles.items():
            table.setdefault(name, handle)


def acmix_flop_analyzer(model: torch.nn.Module, inputs: tuple) -> FlopAnalyzer:
    """A quiet ``FlopAnalyzer`` of ``model`` on ``inputs`` with ACmix's handles registered."""
    register_flop_handles()
    analyzer = FlopAnalyzer(model, inputs)
    return analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)

"""Stage I of ACmix: several 1x1 projections of one map as one product, and its backward.

On the CPU three implementations compete: oneDNN's 1x1 convolution, a batched matrix product
(PyTorch's BLAS: MKL, which on AMD CPUs runs without AVX-512) and oneDNN's matrix product (the
operator that ``torch.compile`` uses for linear layers on the CPU; where this torch has it). None
wins everywhere, and oneDNN's choice of convolution algorithm makes the gap erratic (it differs
between processes): at 2 threads its convolution ran from 2.5x slower (128 input channels at
56x56) to 2.1x faster (512 channels at 25x42) than the batched product, and its backward (input,
weight and bias gradients in one call) from 2.6x slower (64 channels at 200x336) to 2.0x faster
(``python tools/analysis_tools/benchmark_projection.py``, ``docs/benchmark_projection.md``).
So, as ``torch.backends.cudnn.benchmark`` does on CUDA, the first call of each size class times
them (see :func:`fastest`) and later calls of that class run the fastest. A class is the shape
with the number of positions (tokens) rounded up to a power of two (:func:`size_class`), so that
multi-scale training, whose every batch may have a new size, times a bounded number of classes.
All give the same numbers up to rounding, so the choice (which can differ between processes)
changes the last bits. float64 (no oneDNN kernels), recorded graphs, CPU autocast (for
:func:`project_tokens`) and runs with ``torch.use_deterministic_algorithms(True)`` (mmengine's
``randomness.deterministic=True``) never time: they take the batched product (``F.linear`` for
:func:`project_tokens`), so that such runs are bit-reproducible across processes (exact resume).
:func:`project_1x1` under autograd takes the batched product too (ACmix-ResNet's training path
calls it without autograd, see :mod:`..acmix_recompute`, and so times).
"""
import time
from typing import Callable, Dict, Hashable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

_FASTEST: Dict[Hashable, str] = {}
TIMED_RUNS = 2


def fastest(key: Hashable, candidates: Dict[str, Callable[[], object]]) -> object:
    """The result of the candidate that ran fastest the first time ``key`` was seen.

    On a new ``key`` every candidate runs once untimed (so that one-time costs such as weight
    layout conversions do not count), then ``TIMED_RUNS`` times, the candidates alternating; the
    fastest one (by its best run) is kept and its result returned. Later calls run that candidate
    alone. The candidates must compute the same thing.
    """
    choice = _FASTEST.get(key)
    if choice is None:
        times = {name: float('inf') for name in candidates}
        for run in candidates.values():
            run()
        for _ in range(TIMED_RUNS):  # alternating, so that a slow spell hits every candidate
            for name, run in candidates.items():
                start = time.perf_counter()
                run()
                times[name] = min(times[name], time.perf_counter() - start)
        choice = _FASTEST[key] = min(times, key=times.get)
    return candidates[choice]()


def size_class(positions: int) -> int:
    """The power of two at or above ``positions`` (1 for 0 or 1): the timed choice's key holds
    it instead of the exact number of positions."""
    return 1 << max(positions - 1, 0).bit_length()


def fastest_choices() -> Dict[Hashable, str]:
    """A copy of the choices made so far, ``key -> candidate name`` (for benchmarks and tests)."""
    return dict(_FASTEST)


def _tuned(x: torch.Tensor) -> bool:
    """Whether the timed choice applies: float32 on the CPU, outside recorded graphs, with
    nondeterministic algorithms allowed (timing makes the choice differ between processes)."""
    return (x.device.type == 'cpu' and x.dtype == torch.float32 and not recording_graph()
            and not torch.are_deterministic_algorithms_enabled())


def recording_graph() -> bool:
    """Whether a graph is being recorded (jit trace, torch.compile / torch.export, ONNX export),
    where shapes may be symbolic and the choice must not depend on timing."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or _in_onnx_export()


def _onnx_export_check() -> Callable[[], bool]:
    """``torch.onnx.is_in_onnx_export``, reading its two flags directly where this torch keeps them
    as it does today: the function imports two modules on every call (6 us, and an ACmix layer
    asks several times per step)."""
    try:
        from torch.onnx._internal.exporter import _flags
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

        def check() -> bool:
            return bool(GLOBALS.in_onnx_export or _flags._is_onnx_exporting)
        check()  # both flags are where this torch keeps them
    except (ImportError, AttributeError):
        return torch.onnx.is_in_onnx_export
    return check


_in_onnx_export = _onnx_export_check()


def _onednn_matmul() -> Optional[Callable[..., torch.Tensor]]:
    """oneDNN's matrix product, ``f(a, b) = a @ b.t()`` for 2-D float32 CPU tensors, each dense or
    the transpose of a dense one (on other strides oneDNN runs its reference kernel, hundreds of
    times slower); None where this torch lacks it (built without oneDNN, or the operator
    renamed)."""
    try:
        if not torch.backends.mkldnn.is_available():
            return None
        linear = torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):
        return None
    return lambda a, b: linear(a, b, None, 'none', [], '')


_MATMUL = _onednn_matmul()


def _product_per_sample(matrix: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
    """``matrix @ planes[i]`` for every sample by oneDNN's product, as one ``(B, M, N)`` tensor
    (the product itself for a batch of one, else the products stacked).

    Args:
        matrix: ``(M, K)``, dense or the transpose of a dense matrix.
        planes: ``(B, K, N)``, contiguous (oneDNN runs its reference kernel on other strides).
    """
    outs = [_MATMUL(matrix, plane.t()) for plane in planes]
    return outs[0].unsqueeze(0) if len(outs) == 1 else torch.stack(outs)


def project_1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``weight @ x + bias`` at every position: a 1x1 convolution.

    Args:
        x: ``(B, Cin, H, W)``.
        weight: ``(Cout, Cin)``.
        bias: ``(Cout,)``.

    Returns:
        ``(B, Cout, H, W)``, contiguous.
    """
    b, c_in, h, w = x.shape

    def conv():
        return F.conv2d(x, weight.view(-1, c_in, 1, 1), bias)

    def product():
        # bmm with the weight expanded: torch.matmul would run a slow transposed product.
        out = torch.baddbmm(bias.view(1, -1, 1), weight.expand(b, -1, -1),
                            x.reshape(b, c_in, h * w))
        return out.view(b, -1, h, w)

    def onednn():
        out = _product_per_sample(weight.contiguous(), x.reshape(b, c_in, h * w).contiguous())
        return out.add_(bias.view(1, -1, 1)).view(b, -1, h, w)

    if x.device.type != 'cpu':
        return conv()
    if not _tuned(x) or torch.is_grad_enabled():
        return product()  # autograd and recorded graphs see the same operators on every call
    autocast = torch.is_autocast_enabled('cpu')
    key = ('project_1x1', b, c_in, size_class(h * w), weight.shape[0], torch.get_num_threads(),
           autocast)
    candidates = {'conv': conv, 'product': product}
    if _MATMUL is not None and not autocast:  # autocast does not cast it: float32 results
        candidates['onednn'] = onednn
    return fastest(key, candidates)


def project_1x1_backward(x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor,
                         need_x: bool) -> Tuple[Optional[torch.Tensor], torch.Tensor,
                                                torch.Tensor]:
    """Gradients of :func:`project_1x1` from ``grad_out``.

    Args:
        x: ``(B, Cin, H, W)``.
        weight: ``(Cout, Cin)``.
        grad_out: ``(B, Cout, H * W)``, contiguous.
        need_x: whether to compute the input's gradient.

    Returns:
        ``grad_x`` ``(B, Cin, H, W)`` (None unless ``need_x``), ``grad_weight`` ``(Cout, Cin)``
        and ``grad_bias`` ``(Cout,)``.
    """
    b, c_in, h, w = x.shape
    c_out = weight.shape[0]

    def conv():
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out.view(b, c_out, h, w), x, weight.view(c_out, c_in, 1, 1), [c_out], [1, 1],
            [0, 0], [1, 1], False, [0, 0], 1, [need_x, True, True])
        return grad_x, grad_w.view(c_out, c_in), grad_b

    def product():
        grad_w = torch.bmm(grad_out, x.reshape(b, c_in, h * w).transpose(1, 2)).sum(0)
        grad_x = None
        if need_x:
            grad_x = torch.bmm(weight.t().expand(b, -1, -1), grad_out).view(b, c_in, h, w)
        return grad_x, grad_w, grad_out.sum((0, 2))

    def onednn():
        planes = x.reshape(b, c_in, h * w).contiguous()  # dense, see _product_per_sample
        grads_out = grad_out.contiguous()
        grad_w = _MATMUL(grads_out[0], planes[0])
        for i in range(1, b):
            grad_w += _MATMUL(grads_out[i], planes[i])
        grad_x = None
        if need_x:
            grad_x = _product_per_sample(weight.contiguous().t(), grads_out).view(b, c_in, h, w)
        return grad_x, grad_w, grad_out.sum((0, 2))

    if not _tuned(x):
        return product()
    key = ('project_1x1_backward', b, c_in, size_class(h * w), c_out, need_x,
           torch.get_num_threads())
    candidates = {'conv': conv, 'product': product}
    if _MATMUL is not None:
        candidates['onednn'] = onednn
    return fastest(key, candidates)


def project_tokens(x: torch.Tensor, weight: torch.Tensor,
                   bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x @ weight.t() + bias``, ``F.linear`` of token-major maps (the Swin variant's ``qkv``
    and ``proj``), with the timed choice of :func:`fastest` on the CPU: PyTorch's BLAS product
    or oneDNN's. Differentiable (in ``x``, ``weight`` and ``bias``): under autograd the choice is
    made for the forward and, separately, for the backward, which keeps ``x`` and ``weight`` as
    ``F.linear`` does, but has no double backward (``create_graph=True`` through it raises; run
    with ``torch.use_deterministic_algorithms(True)`` to get ``F.linear`` there). Where the choice
    does not apply (see the module's doc) and for empty inputs it is ``F.linear``.

    Args:
        x: ``(..., Cin)``.
        weight: ``(Cout, Cin)``.
        bias: ``(Cout,)`` or None.

    Returns:
        ``(..., Cout)``, contiguous.
    """
    if (_MATMUL is None or not _tuned(x) or weight.dtype != x.dtype or x.numel() == 0
            or (bias is not None and bias.dtype != x.dtype) or torch.is_autocast_enabled('cpu')):
        return F.linear(x, weight, bias)
    shape = x.shape
    x2d = x.reshape(-1, shape[-1]).contiguous()  # dense, see _product_per_sample
    if torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x2d, weight, bias)):
        out = _TokenProjection.apply(x2d, weight, bias)
    else:
        out = _tokens_forward(x2d, weight, bias)
    return out.view(*shape[:-1], weight.shape[0])


def _tokens_forward(x: torch.Tensor, weight: torch.Tensor,
                    bias: Optional[torch.Tensor]) -> torch.Tensor:
    """:func:`project_tokens` of a dense ``(L, Cin)`` ``x``, by the timed choice; no autograd."""
    def blas():
        return F.linear(x, weight, bias)

    def onednn():
        out = _MATMUL(x, weight.contiguous())
        return out if bias is None else out.add_(bias)

    key = ('project_tokens', size_class(x.shape[0]), x.shape[1], weight.shape[0], bias is not None,
           torch.get_num_threads())
    return fastest(key, {'blas': blas, 'onednn': onednn})


def _tokens_backward(x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor,
                     needs: Tuple[bool, bool, bool]) -> Tuple[Optional[torch.Tensor], ...]:
    """Gradients of :func:`project_tokens` of a dense ``(L, Cin)`` ``x`` from ``grad_out``
    ``(L, Cout)``: ``x``'s, ``weight``'s and ``bias``'s, each None where ``needs`` says so."""
    grad_out = grad_out.contiguous()
    need_x, need_w, need_b = needs

    def blas():
        return (grad_out.mm(weight) if need_x else None,
                grad_out.t().mm(x) if need_w else None)

    def onednn():
        # both operands of each product dense or the transpose of a dense matrix
        return (_MATMUL(grad_out, weight.contiguous().t()) if need_x else None,
                _MATMUL(grad_out.t(), x.t()) if need_w else None)

    key = ('project_tokens_backward', size_class(x.shape[0]), x.shape[1], weight.shape[0], need_x,
           need_w, torch.get_num_threads())
    grad_x, grad_w = fastest(key, {'blas': blas, 'onednn': onednn})
    return grad_x, grad_w, grad_out.sum(0) if need_b else None


class _TokenProjection(torch.autograd.Function):
    """:func:`project_tokens` under autograd, keeping ``x`` and ``weight``."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return _tokens_forward(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        return _tokens_backward(x, weight, grad_out, ctx.needs_input_grad)

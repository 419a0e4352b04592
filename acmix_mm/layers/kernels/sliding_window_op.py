"""``torch.ops.acmix_mm.sliding_window_attention``: one operator, three implementations.

* CPU: the C++ kernel (:mod:`.cpu_extension`), OpenMP over rows, vectorised over queries.
* CUDA: the Triton kernel (:mod:`.sliding_window_triton`) where Triton is installed.
* Anywhere: the PyTorch fallback (:mod:`.sliding_window_python`), which every kernel matches.

``ACMIX_MM_KERNEL`` (``auto`` by default, or ``python``, ``cpp``, ``triton``) forces one. Every
implementation recomputes the softmax in the backward, so a training step stores only the inputs.
Being a registered operator, it appears as one node in traces (mmengine's FLOP counter has a
handle for it, see :func:`sliding_window_attention_flops`).
"""
import os
from typing import List, Optional, Sequence

import torch

from .cpu_extension import load_cpu_extension, run_kernel
from .sliding_window_python import (output_size, sliding_window_attention_python,
                                    sliding_window_attention_python_backward)

BACKENDS = ('auto', 'python', 'cpp', 'triton')
CPP_DTYPES = (torch.float32, torch.float64)
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def selected_backend(device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """The implementation used for tensors of ``dtype`` on ``device``, from ``ACMIX_MM_KERNEL``
    and what is available (the C++ kernel computes in float32 and float64, the Triton kernel in
    float32 from float32, float16 and bfloat16 inputs)."""
    choice = os.environ.get('ACMIX_MM_KERNEL', 'auto')
    if choice not in BACKENDS:
        raise ValueError(f'ACMIX_MM_KERNEL must be one of {BACKENDS}, got {choice!r}')
    if choice == 'cpp' and device.type != 'cpu':
        raise ValueError(f'ACMIX_MM_KERNEL=cpp runs on the CPU only, got tensors on {device}')
    if choice == 'triton' and device.type != 'cuda' and not triton_interpreted():
        raise ValueError(f'ACMIX_MM_KERNEL=triton runs on CUDA only (or on the CPU in Triton\'s '
                         f'interpreter, TRITON_INTERPRET=1), got tensors on {device}')
    if choice == 'auto':
        if device.type == 'cpu' and dtype in CPP_DTYPES and load_cpu_extension() is not None:
            return 'cpp'
        if device.type == 'cuda' and dtype in TRITON_DTYPES and _triton_module().TRITON_AVAILABLE:
            return 'triton'
        return 'python'
    if choice == 'cpp' and dtype not in CPP_DTYPES:
        raise ValueError(f'ACMIX_MM_KERNEL=cpp computes in {CPP_DTYPES}, got {dtype}')
    if choice == 'cpp' and load_cpu_extension() is None:
        raise RuntimeError('ACMIX_MM_KERNEL=cpp, but the C++ kernel could not be built')
    if choice == 'triton' and dtype not in TRITON_DTYPES:
        raise ValueError(f'ACMIX_MM_KERNEL=triton takes {TRITON_DTYPES}, got {dtype}')
    if choice == 'triton' and not _triton_module().TRITON_AVAILABLE:
        raise RuntimeError('ACMIX_MM_KERNEL=triton, but Triton is not installed')
    return choice


def triton_interpreted() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET=1``: on CPU tensors)."""
    return os.environ.get('TRITON_INTERPRET') == '1'


def _triton_module():
    from . import sliding_window_triton
    return sliding_window_triton


@torch.library.custom_op('acmix_mm::sliding_window_attention', mutates_args=())
def _forward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pe: Optional[torch.Tensor],
                scale: float, kernel: int, stride: int, dilation: int) -> torch.Tensor:
    backend = selected_backend(q.device, q.dtype)
    if backend == 'cpp':
        return run_kernel('sliding_window_forward', q, k, v, pe, scale, kernel, stride, dilation)
    if backend == 'triton':
        return _triton_module().sliding_window_attention_triton_forward(
            q, k, v, pe, scale, kernel, stride, dilation)
    return sliding_window_attention_python(q, k, v, pe, scale, kernel, stride, dilation)


@torch.library.custom_op('acmix_mm::sliding_window_attention_backward', mutates_args=())
def _backward_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 pe: Optional[torch.Tensor], scale: float, kernel: int, stride: int,
                 dilation: int) -> List[torch.Tensor]:
    """Gradients of q, k, v, and of pe when it is given."""
    backend = selected_backend(q.device, q.dtype)
    if backend == 'cpp':
        grad_q, grad_k, grad_v = run_kernel('sliding_window_backward', grad_out, q, k, v, pe,
                                            scale, kernel, stride, dilation, None)
        return [grad_q, grad_k, grad_v] + ([] if pe is None else [-grad_k.sum((0, 1))])
    if backend == 'triton':
        grads = _triton_module().sliding_window_attention_triton_backward(
            grad_out, q, k, v, pe, scale, kernel, stride, dilation)
        return [g for g in grads if g is not None]
    return sliding_window_attention_python_backward(grad_out, q, k, v, pe, scale, kernel, stride,
                                                    dilation)


@_forward_op.register_fake
def _(q, k, v, pe, scale, kernel, stride, dilation):
    b, n, d, h, w = q.shape
    return q.new_empty((b, n, d, output_size(h, stride), output_size(w, stride)))


@_backward_op.register_fake
def _(grad_out, q, k, v, pe, scale, kernel, stride, dilation):
    return [torch.empty_like(q) for _ in range(3)] + ([] if pe is None else [torch.empty_like(pe)])


def _setup_context(ctx, inputs, output):
    q, k, v, pe, scale, kernel, stride, dilation = inputs
    ctx.save_for_backward(q, k, v, pe)
    ctx.config = (scale, kernel, stride, dilation)


def _backward(ctx, grad_out):
    q, k, v, pe = ctx.saved_tensors
    grads = _backward_op(grad_out.contiguous(), q, k, v, pe, *ctx.config)
    grad_pe = grads[3] if pe is not None else None
    return grads[0], grads[1], grads[2], grad_pe, None, None, None, None


_forward_op.register_autograd(_backward, setup_context=_setup_context)
sliding_window_attention_op = _forward_op
sliding_window_attention_backward_op = _backward_op


def sliding_window_attention_flops(inputs: Sequence, outputs: Sequence) -> int:
    """mmengine ``FlopAnalyzer`` handle: one multiply-add per channel for every window position,
    once for the logits and once for the weighted sum."""
    from mmengine.analysis.jit_handles import get_shape
    out_shape = get_shape(outputs[0])
    kernel = inputs[5].toIValue()
    num = 1
    for s in out_shape:
        num *= s
    return 2 * num * kernel * kernel

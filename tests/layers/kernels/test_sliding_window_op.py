"""The registered operator (C++ kernel on the CPU) against the PyTorch fallback and autograd."""
import pytest
import torch

from acmix_mm.layers import sliding_window_attention
from acmix_mm.layers.kernels import (selected_backend, sliding_window_attention_op,
                                     sliding_window_attention_python)
from acmix_mm.layers.kernels.cpu_extension import load_cpu_extension

# ((B, N, d, H, W), kernel, stride, dilation, with pe)
CASES = [
    ((1, 2, 4, 5, 6), 3, 1, 1, False),
    ((2, 1, 8, 9, 7), 7, 2, 1, True),
    ((1, 1, 3, 2, 2), 7, 1, 1, True),  # window larger than the map: repeated reflection
    ((1, 2, 5, 11, 10), 3, 1, 2, True),
    ((2, 2, 6, 12, 37), 7, 1, 1, True),  # rows longer than one register block
    ((1, 2, 16, 13, 35), 7, 2, 1, True),
    ((1, 1, 2, 1, 5), 3, 1, 1, False),  # a single row
    ((1, 2, 4, 10, 11), 5, 3, 1, True),  # three column phases
    ((1, 1, 3, 9, 13), 3, 2, 2, True),  # stride and dilation: one phase no offset reaches
    ((1, 1, 2, 6, 40), 3, 3, 2, True),  # stride 3, dilation 2, rows over one register block
    ((1, 2, 4, 9, 12), 5, 2, 1, False),  # strided rows without pe
    ((1, 1, 3, 7, 17), 3, 4, 1, False),  # stride 4: phases longer than the kernel reaches
    # stride 1 without dilation (with AVX-512 or AVX2, float32 takes the shifted chunks): channel
    # blocks of 8 and 3 (AVX-512) or 4, 4 and 3 (AVX2: two pairs, a pair and a single), row
    # tails of 3 and of 1
    ((1, 1, 11, 6, 19), 5, 1, 1, True),
    ((1, 1, 16, 8, 33), 3, 1, 1, False),
]


def _inputs(shape, with_pe, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(shape, generator=gen, dtype=dtype).requires_grad_() for _ in range(3))
    pe = torch.randn(shape[2:], generator=gen, dtype=dtype).requires_grad_() if with_pe else None
    return q, k, v, pe


def test_cpu_kernel_is_built_and_chosen():
    assert load_cpu_extension() is not None
    assert selected_backend(torch.device('cpu'), torch.float32) == 'cpp'
    assert selected_backend(torch.device('cpu'), torch.float16) == 'python'


@pytest.mark.parametrize('shape,kernel,stride,dilation,with_pe', CASES)
def test_cpu_kernel_matches_fallback_float32(shape, kernel, stride, dilation, with_pe):
    q, k, v, pe = _inputs(shape, with_pe, torch.float32)
    leaves = [q, k, v] + ([pe] if with_pe else [])
    out = sliding_window_attention(q, k, v, kernel, stride, dilation, pe=pe, scale=0.6)
    ref = sliding_window_attention_python(q, k, v, pe, 0.6, kernel, stride, dilation)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad_out = torch.randn_like(ref)
    grads = torch.autograd.grad(out, leaves, grad_out)
    ref_grads = torch.autograd.grad(ref, leaves, grad_out)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('shape,kernel,stride,dilation,with_pe', [CASES[i] for i in (1, 3, 4, 7)])
def test_large_logits_stay_finite_float32(shape, kernel, stride, dilation, with_pe):
    """Logits of hundreds, whose exponentials overflow float32: the softmax's running maximum
    (kept as the logits are stored, or in a pass of its own) must be subtracted first."""
    q, k, v, pe = _inputs(shape, with_pe, torch.float32)
    with torch.no_grad():
        out = sliding_window_attention(q, k, v, kernel, stride, dilation, pe=pe, scale=60.0)
        ref = sliding_window_attention_python(q, k, v, pe, 60.0, kernel, stride, dilation)
    assert ref.isfinite().all()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


# the first four and the strided ones with dilation or several phases (float64 takes the generic
# paths: the AVX-512 shifted chunks are float only)
@pytest.mark.parametrize('shape,kernel,stride,dilation,with_pe',
                         [CASES[i] for i in (0, 1, 2, 3, 8, 9, 10, 11)])
def test_cpu_kernel_gradcheck_float64(shape, kernel, stride, dilation, with_pe):
    q, k, v, pe = _inputs(shape, with_pe, torch.float64)
    leaves = (q, k, v) + ((pe, ) if with_pe else ())

    def f(q, k, v, *pe):
        return sliding_window_attention(q, k, v, kernel, stride, dilation,
                                        pe=pe[0] if pe else None, scale=0.7)

    assert torch.autograd.gradcheck(f, leaves)


def test_python_backend_recomputes_and_matches(monkeypatch):
    shape, kernel, stride, dilation, _ = CASES[1]  # at a quarter of its size: gradcheck's cost
    q, k, v, pe = _inputs((1, 1, 4, *shape[3:]), True, torch.float64)
    monkeypatch.setenv('ACMIX_MM_KERNEL', 'python')
    assert selected_backend(q.device, q.dtype) == 'python'
    out = sliding_window_attention(q, k, v, kernel, stride, dilation, pe=pe, scale=0.5)
    torch.testing.assert_close(
        out, sliding_window_attention_python(q, k, v, pe, 0.5, kernel, stride, dilation))
    assert torch.autograd.gradcheck(
        lambda *t: sliding_window_attention(*t[:3], kernel, stride, dilation, pe=t[3], scale=0.5),
        (q, k, v, pe))


def test_strided_views_of_one_qkv_tensor():
    qkv = torch.randn(2, 3 * 2 * 8, 9, 11)
    q, k, v = qkv.view(2, 3, 2, 8, 9, 11).unbind(1)
    out = sliding_window_attention(q, k, v, 7)
    ref = sliding_window_attention_python(q.contiguous(), k.contiguous(), v.contiguous(), None,
                                          1.0, 7, 1, 1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_four_dim_input_and_half_precision_fallback():
    q, k, v = (torch.randn(2, 4, 6, 7) for _ in range(3))
    out = sliding_window_attention(q, k, v, 3, stride=2)
    assert out.shape == (2, 4, 3, 4)
    half = sliding_window_attention(*(t.bfloat16() for t in (q, k, v)), 3, stride=2)
    torch.testing.assert_close(half.float(), out, rtol=0.05, atol=0.05)


def test_operator_is_one_node_in_a_trace():
    q, k, v = (torch.randn(1, 1, 4, 6, 6) for _ in range(3))
    graph = torch.jit.trace(lambda q, k, v: sliding_window_attention(q, k, v, 3), (q, k, v)).graph
    kinds = [node.kind() for node in graph.nodes()]
    assert 'acmix_mm::sliding_window_attention' in kinds
    assert 'aten::softmax' not in kinds


@pytest.mark.parametrize('kwargs,message', [
    (dict(kernel=4), 'kernel must be a positive odd int'),
    (dict(kernel=3, stride=0), 'stride and dilation'),
    (dict(kernel=3, pe=torch.zeros(4, 5, 5)), 'pe must have shape'),
])
def test_bad_arguments_are_named(kwargs, message):
    q = torch.randn(1, 1, 4, 6, 6)
    with pytest.raises(ValueError, match=message):
        sliding_window_attention(q, q, q, **kwargs)
    with pytest.raises(ValueError, match='share a shape'):
        sliding_window_attention(q, q[..., :5], q, 3)


def test_unknown_backend_is_named(monkeypatch):
    monkeypatch.setenv('ACMIX_MM_KERNEL', 'fast')
    q = torch.randn(1, 1, 4, 6, 6)
    with pytest.raises(ValueError, match='ACMIX_MM_KERNEL must be one of'):
        sliding_window_attention_op(q, q, q, None, 1.0, 3, 1, 1)
    monkeypatch.setenv('ACMIX_MM_KERNEL', 'triton')
    with pytest.raises(ValueError, match='runs on CUDA only'):
        sliding_window_attention_op(q, q, q, None, 1.0, 3, 1, 1)

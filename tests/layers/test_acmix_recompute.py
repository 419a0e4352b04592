"""ACmix's training path (acmix_mm/layers/acmix_recompute.py): only the input is kept, and every
gradient equals autograd through the spec implementation."""
import pytest
import torch

from acmix_mm.layers import ACmix
from acmix_mm.utils.benchmarking import saved_tensor_storages
from spec_reference import spec_acmix_from_module

from .test_acmix import randomised


def test_training_keeps_only_the_input():
    m = ACmix(16, 16)
    x = torch.randn(2, 16, 12, 13, requires_grad=True)
    saved, out = saved_tensor_storages(lambda: m(x), exclude=list(m.parameters()))
    assert saved == {x.untyped_storage().data_ptr(): x.untyped_storage().nbytes()}
    # one node between the output and the leaves: nothing is kept out of the hooks' sight (as
    # torch.utils.checkpoint keeps its inputs)
    assert type(out.grad_fn).__name__ == '_RecomputedACmixBackward'
    assert {type(f).__name__ for f, _ in out.grad_fn.next_functions if f is not None} == {
        'AccumulateGrad'}
    assert not [v for v in vars(out.grad_fn).values() if isinstance(v, torch.Tensor)]


CASES = [  # (H, W, stride, dilation, kernel_att, kernel_conv, heads)
    (12, 15, 1, 1, 7, 3, 4),
    (11, 9, 2, 1, 7, 3, 2),
    (9, 10, 1, 1, 5, 1, 4),
    (7, 13, 1, 1, 7, 5, 1),
    (10, 7, 1, 1, 3, 7, 2),
    (13, 11, 3, 1, 7, 3, 4),
    (9, 9, 1, 2, 3, 3, 4),
    (12, 9, 2, 2, 3, 5, 2),
    (1, 1, 1, 1, 7, 3, 4),
]


@pytest.mark.parametrize('backend', ['auto', 'python'])
@pytest.mark.parametrize('h,w,stride,dilation,k_att,k_conv,heads', CASES)
def test_gradients_match_spec(monkeypatch, backend, h, w, stride, dilation, k_att, k_conv, heads):
    """Output and the gradients of the input and every parameter against autograd through the
    spec implementation (float64), on the C++ kernels and on the PyTorch fallback."""
    monkeypatch.setenv('ACMIX_MM_KERNEL', backend)
    m = randomised(ACmix(6, 8, kernel_att=k_att, heads=heads, kernel_conv=k_conv, stride=stride,
                         dilation=dilation)).double()
    x = torch.randn(2, 6, h, w, dtype=torch.float64, requires_grad=True)
    out = m(x)
    ref = spec_acmix_from_module(m, x)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    grad_out = torch.randn_like(ref)
    wrt = [x] + list(m.parameters())
    got = torch.autograd.grad(out, wrt, grad_out)
    want = torch.autograd.grad(ref, wrt, grad_out)
    for name, g, r in zip(['x'] + [n for n, _ in m.named_parameters()], got, want):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9, msg=name)


def test_frozen_parameters_and_input_get_no_gradient():
    m = randomised(ACmix(8, 8)).double()
    frozen = ['conv1.weight', 'rate2', 'dep_conv.bias', 'conv_p.weight']
    for name, p in m.named_parameters():
        p.requires_grad_(name not in frozen)
    x = torch.randn(1, 8, 7, 6, dtype=torch.float64)
    m(x).square().sum().backward()
    for name, p in m.named_parameters():
        assert (p.grad is None) == (name in frozen), name
    ref = randomised(ACmix(8, 8)).double()
    spec_acmix_from_module(ref, x).square().sum().backward()
    for (name, p), (_, r) in zip(m.named_parameters(), ref.named_parameters()):
        if name not in frozen:
            torch.testing.assert_close(p.grad, r.grad, rtol=1e-9, atol=1e-9, msg=name)


def test_float32_gradients_within_round_off():
    m = randomised(ACmix(16, 16))
    x = torch.randn(1, 16, 14, 11, requires_grad=True)
    m(x).sum().backward()
    ref = randomised(ACmix(16, 16)).double()
    x64 = x.detach().double().requires_grad_()
    spec_acmix_from_module(ref, x64).sum().backward()
    torch.testing.assert_close(x.grad, x64.grad.float(), rtol=1e-3, atol=1e-3)
    for (name, p), (_, r) in zip(m.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, r.grad.float(), rtol=1e-3, atol=1e-3, msg=name)


def test_backward_under_cpu_autocast_and_in_bfloat16():
    """Under CPU autocast the backward recomputes in the input's float32 (the gradients equal
    those without autocast); a bfloat16 layer trains on the fallbacks."""
    m = randomised(ACmix(8, 8))
    x = torch.randn(1, 8, 9, 7, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = m(x)
    out.float().sum().backward()
    ref = randomised(ACmix(8, 8))
    x_ref = x.detach().requires_grad_()
    ref(x_ref).sum().backward()
    assert x.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0.05, atol=0.05)
    m16 = randomised(ACmix(8, 8)).bfloat16()
    x16 = x.detach().bfloat16().requires_grad_()
    m16(x16).float().sum().backward()
    assert x16.grad.dtype == torch.bfloat16
    torch.testing.assert_close(x16.grad.float(), x_ref.grad, rtol=0.1, atol=0.1)

"""TunedLinear: nn.Linear's numbers, parameters and state-dict keys, computed by the timed
product of :func:`acmix_mm.layers.projection.project_tokens`."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acmix_mm.layers import TunedLinear


def _linear(bias, dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Linear(12, 7, bias=bias).to(dtype)


@pytest.mark.parametrize('choice', ['blas', 'onednn'])
@pytest.mark.parametrize('bias', [True, False])
def test_outputs_and_gradients_equal_nn_linear(choice, bias, forced):
    keys = forced(choice)
    plain = _linear(bias)
    tuned = TunedLinear.from_linear(_linear(bias))
    x = torch.randn(2, 5, 12, requires_grad=True)
    grad_out = torch.randn(2, 5, 7)
    got = torch.autograd.grad(tuned(x), [x] + list(tuned.parameters()), grad_out)
    want = torch.autograd.grad(plain(x), [x] + list(plain.parameters()), grad_out)
    assert keys == ['project_tokens', 'project_tokens_backward']
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r)
    with torch.no_grad():
        torch.testing.assert_close(tuned(x), plain(x))


def test_float64_is_exactly_f_linear_without_timing(forced):
    keys = forced('onednn')
    layer = TunedLinear.from_linear(_linear(True, torch.float64))
    x = torch.randn(3, 12, dtype=torch.float64)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias)) and keys == []


def test_from_linear_shares_parameters_keys_and_mode():
    linear = _linear(True).eval()
    tuned = TunedLinear.from_linear(linear)
    assert tuned.weight is linear.weight and tuned.bias is linear.bias
    assert not tuned.training
    assert list(tuned.state_dict()) == list(linear.state_dict()) == ['weight', 'bias']
    with torch.no_grad():
        linear.weight.mul_(2)  # an in-place change of the original shows in the tuned layer
        x = torch.randn(4, 12)
        torch.testing.assert_close(tuned(x), linear(x))
    assert TunedLinear.from_linear(_linear(False)).bias is None


def test_empty_input_forward_and_backward(forced):
    forced('onednn')
    layer = TunedLinear.from_linear(_linear(True))
    x = torch.randn(0, 5, 12, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    assert out.shape == (0, 5, 7) and torch.equal(layer.weight.grad, torch.zeros(7, 12))


def test_traced_graph_records_linear():
    layer = TunedLinear.from_linear(_linear(True))
    x = torch.randn(3, 12)
    traced = torch.jit.trace(layer, x)
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert 'aten::linear' in kinds and 'prim::PythonOp' not in kinds
    torch.testing.assert_close(traced(x), layer(x))

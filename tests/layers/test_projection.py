"""projection: every implementation of the 1x1 projections and of their backward (oneDNN's
convolution, a batched matrix product, oneDNN's matrix product) and of the token-major projection
(PyTorch's BLAS product, oneDNN's) equals the definition, whichever the timing picks; and
:func:`fastest` keeps the faster candidate per key."""
import time

import pytest
import torch

from acmix_mm.layers import projection
from acmix_mm.layers.projection import (fastest, project_1x1, project_1x1_backward,
                                        project_tokens)


CHOICES = ['conv', 'product', 'onednn']


def _inputs(dtype, size=(5, 7), batch=2):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 6, *size, generator=gen, dtype=dtype)
    weight = torch.randn(9, 6, generator=gen, dtype=dtype)
    bias = torch.randn(9, generator=gen, dtype=dtype)
    return x, weight, bias


@pytest.mark.parametrize('choice', CHOICES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('batch', [1, 2])
def test_projection_equals_its_definition(choice, dtype, batch, forced):
    forced(choice)
    x, weight, bias = _inputs(dtype, batch=batch)
    with torch.no_grad():
        out = project_1x1(x, weight, bias)
    want = torch.einsum('oc,bchw->bohw', weight, x) + bias.view(1, -1, 1, 1)
    assert out.shape == (batch, 9, 5, 7) and out.is_contiguous()
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize('choice', CHOICES)
@pytest.mark.parametrize('need_x', [True, False])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('batch', [1, 2])
def test_projection_backward_equals_autograd(choice, need_x, dtype, batch, forced):
    forced(choice)
    x, weight, bias = _inputs(dtype, size=(6, 5), batch=batch)
    grad_out = torch.randn(batch, 9, 30, dtype=dtype, generator=torch.Generator().manual_seed(1))
    xr, wr, br = (t.clone().requires_grad_() for t in (x, weight, bias))
    want = torch.autograd.grad(
        (torch.einsum('oc,bchw->bohw', wr, xr) + br.view(1, -1, 1, 1)).flatten(2), [xr, wr, br],
        grad_out)
    grad_x, grad_w, grad_b = project_1x1_backward(x, weight, grad_out, need_x)
    assert (grad_x is None) != need_x
    if need_x:
        torch.testing.assert_close(grad_x, want[0])
    torch.testing.assert_close(grad_w, want[1])
    torch.testing.assert_close(grad_b, want[2])


def test_onednn_product_competes_where_torch_has_it(monkeypatch):
    """Where this torch has oneDNN, its matrix product is among the timed candidates."""
    offered = []

    def record(key, candidates):
        offered.append(sorted(candidates))
        return candidates['product']()

    monkeypatch.setattr(projection, 'fastest', record)
    x, weight, bias = _inputs(torch.float32)
    with torch.no_grad():
        project_1x1(x, weight, bias)
        project_1x1_backward(x, weight, torch.randn(2, 9, 35), True)
    want = ['conv', 'product'] + (['onednn'] if torch.backends.mkldnn.is_available() else [])
    assert offered == [sorted(want)] * 2
    # CPU autocast does not cast oneDNN's product: under it the forward's results would stay
    # float32, where the other candidates give bfloat16
    offered.clear()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert project_1x1(x, weight, bias).dtype == torch.bfloat16
    assert offered == [['conv', 'product']]


def test_fastest_keeps_the_faster_candidate_per_key():
    calls = []

    def candidate(name, seconds):
        def run():
            calls.append(name)
            time.sleep(seconds)
            return name
        return run

    candidates = {'slow': candidate('slow', 0.02), 'quick': candidate('quick', 0.0)}
    key = ('test_fastest', object())
    assert fastest(key, candidates) == 'quick'
    runs = 1 + projection.TIMED_RUNS  # untimed, timed
    assert sorted(calls) == ['quick'] * (runs + 1) + ['slow'] * runs  # the winner once more
    calls.clear()
    assert fastest(key, candidates) == 'quick' and calls == ['quick']
    assert projection.fastest_choices()[key] == 'quick'
    # another key is timed afresh
    other = {'slow': candidate('slow', 0.0), 'quick': candidate('quick', 0.02)}
    assert fastest(('test_fastest', object()), other) == 'slow'


def test_projection_under_autograd_is_the_product():
    """A forward that autograd records always takes the matrix product (no timing runs)."""
    x, weight, bias = _inputs(torch.float32)
    weight.requires_grad_()
    out = project_1x1(x, weight, bias)
    assert type(out.grad_fn.next_functions[0][0]).__name__.startswith('BaddbmmBackward')
    torch.testing.assert_close(
        out, torch.einsum('oc,bchw->bohw', weight, x) + bias.view(1, -1, 1, 1))


def _onnx_export_flags():
    """The flags that ``torch.onnx.is_in_onnx_export`` reads: the TorchScript exporter's and the
    dynamo exporter's (``projection.recording_graph`` reads them directly)."""
    from torch.onnx._internal.exporter import _flags
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    return {'onnx_torchscript': (GLOBALS, 'in_onnx_export'),
            'onnx_dynamo': (_flags, '_is_onnx_exporting')}


@pytest.mark.parametrize('recording', ['compiling', 'onnx_torchscript', 'onnx_dynamo'])
def test_recorded_graphs_take_the_product_without_timing(recording, monkeypatch):
    """torch.export / ONNX export see symbolic shapes: no timing, no per-shape key."""
    if recording == 'compiling':
        monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    else:
        owner, name = _onnx_export_flags()[recording]
        monkeypatch.setattr(owner, name, True)
        assert torch.onnx.is_in_onnx_export()  # the flag torch itself reads
    assert projection.recording_graph()
    monkeypatch.setattr(projection, 'fastest', lambda key, candidates: pytest.fail('timed'))
    x, weight, bias = _inputs(torch.float32)
    with torch.no_grad():
        out = project_1x1(x, weight, bias)
        grads = project_1x1_backward(x, weight, torch.randn(2, 9, 35), True)
    torch.testing.assert_close(
        out, torch.einsum('oc,bchw->bohw', weight, x) + bias.view(1, -1, 1, 1))
    assert grads[0].shape == x.shape


@pytest.fixture
def deterministic():
    """``torch.use_deterministic_algorithms(True)`` for one test (mmengine's
    ``randomness.deterministic=True``)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def test_deterministic_runs_take_the_product_without_timing(deterministic, monkeypatch):
    """The timed choice can differ between processes; deterministic runs (exact resume) must
    give the same bits in every process, so they always take the product."""
    monkeypatch.setattr(projection, 'fastest', lambda key, candidates: pytest.fail('timed'))
    x, weight, bias = _inputs(torch.float32, size=(16, 16))
    grad_out = torch.randn(2, 9, 256)
    with torch.no_grad():
        out = project_1x1(x, weight, bias)
        grad_x, grad_w, grad_b = project_1x1_backward(x, weight, grad_out, True)
    product = torch.baddbmm(bias.view(1, -1, 1), weight.expand(2, -1, -1), x.reshape(2, 6, 256))
    assert torch.equal(out, product.view(2, 9, 16, 16))
    assert torch.equal(grad_w, torch.bmm(grad_out, x.reshape(2, 6, 256).transpose(1, 2)).sum(0))
    assert torch.equal(grad_x, torch.bmm(weight.t().expand(2, -1, -1), grad_out).view(x.shape))


@pytest.fixture
def onednn_operands(forced, monkeypatch):
    """Forces the oneDNN candidates and records, for each oneDNN product, whether each operand
    is dense or the transpose of a dense matrix."""
    forced('onednn')
    operands = []
    matmul = projection._MATMUL

    def recording(a, b):
        operands.append((a.is_contiguous() or a.t().is_contiguous(),
                         b.is_contiguous() or b.t().is_contiguous()))
        return matmul(a, b)

    monkeypatch.setattr(projection, '_MATMUL', recording)
    return operands


def test_onednn_product_gets_dense_operands(onednn_operands):
    """oneDNN runs a reference kernel (hundreds of times slower) on operands with other strides
    than a dense matrix or its transpose: a strided input reaches it as dense planes."""
    operands = onednn_operands
    x, weight, bias = _inputs(torch.float32, size=(6, 5))
    x = torch.cat([x, x], 1)[:, ::2]  # channels two planes apart
    grad_out = torch.randn(2, 9, 60)[:, :, ::2]
    with torch.no_grad():
        out = project_1x1(x, weight, bias)
        grad_x, grad_w, _ = project_1x1_backward(x, weight, grad_out, True)
    assert len(operands) == 6 and all(a and b for a, b in operands)
    torch.testing.assert_close(out, torch.einsum('oc,bchw->bohw', weight, x) +
                               bias.view(1, -1, 1, 1))
    torch.testing.assert_close(grad_w, torch.einsum('bop,bcp->oc', grad_out, x.flatten(2)))
    torch.testing.assert_close(grad_x.flatten(2), torch.einsum('oc,bop->bcp', weight, grad_out))


TOKEN_CHOICES = ['blas', 'onednn']


def _token_inputs(with_bias, shape=(2, 5, 7)):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(*shape, 6, generator=gen)
    weight = torch.randn(9, 6, generator=gen)
    bias = torch.randn(9, generator=gen) if with_bias else None
    return x, weight, bias


@pytest.mark.parametrize('choice', TOKEN_CHOICES)
@pytest.mark.parametrize('with_bias', [True, False])
def test_token_projection_equals_linear(choice, with_bias, forced):
    forced(choice)
    x, weight, bias = _token_inputs(with_bias)
    with torch.no_grad():
        out = project_tokens(x, weight, bias)
    assert out.shape == (2, 5, 7, 9) and out.is_contiguous()
    torch.testing.assert_close(out, torch.nn.functional.linear(x, weight, bias))


@pytest.mark.parametrize('choice', TOKEN_CHOICES)
@pytest.mark.parametrize('with_bias', [True, False])
@pytest.mark.parametrize('wrt', ['all', 'x', 'params'])
def test_token_projection_gradients_equal_autograd_of_linear(choice, with_bias, wrt, forced):
    """Under autograd the timed product's gradients (for whichever of ``x``, the weight and the
    bias need one) equal ``F.linear``'s; the weight may be a computed tensor (``rate1 *
    proj.weight``) and ``x`` a strided view."""
    forced(choice)
    x, weight, bias = _token_inputs(with_bias, shape=(3, 8))
    x = torch.cat([x, x], -1)[..., ::2]  # not contiguous
    scale = torch.tensor(0.7)
    leaves = [t for t in (x, weight, bias, scale) if t is not None]
    if wrt in ('all', 'x'):
        x.requires_grad_()
    if wrt in ('all', 'params'):
        for t in leaves[1:]:
            t.requires_grad_()
    grad_out = torch.randn(3, 8, 9, generator=torch.Generator().manual_seed(3))
    needing = [t for t in leaves if t.requires_grad]
    out = project_tokens(x, scale * weight, bias)
    got = torch.autograd.grad(out, needing, grad_out)
    want = torch.autograd.grad(torch.nn.functional.linear(x, scale * weight, bias), needing,
                               grad_out)
    assert type(out.grad_fn.next_functions[0][0]).__name__ == '_TokenProjectionBackward'
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r)


def test_token_projection_offers_both_products_where_the_choice_applies(monkeypatch):
    """float32 on the CPU: both products are timed, for the forward and the backward; float64,
    deterministic runs and CPU autocast run ``F.linear`` without timing (reproducible bits,
    autocast's casts)."""
    if projection._MATMUL is None:
        pytest.skip('this torch has no oneDNN matrix product')
    offered = []

    def record(key, candidates):
        offered.append((key[0], sorted(candidates)))
        return candidates['blas']()

    monkeypatch.setattr(projection, 'fastest', record)
    x, weight, bias = _token_inputs(True)
    weight.requires_grad_()
    project_tokens(x, weight, bias).sum().backward()
    assert offered == [('project_tokens', ['blas', 'onednn']),
                       ('project_tokens_backward', ['blas', 'onednn'])]
    offered.clear()
    project_tokens(x.double(), weight.double(), bias.double())
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert project_tokens(x, weight, bias).dtype == torch.bfloat16
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        out = project_tokens(x, weight, bias)
    finally:
        torch.use_deterministic_algorithms(before)
    assert offered == []
    assert torch.equal(out, torch.nn.functional.linear(x, weight, bias))


def test_token_projection_gives_onednn_dense_operands(onednn_operands):
    operands = onednn_operands
    x, weight, bias = _token_inputs(True, shape=(4, 6))
    x = torch.cat([x, x], -1)[..., ::2].requires_grad_()
    weight = torch.cat([weight, weight], -1)[:, ::2].requires_grad_()
    project_tokens(x, weight, bias).backward(torch.randn(4, 6, 18)[..., ::2])
    assert len(operands) == 3 and all(a and b for a, b in operands)


def test_choice_is_timed_once_per_size_class():
    """Sizes whose numbers of positions round up to the same power of two share one timed
    choice (multi-scale training meets a new size on most batches); another class is timed
    afresh."""
    assert [projection.size_class(n) for n in (0, 1, 2, 3, 64, 65)] == [1, 1, 2, 4, 64, 128]
    weight, bias = torch.randn(11, 5), torch.randn(11)

    def keys():
        return {k for k in projection.fastest_choices() if k[0] == 'project_1x1' and k[2] == 5
                and k[4] == 11}

    before = keys()
    with torch.no_grad():
        for h, w in ((5, 7), (6, 7), (8, 8), (9, 8)):  # 35, 42, 64 positions: one class; 72
            out = project_1x1(torch.randn(1, 5, h, w), weight, bias)
            assert out.shape == (1, 11, h, w)
        new = keys() - before
    assert sorted(k[3] for k in new) == [64, 128]
    x = torch.randn(40, 5)
    tokens = {k for k in projection.fastest_choices() if k[0] == 'project_tokens'}
    with torch.no_grad():
        project_tokens(x, weight, bias)
        project_tokens(x[:33], weight, bias)
    if projection._MATMUL is not None:
        assert len({k for k in projection.fastest_choices() if k[0] == 'project_tokens'}
                   - tokens) == 1


@pytest.mark.parametrize('choice', TOKEN_CHOICES)
def test_token_projection_refuses_a_bias_of_another_dtype_whatever_the_choice(choice, forced):
    forced(choice)
    x, weight, bias = _token_inputs(True)
    with torch.no_grad(), pytest.raises(RuntimeError):
        project_tokens(x, weight, bias.double())

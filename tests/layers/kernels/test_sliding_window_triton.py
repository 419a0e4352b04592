"""The Triton sliding-window attention against the PyTorch reference, on CPU via the interpreter.

``triton.jit`` picks interpreter or compiler when a function is decorated, triton's own
``tl.zeros``/``tl.sum`` included, so ``TRITON_INTERPRET=1`` only takes effect in a process that sets
it before importing triton. The checks therefore run once, in a child process started with it
(this file run as a script), and every test reports its case from there.
"""
import importlib.util
import json
import os
import subprocess
import sys
import traceback

import pytest
import torch

pytest.importorskip('triton')

KERNELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                       os.pardir, 'acmix_mm', 'layers', 'kernels')
RESULT_MARKER = 'SLIDING_WINDOW_TRITON_RESULTS '

# name: ((B, N, d, H, W), kernel, stride, dilation, with pe)
CASES = {
    'k3_s1': ((1, 2, 4, 5, 6), 3, 1, 1, False),
    'k7_s2_pe': ((2, 1, 8, 9, 7), 7, 2, 1, True),
    'k7_pad_over_size': ((1, 1, 3, 2, 2), 7, 1, 1, True),
    'k3_dilation2_d5': ((1, 2, 5, 7, 8), 3, 1, 2, True),
    'k5_s2_height1_d6': ((1, 1, 6, 1, 5), 5, 2, 1, False),
}


def _load(name, filename):
    spec = importlib.util.spec_from_file_location(name, os.path.join(KERNELS, filename))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reference(python_mod, q, k, v, pe, scale, kernel, stride, dilation):
    """Output, a random output gradient and the autograd gradients of the reference."""
    inputs = [x.detach().requires_grad_() for x in (q, k, v)]
    pe_in = None if pe is None else pe.detach().requires_grad_()
    out = python_mod.sliding_window_attention_python(
        *(x.flatten(0, 1) for x in inputs), pe_in, scale, kernel, stride, dilation)
    out = out.unflatten(0, q.shape[:2])
    grad_out = torch.randn_like(out)
    leaves = inputs + ([pe_in] if pe_in is not None else [])
    grads = list(torch.autograd.grad(out, leaves, grad_out))
    if pe is None:
        grads.append(None)
    return out.detach(), grad_out, grads


def _check_case(triton_mod, python_mod, shape, kernel, stride, dilation, with_pe):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=gen) for _ in range(3))
    pe = torch.randn(shape[2:], generator=gen) if with_pe else None
    ref_out, grad_out, ref_grads = _reference(python_mod, q, k, v, pe, 0.7, kernel, stride,
                                              dilation)
    out = triton_mod.sliding_window_attention_triton_forward(q, k, v, pe, 0.7, kernel, stride,
                                                             dilation)
    grads = triton_mod.sliding_window_attention_triton_backward(grad_out, q, k, v, pe, 0.7,
                                                                kernel, stride, dilation)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)
    # a custom operator's outputs may not share memory (torch checks it on CUDA)
    storages = [g.untyped_storage().data_ptr() for g in grads if g is not None]
    assert len(set(storages)) == len(storages), 'gradients share storage'
    for name, got, want in zip(('q', 'k', 'v', 'pe'), grads, ref_grads):
        if want is None:
            assert got is None, f'grad_{name} should be None'
        else:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=f'grad_{name}')


def _check_strided_and_half(triton_mod, python_mod):
    gen = torch.Generator().manual_seed(1)
    b, n, d, h, w = 1, 2, 4, 5, 6
    q, k, v = (torch.randn(b, n, d, w, h, generator=gen).transpose(-1, -2) for _ in range(3))
    pe = torch.randn(d, h, w, generator=gen)
    ref_out, grad_out, ref_grads = _reference(python_mod, q, k, v, pe, 0.5, 3, 1, 1)

    out = triton_mod.sliding_window_attention_triton_forward(q, k, v, pe, 0.5, 3, 1, 1)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)

    half = [x.half() for x in (q, k, v, pe)]
    out = triton_mod.sliding_window_attention_triton_forward(*half, 0.5, 3, 1, 1)
    grads = triton_mod.sliding_window_attention_triton_backward(grad_out.half(), *half, 0.5, 3,
                                                                1, 1)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), ref_out, rtol=1e-2, atol=1e-2)
    for got, want in zip(grads, ref_grads):
        assert got.dtype == torch.float16
        torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)


def _run_all():
    """Runs every check (in the interpreter child) and prints ``{name: 'ok' | traceback}``."""
    assert os.environ.get('TRITON_INTERPRET') == '1'
    triton_mod = _load('_sliding_window_triton', 'sliding_window_triton.py')
    python_mod = _load('_sliding_window_python', 'sliding_window_python.py')
    checks = {name: (lambda case=case: _check_case(triton_mod, python_mod, *case))
              for name, case in CASES.items()}
    checks['strided_and_half'] = lambda: _check_strided_and_half(triton_mod, python_mod)
    checks['triton_available'] = lambda: None if triton_mod.TRITON_AVAILABLE else 1 / 0
    results = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = 'ok'
        except Exception:  # noqa: BLE001  (reported by the parent)
            results[name] = traceback.format_exc()
    print(RESULT_MARKER + json.dumps(results))


@pytest.fixture(scope='module')
def interpreted_results():
    env = dict(os.environ, TRITON_INTERPRET='1')
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env,
                          capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    pytest.fail(f'interpreter run failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}')


@pytest.mark.parametrize('name', [*CASES, 'strided_and_half', 'triton_available'])
def test_triton_matches_reference(interpreted_results, name):
    result = interpreted_results[name]
    if result != 'ok':
        pytest.fail(result, pytrace=False)


if __name__ == '__main__':
    _run_all()

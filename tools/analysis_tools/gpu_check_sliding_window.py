"""Checks and times the Triton sliding-window attention against the PyTorch reference on CUDA.

Argument-free; run from anywhere on a machine with a CUDA GPU, torch and triton (OpenMMLab not
needed: the two kernel files are loaded by path).
"""
import argparse
import importlib.util
import os

import torch

KERNELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                       'acmix_mm', 'layers', 'kernels')


def _load(name, filename):
    spec = importlib.util.spec_from_file_location(name, os.path.join(KERNELS, filename))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


swt = swp = None  # the kernel modules, loaded by main() (Triton may be missing where --help runs)


def python_attention(q, k, v, pe, scale, kernel, stride, dilation):
    out = swp.sliding_window_attention_python(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1),
                                              pe, scale, kernel, stride, dilation)
    return out.unflatten(0, q.shape[:2])


def inputs(shape, dtype=torch.float32, requires_grad=False):
    q, k, v = (torch.randn(shape, device='cuda', dtype=dtype, requires_grad=requires_grad)
               for _ in range(3))
    pe = torch.randn(shape[2:], device='cuda', dtype=dtype, requires_grad=requires_grad)
    return q, k, v, pe, shape[2] ** -0.5


def check(shape, kernel, stride, dilation=1):
    q, k, v, pe, scale = inputs(shape, requires_grad=True)
    ref = python_attention(q, k, v, pe, scale, kernel, stride, dilation)
    grad_out = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (q, k, v, pe), grad_out)
    args = [x.detach() for x in (q, k, v, pe)] + [scale, kernel, stride, dilation]
    out = swt.sliding_window_attention_triton_forward(*args)
    grads = swt.sliding_window_attention_triton_backward(grad_out, *args)
    errs = [(out - ref).abs().max().item()]
    errs += [(a - b).abs().max().item() for a, b in zip(grads, ref_grads)]
    print(f'{str(shape):22} k{kernel} s{stride} d{dilation}  ' +
          '  '.join(f'{n}={e:.2e}' for n, e in zip(('out', 'dq', 'dk', 'dv', 'dpe'), errs)))


def cuda_ms(fn, iters=10, warmup=3):
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def time_shape(shape, kernel=7, stride=1, dtype=torch.float32):
    q, k, v, pe, scale = inputs(shape, dtype)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, pe)]
    cfg = (scale, kernel, stride, 1)
    out = swt.sliding_window_attention_triton_forward(q, k, v, pe, *cfg)
    grad_out = torch.randn_like(out)

    def py_fwd():
        with torch.no_grad():
            python_attention(q, k, v, pe, *cfg)

    def py_fwd_bwd():
        torch.autograd.grad(python_attention(*leaves, *cfg), leaves, grad_out)

    def tr_fwd():
        swt.sliding_window_attention_triton_forward(q, k, v, pe, *cfg)

    def tr_fwd_bwd():
        swt.sliding_window_attention_triton_forward(q, k, v, pe, *cfg)
        swt.sliding_window_attention_triton_backward(grad_out, q, k, v, pe, *cfg)

    name = f'{shape} k{kernel} s{stride} {str(dtype)[6:]}'
    py = (cuda_ms(py_fwd), cuda_ms(py_fwd_bwd))
    tr = (cuda_ms(tr_fwd), cuda_ms(tr_fwd_bwd))
    print(f'{name:38} {py[0]:9.2f} {py[1]:11.2f} {tr[0]:9.2f} {tr[1]:11.2f} '
          f'{py[0] / tr[0]:6.1f}x {py[1] / tr[1]:6.1f}x')


def check_acmix_layer():
    """An ACmix layer on CUDA with the Triton kernel against the same layer with the fallback."""
    import sys
    sys.path.insert(0, os.path.join(KERNELS, os.pardir, os.pardir, os.pardir))
    from acmix_mm.layers import ACmix
    for stride in (1, 2):
        layer = ACmix(64, 64, stride=stride).cuda()
        x = torch.randn(2, 64, 28, 30, device='cuda', requires_grad=True)
        results = []
        for backend in ('triton', 'python'):
            os.environ['ACMIX_MM_KERNEL'] = backend
            out = layer(x)
            grads = torch.autograd.grad(out.square().sum(), [x] + list(layer.parameters()))
            results.append((out, grads))
        os.environ.pop('ACMIX_MM_KERNEL')
        (out_t, g_t), (out_p, g_p) = results
        err = max((a - b).abs().max().item() for a, b in zip(g_t, g_p))
        print(f'ACmix(64, 64, stride={stride}) on (2, 64, 28, 30): out max abs diff '
              f'{(out_t - out_p).abs().max().item():.2e}, grads (x and all parameters) {err:.2e}')


def main(argv=None):
    argparse.ArgumentParser(description=__doc__.split('\n\n')[0]).parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit('gpu_check_sliding_window.py needs a CUDA GPU: '
                         'torch.cuda.is_available() is False here')
    global swt, swp
    swt = _load('sliding_window_triton', 'sliding_window_triton.py')
    swp = _load('sliding_window_python', 'sliding_window_python.py')
    torch.manual_seed(0)
    print(torch.cuda.get_device_name(), 'torch', torch.__version__)
    print('max abs error vs python reference (float32)')
    check((2, 4, 16, 56, 56), 7, 1)
    check((2, 8, 64, 14, 14), 7, 2)
    check((1, 2, 32, 9, 11), 5, 1, dilation=2)
    check_acmix_layer()
    print(f'\n{"ms":38} {"py fwd":>9} {"py fwd+bwd":>11} {"tr fwd":>9} {"tr fwd+bwd":>11} '
          f'{"fwd":>7} {"f+b":>7}')
    time_shape((1, 4, 16, 128, 128))
    time_shape((2, 4, 16, 200, 336))
    time_shape((2, 4, 16, 200, 336), dtype=torch.float16)


if __name__ == '__main__':
    main()

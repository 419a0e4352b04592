"""Checks and times the GPU kernels of acmix_mm on a CUDA device; writes JSON and markdown.

Checks (each against the PyTorch composition on the same device): the Triton sliding-window
attention (forward and every gradient; float32, float16, bfloat16; strides, dilations, maps of one
and of many tiles), the ACmix layer's Triton path (output and every parameter's gradient), and the
Swin window attention's fused path (``scaled_dot_product_attention`` + the folded conv path).

Times (CUDA events, medians, each case alternating with its baseline in this process):
the attention at ``(2, 4, 16, 200, 336)``, kernel 7 (forward; forward + backward) against the time
to read q, k, v and write the output at the copy bandwidth measured here (float32, the gather
kernels; float16 on the halo and on the gather kernels, in a note); one ACmix layer against
its three 1x1 projections (one convolution), batch 8, at 64 channels 56x56 and 512 channels 7x7,
inference and training step, float32 and float16 autocast.

    python tools/analysis_tools/gpu_check_kernels.py --out OUT_DIR [--quick]
    python tools/analysis_tools/gpu_check_kernels.py --warm {float32,float16,bfloat16}
"""
import argparse
import json
import os
import platform
import sys
import time
import traceback

TOLERANCES = dict(float32=1e-4, float16=2e-2, bfloat16=1e-1)  # of the attention checks
DTYPES = tuple(TOLERANCES)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='work_dirs/gpu_check', help='output folder')
    parser.add_argument('--quick', action='store_true', help='fewer timing repeats')
    parser.add_argument('--warm', choices=DTYPES,
                        help='only compile: run the attention checks of this dtype (float32: '
                        'and the layer checks) and write nothing (the suite runs one process per '
                        'dtype in parallel, so that the measuring steps find the kernels compiled; '
                        'exits 1 if a check fails)')
    parser.add_argument('--dry-run', action='store_true',
                        help='on a machine without CUDA: say so and exit 0 (the suite\'s dry '
                        'run; the interpreter tests cover the kernels on the CPU)')
    return parser.parse_args(argv)


def median_ms(fn, iters: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean time of ``iters`` back-to-back calls, in ms."""
    import torch
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / iters)
    times.sort()
    return times[len(times) // 2]


def paired_ms(case, baseline, iters: int, rounds: int):
    """Fastest-of-rounds times of ``case`` and ``baseline``, their rounds alternating."""
    best_case, best_base = float('inf'), float('inf')
    for fn in (case, baseline, case, baseline):  # warm-up (compilation, autotuning, caches)
        fn()
    for _ in range(rounds):
        best_case = min(best_case, median_ms(case, iters, 3))
        best_base = min(best_base, median_ms(baseline, iters, 3))
    return best_case, best_base


def check_attention(torch, report, dtypes=DTYPES):
    from acmix_mm.layers.kernels import sliding_window_triton as tri
    from acmix_mm.layers.kernels.sliding_window_python import (
        sliding_window_attention_python, sliding_window_attention_python_backward)
    cases = [((2, 4, 16, 56, 56), 7, 1, 1), ((2, 2, 32, 33, 47), 7, 2, 1),
             ((1, 2, 16, 30, 31), 3, 3, 2), ((1, 1, 64, 14, 14), 7, 1, 1),
             ((2, 1, 128, 7, 7), 7, 1, 1), ((1, 2, 8, 3, 5), 7, 1, 1)]
    gen = torch.Generator(device='cuda').manual_seed(0)
    for shape, kernel, stride, dilation in cases:
        q, k, v = (torch.randn(shape, device='cuda', generator=gen) for _ in range(3))
        pe = torch.randn(shape[2:], device='cuda', generator=gen)
        ref = sliding_window_attention_python(*(t.double() for t in (q, k, v, pe)), 0.6, kernel,
                                              stride, dilation)
        grad = torch.randn(ref.shape, device='cuda', generator=gen, dtype=torch.float64)
        ref_grads = sliding_window_attention_python_backward(
            grad, *(t.double() for t in (q, k, v, pe)), 0.6, kernel, stride, dilation)
        for name in dtypes:
            dtype, tol = getattr(torch, name), TOLERANCES[name]
            low = [t.to(dtype) for t in (q, k, v, pe)]
            out = tri.sliding_window_attention_triton_forward(*low, 0.6, kernel, stride, dilation)
            grads = tri.sliding_window_attention_triton_backward(grad.to(dtype), *low, 0.6, kernel,
                                                                 stride, dilation)
            errs = [relative_error(out, ref)] + [relative_error(g, r)
                                                 for g, r in zip(grads, ref_grads)]
            report.check(f'attention {shape} k{kernel} s{stride} dil{dilation} {dtype}',
                         max(errs), tol)


def relative_error(got, want) -> float:
    """Largest difference over the largest reference value (at least 1e-3: a gradient that is
    zero in exact arithmetic, e.g. of ``conv_p``'s bias under the softmax, is compared
    absolutely)."""
    want = want.double()
    return float((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-3))


def check_layer(torch, report):
    from acmix_mm.layers import ACmix
    for cin, cout, stride, size in ((64, 64, 1, 56), (128, 128, 2, 28), (512, 512, 1, 7)):
        torch.manual_seed(0)
        layer = ACmix(cin, cout, stride=stride).cuda()
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.05 * torch.randn_like(p))
        x = torch.randn(4, cin, size, size, device='cuda')
        results = {}
        for backend in ('triton', 'python'):
            os.environ['ACMIX_MM_KERNEL'] = backend
            layer.zero_grad()
            xi = x.clone().requires_grad_()
            out = layer(xi)
            out.backward(torch.cos(torch.arange(out.numel(), device='cuda',
                                                dtype=out.dtype)).view_as(out))
            results[backend] = [out.detach(), xi.grad] + [p.grad.clone() for p in
                                                          layer.parameters()]
        os.environ['ACMIX_MM_KERNEL'] = 'auto'
        errs = [relative_error(a, b) for a, b in zip(results['triton'], results['python'])]
        report.check(f'ACmix layer {cin}->{cout} s{stride} {size}x{size}: output, input and '
                     'parameter gradients, Triton path vs composition (float32, TF32 allowed '
                     'as torch sets it)', max(errs), 2e-2)


def check_swin(torch, report):
    try:
        from acmix_mm.models.layers import ACmixShiftWindowMSA
    except Exception as exc:  # noqa: BLE001
        report.note(f'Swin check skipped: ACmixShiftWindowMSA does not import here ({exc!r})')
        return
    torch.manual_seed(0)
    for shift in (0, 3):
        attn = ACmixShiftWindowMSA(96, 3, window_size=7, shift_size=shift).cuda()
        x = torch.randn(2, 28 * 28, 96, device='cuda')
        outs = []
        for fused in (True, False):
            attn.zero_grad()
            xi = x.clone().requires_grad_()
            frame = attn_frame(torch, attn, xi, (28, 28))
            out = attn.attend_fused(*frame) if fused else attn.attend_composed(*frame)
            out.backward(torch.cos(torch.arange(out.numel(), device='cuda',
                                                dtype=out.dtype)).view_as(out))
            outs.append([out.detach(), xi.grad] + [p.grad.clone() for p in attn.parameters()
                                                   if p.grad is not None])
        errs = [relative_error(a, b) for a, b in zip(*outs)]
        report.check(f'Swin window attention shift={shift}: SDPA + folded conv path vs '
                     'composition (output and gradients)', max(errs), 2e-2)


def attn_frame(torch, attn, x, hw):
    from acmix_mm.models.layers.acmix_window_msa import build_shift_mask
    b, _, c = x.shape
    ws = attn.window_size
    x = x.view(b, hw[0], hw[1], c)
    if attn.shift_size:
        x = torch.roll(x, shifts=(-attn.shift_size, -attn.shift_size), dims=(1, 2))
    mask = build_shift_mask(hw, ws, attn.shift_size, x.device)  # the layer's own
    return x, mask


def time_attention(torch, report, quick):
    from acmix_mm.layers.kernels import sliding_window_triton as tri
    shape = (2, 4, 16, 200, 336)
    q, k, v = (torch.randn(shape, device='cuda') for _ in range(3))
    pe = torch.randn(shape[2:], device='cuda')
    grad = torch.randn(shape, device='cuda')
    src = torch.empty(4 * q.numel(), device='cuda')
    dst = torch.empty_like(src)
    fwd = lambda: tri.sliding_window_attention_triton_forward(q, k, v, pe, 0.25, 7, 1, 1)  # noqa
    bwd = lambda: (fwd(), tri.sliding_window_attention_triton_backward(  # noqa
        grad, q, k, v, pe, 0.25, 7, 1, 1))
    copy = lambda: dst.copy_(src)  # noqa: E731  (moves q, k, v in and the output out)
    iters = 5 if quick else 20
    t_fwd, t_copy = paired_ms(fwd, copy, iters, 3)  # float32: the gather kernels
    t_both, _ = paired_ms(bwd, copy, iters, 3)
    # float16: the halo kernels, then the gather kernels (wider heads, the fallback)
    half = [t.half() for t in (q, k, v, pe, grad)]
    fwd16 = lambda: tri.sliding_window_attention_triton_forward(*half[:4], 0.25, 7, 1, 1)  # noqa
    bwd16 = lambda: (fwd16(), tri.sliding_window_attention_triton_backward(  # noqa
        half[4], *half[:4], 0.25, 7, 1, 1))
    t_halo, _ = paired_ms(fwd16, copy, iters, 2)
    t_halo_both, _ = paired_ms(bwd16, copy, iters, 2)
    failed = tri._HALO_STATE['failed']
    tri._HALO_STATE['failed'] = 'timing the gather kernels'
    try:
        t_gather, _ = paired_ms(fwd16, copy, iters, 2)
        t_gather_both, _ = paired_ms(bwd16, copy, iters, 2)
    finally:
        tri._HALO_STATE['failed'] = failed
    halo = 'halo kernels' + (' (failed to compile: gather kernels)' if failed else '')
    report.note(f'float16 at the same shape: {halo} forward {t_halo:.3f} ms, forward+backward '
                f'{t_halo_both:.3f} ms; gather kernels '
                f'forward {t_gather:.3f} ms, forward+backward {t_gather_both:.3f} ms')
    moved = 2 * src.numel() * 4
    report.time(dict(name='sliding-window attention (2,4,16,200,336) k7 float32', mode='forward',
                     seconds=t_fwd / 1e3, baseline_seconds=t_copy / 1e3,
                     baseline='copy of q+k+v+out', bandwidth_gbs=moved / t_copy / 1e6))
    report.time(dict(name='sliding-window attention (2,4,16,200,336) k7 float32',
                     mode='forward+backward', seconds=t_both / 1e3,
                     baseline_seconds=t_copy / 1e3, baseline='copy of q+k+v+out'))


def time_layers(torch, report, quick):
    from torch import nn

    from acmix_mm.layers import ACmix
    iters = 5 if quick else 20
    for channels, size in ((64, 56), (512, 7)):
        layer = ACmix(channels, channels).cuda()
        proj = nn.Conv2d(channels, 3 * channels, 1).cuda()
        x = torch.randn(8, channels, size, size, device='cuda', requires_grad=True)
        for amp in (False, True):
            dtype = torch.float16 if amp else torch.float32

            def infer(module):
                with torch.no_grad(), torch.autocast('cuda', dtype=dtype, enabled=amp):
                    return module(x)

            def train(module):
                with torch.autocast('cuda', dtype=dtype, enabled=amp):
                    out = module(x)
                out.float().sum().backward()

            for mode, step in (('inference', infer), ('training', train)):
                t_case, t_base = paired_ms(lambda: step(layer), lambda: step(proj), iters, 3)
                report.time(dict(name=f'ACmix layer {channels}ch {size}x{size}', mode=mode,
                                 batch=8, dtype='float16 autocast' if amp else 'float32',
                                 seconds=t_case / 1e3, baseline_seconds=t_base / 1e3,
                                 baseline='its three 1x1 projections (one conv)'))


def profile_layer(torch, report):
    """Kernel times of one ACmix layer (64 ch, 56x56, batch 8) training step, from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    from acmix_mm.layers import ACmix
    layer = ACmix(64, 64).cuda()
    x = torch.randn(8, 64, 56, 56, device='cuda', requires_grad=True)
    for _ in range(3):
        layer(x).sum().backward()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            layer(x).sum().backward()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=15,
                                      max_name_column_width=60)
    report.note('profile of 5 training steps of one ACmix layer (64 ch, 56x56, batch 8):\n'
                '```\n' + table + '\n```')


class Report:
    """Collects checks, timings and notes; prints each as it comes."""

    def __init__(self):
        self.checks, self.timings, self.notes = [], [], []

    def check(self, name, error, tol):
        ok = error <= tol
        self.checks.append(dict(name=name, max_rel_error=error, tolerance=tol, ok=ok))
        print(f'[check] {"ok  " if ok else "FAIL"} {name}: {error:.2e} (tol {tol:.0e})',
              flush=True)

    def time(self, record):
        import torch
        record.setdefault('device', torch.cuda.get_device_name())
        record.setdefault('batch', record.get('batch', 2))
        record.setdefault('peak_mb', None)
        record['ratio'] = record['seconds'] / record['baseline_seconds']
        self.timings.append(record)
        print(f'[time] {record["name"]} {record["mode"]} {record.get("dtype", "")}: '
              f'{record["seconds"] * 1e3:.3f} ms, baseline {record["baseline_seconds"] * 1e3:.3f}'
              f' ms ({record["ratio"]:.2f}x)', flush=True)

    def note(self, text):
        self.notes.append(text)
        print(f'[note] {text}', flush=True)


def main(argv=None):
    args = parse_args(argv)
    import torch
    if args.dry_run and not torch.cuda.is_available():
        print('[dry run] no CUDA device: the kernel checks need one (tests/layers/kernels/'
              'test_sliding_window_triton.py runs the kernels in Triton\'s interpreter)')
        return 0
    if not torch.cuda.is_available():
        sys.exit('gpu_check_kernels.py needs a CUDA device; none is visible to torch '
                 f'{torch.__version__}')
    import triton
    report = Report()
    env = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__,
               triton=triton.__version__, python=platform.python_version(),
               tf32_conv=torch.backends.cudnn.allow_tf32,
               tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    print('[env]', env, flush=True)
    start = time.time()
    if args.warm:
        check_attention(torch, report, (args.warm,))
        if args.warm == 'float32':
            check_layer(torch, report)
        failed = [c['name'] for c in report.checks if not c['ok']]
        print(f'[warm] {args.warm}: {len(report.checks)} checks ({len(failed)} failed), '
              f'{time.time() - start:.0f} s', flush=True)
        return 1 if failed else 0
    os.makedirs(args.out, exist_ok=True)
    for step in (check_attention, check_layer, check_swin,
                 lambda t, r: time_attention(t, r, args.quick),
                 lambda t, r: time_layers(t, r, args.quick), profile_layer):
        try:
            step(torch, report)
        except Exception:  # noqa: BLE001  (one failing step must not lose the others)
            report.note(f'step failed:\n{traceback.format_exc()}')
    from acmix_mm.layers.kernels import sliding_window_triton as tri
    env['halo_kernels'] = 'failed: ' + tri._HALO_STATE['failed'] if tri._HALO_STATE['failed'] \
        else 'used'
    env['seconds'] = time.time() - start
    with open(os.path.join(args.out, 'gpu_kernels.json'), 'w') as f:
        json.dump(dict(env=env, checks=report.checks, timings=report.timings,
                       notes=report.notes), f, indent=1)
    lines = [f'# GPU kernels: {env["gpu"]}, torch {env["torch"]}, Triton {env["triton"]}', '',
             '| check | max rel. error | tolerance | ok |', '|---|---|---|---|']
    lines += [f'| {c["name"]} | {c["max_rel_error"]:.1e} | {c["tolerance"]:.0e} | '
              f'{"yes" if c["ok"] else "**no**"} |' for c in report.checks]
    lines += ['', '| case | mode | dtype | ms | baseline | baseline ms | ratio |',
              '|---|---|---|---|---|---|---|']
    lines += [f'| {t["name"]} | {t["mode"]} | {t.get("dtype", "float32")} | '
              f'{t["seconds"] * 1e3:.3f} | {t["baseline"]} | {t["baseline_seconds"] * 1e3:.3f} | '
              f'{t["ratio"]:.2f}x |' for t in report.timings]
    lines += [''] + [f'- {n}' for n in report.notes]
    with open(os.path.join(args.out, 'gpu_kernels.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    failed = [c['name'] for c in report.checks if not c['ok']]
    print(f'[done] {len(report.checks) - len(failed)} checks ok, {len(failed)} failed, '
          f'{len(report.timings)} timings, {env["seconds"]:.0f} s', flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

"""Benchmark the models of any configs against the first: params, FLOPs (mmengine's standard
counter), inference latency and throughput, training step time and peak memory.

Configs are this project's, the frameworks' own (``mmdet::mask_rcnn/...py``) or a user's; their
``default_scope`` (mmdet, mmseg or mmpretrain) picks the registry and the synthetic batch.
No weights are loaded (``init_cfg`` / ``pretrained`` are ignored). ``--parts backbone`` times the
backbone on a ``(batch, 3, H, W)`` tensor; ``--parts model`` the whole model on a synthetic batch
of the task (prediction for inference, ``mode='loss'`` + backward for training).

All cases are timed in one process, their steps alternating, so that a slow spell of the machine
hits them alike; peak memory is measured per case in a process of its own (see
:mod:`acmix_mm.utils.benchmarking`). Writes ``OUT.md``, ``OUT.json`` and ``OUT.png`` (the ratios).

    python tools/analysis_tools/benchmark_configs.py CONFIG_A CONFIG_B [...] [--size H W]
        [--batch N] [--device cpu|cuda] [--parts backbone|model] [--repeat 5] [--out PREFIX]
"""
import argparse
import json
import os
import os.path as osp
import platform
import sys
import time
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
from acmix_mm.utils.argument_types import positive_int  # noqa: E402
from acmix_mm.utils.benchmarking import (peak_rss_bytes, reset_peak_rss,  # noqa: E402
                                         run_worker, write_report)

SCOPES = ('mmdet', 'mmseg', 'mmpretrain')


def case_names(configs: List[str]) -> List[str]:
    """Short unique names: the config file's name without ``.py`` (``#i`` for repeats)."""
    names = []
    for i, config in enumerate(configs):
        name = osp.splitext(osp.basename(config.split('::')[-1]))[0]
        names.append(f'{name}#{i}' if name in names else name)
    return names


def load_model_cfg(config: str):
    """The config's ``model`` without weights to load, and its scope."""
    from mmengine.config import Config
    from mmengine.hub import get_config
    if '::' not in config and not osp.isfile(config):
        raise ValueError(f'CONFIG {config!r} is neither a file nor a `scope::path` of an '
                         'installed framework (e.g. mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py)')
    cfg = get_config(config) if '::' in config else Config.fromfile(config)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(f'CONFIG {config!r} has default_scope={scope!r}; benchmark_configs.py '
                         f'builds models of {SCOPES}')
    model = cfg.model
    model.pop('pretrained', None)
    if 'backbone' in model:
        model.backbone.pop('init_cfg', None)
        model.backbone.pop('pretrained', None)
    return model, scope


def _num_classes(cfg) -> int:
    """The smallest ``num_classes`` in a model config (labels of the synthetic batch stay
    below it)."""
    found = []

    def visit(node):
        if isinstance(node, dict):
            if isinstance(node.get('num_classes'), int):
                found.append(node['num_classes'])
            for value in node.values():
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)
    visit(cfg)
    return min(found) if found else 1000


def synthetic_batch(scope: str, cfg, batch: int, size: Tuple[int, int]) -> dict:
    """A batch of ``batch`` random ``size`` images with targets, as the scope's packer gives."""
    from acmix_mm.testing import classification_batch, detection_batch, segmentation_batch
    classes = _num_classes(cfg)
    if scope == 'mmdet':
        return detection_batch(batch, size, num_classes=classes)
    if scope == 'mmseg':
        return segmentation_batch(batch, size, num_classes=classes)
    return classification_batch(batch, size, num_classes=classes)


class TensorMode(nn.Module):
    """``model(inputs, data_samples, mode='tensor')`` as a one-input module, for mmengine's FLOP
    counter (what the frameworks' ``get_flops`` tools count)."""

    def __init__(self, model: nn.Module, data_samples: list) -> None:
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor):
        return self.model(inputs, self.data_samples, mode='tensor')


def prepare(config: str, part: str, size: Tuple[int, int], batch: int, device: str
            ) -> Tuple[dict, Callable[[], object], Callable[[], object]]:
    """Builds one case: its result dict (params, FLOPs), and its inference and training steps."""
    from mmengine.analysis import get_model_complexity_info
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope

    import acmix_mm  # noqa: F401  (registers ACmix's modules and FLOP handles)
    model_cfg, scope = load_model_cfg(config)
    init_default_scope(scope)
    model = revert_sync_batchnorm(MODELS.build(model_cfg)).to(device)
    result = dict(config=config, part=part, scope=scope, size=list(size), batch=batch,
                  device=device)
    if part == 'backbone':
        net = model.backbone
        x = torch.randn(batch, 3, *size, device=device)
        flop_model, flop_inputs = net, (x[:1], )

        def infer():
            return net(x)

        def loss():
            out = net(x)
            return sum(o.float().mean() for o in (out if isinstance(out, (list, tuple))
                                                  else [out]))
    else:
        net = model
        data = synthetic_batch(scope, model_cfg, batch, size)
        train_data = model.data_preprocessor(data, True)
        test_data = model.data_preprocessor(data, False)
        one = model.data_preprocessor(synthetic_batch(scope, model_cfg, 1, size), False)
        flop_model, flop_inputs = TensorMode(model, one['data_samples']), (one['inputs'], )

        def infer():
            return model(**test_data, mode='predict')

        def loss():
            return model.parse_losses(model(**train_data, mode='loss'))[0]
    result['params_m'] = sum(p.numel() for p in net.parameters()) / 1e6
    net.eval()
    try:
        with torch.no_grad():
            result['gflops'] = get_model_complexity_info(
                flop_model, inputs=flop_inputs, show_table=False, show_arch=False)['flops'] / 1e9
    except Exception as exc:  # a model that jit tracing cannot follow: time it all the same
        result['gflops'] = None
        print(f'warning: FLOPs of {config} not counted: {type(exc).__name__}: {exc}',
              file=sys.stderr)
    params = [p for p in net.parameters() if p.requires_grad]

    def infer_step():
        net.eval()
        with torch.no_grad():
            infer()

    def train_step():
        net.train()
        loss().backward()
        for p in params:
            p.grad = None
    return result, infer_step, train_step


def measure_times(configs: List[str], part: str, size, batch: int, device: str,
                  repeat: int) -> List[dict]:
    """Every case in this process; each mode's steps alternate over the cases ``repeat`` times
    (after a warm-up step) and each case keeps its fastest step."""
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    cases = [prepare(c, part, size, batch, device) for c in configs]
    for mode, index in (('infer', 1), ('train', 2)):
        for case in cases:
            case[index]()  # warm-up
        sync()
        times = [[] for _ in cases]
        for _ in range(repeat):
            for case, case_times in zip(cases, times):
                start = time.perf_counter()
                case[index]()
                sync()
                case_times.append(time.perf_counter() - start)
        for (result, _, _), case_times in zip(cases, times):
            result[f'{mode}_seconds'] = min(case_times)
    for result, _, _ in cases:
        result['throughput'] = batch / result['infer_seconds']
    return [case[0] for case in cases]


def measure_memory(config: str, part: str, size, batch: int, device: str) -> dict:
    """Peak memory of one training step of one case (this process holds that case alone)."""
    _, _, train_step = prepare(config, part, size, batch, device)
    train_step()  # warm-up: lazily allocated state is not the step's
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = reset_peak_rss()
    train_step()
    if device == 'cuda':
        torch.cuda.synchronize()
        return dict(peak_mb=torch.cuda.max_memory_allocated() / 2**20)
    return dict(peak_mb=max(0, peak_rss_bytes() - base) / 2**20)


def _ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    return value / base if value is not None and base else None


RATIO_KEYS = (('params_m', 'params'), ('gflops', 'FLOPs'), ('infer_seconds', 'inference'),
              ('train_seconds', 'training step'), ('peak_mb', 'peak memory'))


def add_ratios(results: List[dict]) -> None:
    """Each result's ``ratios`` against the first result (the baseline)."""
    base = results[0]
    for result in results:
        result['ratios'] = {key: _ratio(result.get(key), base.get(key)) for key, _ in RATIO_KEYS}


def table(names: List[str], results: List[dict]) -> str:
    def num(value, fmt):
        return '-' if value is None else format(value, fmt)

    def ratio(value):
        return '' if value is None else f'{value:.2f}x'
    rows = ['| case | params (M) | GFLOPs | infer latency (ms) | throughput (img/s) | '
            'train step (ms) | train peak mem (MB) | params ratio | FLOPs ratio | infer ratio | '
            'train ratio | mem ratio |', '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for name, r in zip(names, results):
        q = r['ratios']
        rows.append(
            f'| {name} | {r["params_m"]:.2f} | {num(r["gflops"], ".2f")} | '
            f'{r["infer_seconds"] * 1e3:.1f} | {r["throughput"]:.2f} | '
            f'{r["train_seconds"] * 1e3:.1f} | {num(r.get("peak_mb"), ".0f")} | '
            + ' | '.join(ratio(q[key]) for key, _ in RATIO_KEYS) + ' |')
    return '\n'.join(rows)


def plot(names: List[str], results: List[dict], path: str) -> None:
    """Grouped bars: every case's ratios against the first case."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(names)), 4))
    width = 0.8 / len(RATIO_KEYS)
    for j, (key, label) in enumerate(RATIO_KEYS):
        ax.bar([i + (j - (len(RATIO_KEYS) - 1) / 2) * width for i in range(len(names))],
               [r['ratios'][key] or 0 for r in results], width, label=label)
    ax.axhline(1, color='k', linewidth=0.8)
    ax.set_xticks(range(len(names)), names, rotation=10, fontsize=8)
    ax.set_ylabel('ratio to the first case (same run)')
    ax.set_title(f'against {names[0]}', fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='+', metavar='CONFIG',
                        help='config files or scope::path of installed frameworks; the first is '
                        'the baseline')
    parser.add_argument('--size', nargs=2, type=positive_int, default=[224, 224],
                        metavar=('H', 'W'))
    parser.add_argument('--batch', type=positive_int, default=1)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--parts', default='backbone', choices=['backbone', 'model'])
    parser.add_argument('--repeat', type=positive_int, default=5,
                        help='timed steps per case and mode (the fastest is reported)')
    parser.add_argument('--threads', type=positive_int, default=os.cpu_count(),
                        help='OpenMP threads of the measuring processes')
    parser.add_argument('--out', default='work_dirs/benchmark_configs',
                        help='path prefix of the .md, .json and .png')
    parser.add_argument('--worker', choices=['time', 'memory'], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == 'memory' and len(args.configs) != 1:
        parser.error('--worker memory measures one config')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    size = tuple(args.size)
    if args.worker == 'time':
        print(json.dumps(measure_times(args.configs, args.parts, size, args.batch, args.device,
                                       args.repeat)))
        return 0
    if args.worker == 'memory':
        print(json.dumps(measure_memory(args.configs[0], args.parts, size, args.batch,
                                        args.device)))
        return 0
    for config in args.configs:  # a bad config fails here, not in a worker
        if '::' not in config and not osp.isfile(config):
            sys.exit(f'error: CONFIG {config!r} is neither a file nor a `scope::path` of an '
                     'installed framework')
    common = ['--parts', args.parts, '--size', *map(str, size), '--batch', str(args.batch),
              '--device', args.device, '--repeat', str(args.repeat)]
    script = osp.abspath(__file__)
    print(f'timing {len(args.configs)} configs in one process ...', flush=True)
    results = run_worker(script, args.configs + common + ['--worker', 'time'], args.threads,
                         measure_memory=False)
    for config, result in zip(args.configs, results):
        print(f'peak memory of {config} ...', flush=True)
        result.update(run_worker(script, [config] + common + ['--worker', 'memory'],
                                 args.threads, measure_memory=True))
    add_ratios(results)
    names = case_names(args.configs)
    md = table(names, results)
    print(md)
    h, w = size
    write_report(
        args.out, 'tools/analysis_tools/benchmark_configs.py',
        argv if argv is not None else sys.argv[1:],
        f'Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
        f'{args.threads} threads, device {args.device}; torch {torch.__version__}. Part: '
        f'{args.parts}; batch {args.batch} of {h}x{w}. FLOPs: mmengine\'s '
        f'get_model_complexity_info on one image (with `import acmix_mm`: every ACmix operator '
        f'counted). Times: all cases in one process, their steps alternating, the fastest of '
        f'{args.repeat} steps; inference without gradients, training step = forward, loss, '
        f'backward. Peak memory: of one training step, each case in a process of its own ('
        f'CUDA: the allocator\'s peak; CPU: growth of the peak resident memory over the state '
        f'before the step). Ratios against {names[0]}.', md, results)
    plot(names, results, args.out + '.png')
    print(f'wrote {args.out}.md, {args.out}.json and {args.out}.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""One whole training iteration of a framework model (data preprocessing, forward, losses,
backward, optimizer step: mmengine's ``train_step``), timed against a baseline in one process.

Used by ``tools/analysis_tools/benchmark_segmentor.py`` and ``benchmark_detector.py`` on a GPU
(``--device cuda [--amp]``). The model and its baseline alternate iteration by iteration
(:func:`acmix_mm.utils.device_timing.time_alternating`); under ``amp`` on CUDA the optimizer is
mmengine's ``AmpOptimWrapper`` (float16 autocast, dynamic loss scaling), as ``--amp`` training
runs; on the CPU the iteration runs under bfloat16 autocast with a plain ``OptimWrapper``.
"""
import importlib
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import Registry
from torch import nn

from ..utils.device_timing import autocast, dtype_name, step_peak_mb, time_alternating
from .configs import framework_model_cfg
from .smoke import build_model


def mmcv_ops_available() -> bool:
    """Whether mmcv's compiled ops are installed (not mmcv-lite, nor the GPU suite's placeholder
    of ``mmcv._ext``, whose functions raise)."""
    try:
        ext = importlib.import_module('mmcv._ext')
    except ImportError:
        return False
    return not getattr(ext, 'ACMIX_MM_PLACEHOLDER', False)


def training_iteration(registry: Registry, config: str, batch: dict, device: str,
                       amp: bool) -> Tuple[Callable[[], Dict[str, float]], nn.Module]:
    """Builds the model of ``config`` (backbone weights from scratch) on ``device`` with an AdamW
    optimizer; returns a function running one training iteration on ``batch`` (returning its
    loss terms), and the model."""
    model = build_model(registry, framework_model_cfg(config)).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    if amp and device == 'cuda':
        wrapper: OptimWrapper = AmpOptimWrapper(optimizer=optimizer, dtype='float16')
        context = autocast(device, False)  # the wrapper autocasts the forward itself
    else:
        wrapper = OptimWrapper(optimizer=optimizer)
        context = autocast(device, amp)

    def iteration() -> Dict[str, float]:
        with context:
            log_vars = model.train_step(batch, wrapper)
        return {k: float(v) for k, v in log_vars.items()}

    return iteration, model


def measure_pair(registry: Registry, configs: Dict[str, str], names: Sequence[str], batch: dict,
                 device: str, amp: bool, repeat: int, warmup: int = 2) -> List[dict]:
    """Times the training iterations of the models ``names`` (their configs in ``configs``;
    with two, the second is the first's baseline) in this process, alternating, and measures
    each iteration's peak memory. One record per model: ``name``, ``mode`` (``'train'``),
    ``device``, ``batch``, ``dtype``, ``seconds`` (fastest of ``repeat``), ``peak_mb``,
    ``params_m`` (backbone), ``losses`` (the last iteration's terms) and ``finite``;
    the first also has ``baseline``, ``baseline_seconds`` and ``baseline_peak_mb``. ``warmup``
    untimed iterations of each model come first."""
    iterations, params, last_losses = [], [], {}
    for name in names:
        iteration, model = training_iteration(registry, configs[name], batch, device, amp)

        def run(name: str = name, iteration: Callable = iteration) -> None:
            last_losses[name] = iteration()
        iterations.append(run)
        params.append(sum(p.numel() for p in model.backbone.parameters()) / 1e6)
    seconds = time_alternating(iterations, device, repeat, warmup)
    peaks = [step_peak_mb(run, device) for run in iterations]
    records = []
    for name, t, peak, params_m in zip(names, seconds, peaks, params):
        losses = last_losses[name]
        records.append(dict(name=name, mode='train', device=device,
                            batch=len(batch['inputs']), dtype=dtype_name(device, amp),
                            seconds=t, peak_mb=peak, params_m=params_m, losses=losses,
                            finite=all(math.isfinite(v) for v in losses.values())))
    if len(records) == 2:
        records[0].update(baseline=names[1], baseline_seconds=records[1]['seconds'],
                          baseline_peak_mb=records[1]['peak_mb'])
    return records


def iteration_table(records: Sequence[dict]) -> str:
    """Markdown rows of :func:`measure_pair` records, with the ratios against the baseline."""
    rows = ['| model | baseline | dtype | backbone params (M) | train iteration (ms) | time ratio '
            '| peak memory (MB) | memory ratio | losses finite |',
            '|---|---|---|---|---|---|---|---|---|']
    for r in records:
        ratio: Optional[str] = None
        mem_ratio: Optional[str] = None
        if 'baseline_seconds' in r:
            ratio = f'{r["seconds"] / r["baseline_seconds"]:.2f}x'
            if r['baseline_peak_mb'] > 0:
                mem_ratio = f'{r["peak_mb"] / r["baseline_peak_mb"]:.2f}x'
        rows.append(f'| {r["name"]} | {r.get("baseline", "-")} | {r["dtype"]} | '
                    f'{r["params_m"]:.2f} | {r["seconds"] * 1e3:.1f} | {ratio or ""} | '
                    f'{r["peak_mb"]:.0f} | {mem_ratio or ""} | {"yes" if r["finite"] else "NO"} |')
    return '\n'.join(rows)


def write_iteration_report(out: str, script: str, argv: List[str], what: str, device: str,
                           amp: bool, repeat: int, warmup: int, records: List[dict],
                           failures: Sequence[str]) -> int:
    """Writes ``out.md``, ``out.json`` (the records, each with the machine's ``environment``)
    and ``out.png`` of :func:`measure_pair` records; ``what`` describes the iteration. Returns
    the exit status: 1 if a case failed or a loss was not finite."""
    from ..utils.benchmarking import write_report
    from ..utils.device_timing import describe, environment
    env = environment(device)
    for r in records:
        r['environment'] = env
    md = iteration_table(records) + (('\n\nFailed: ' + '; '.join(failures)) if failures else '')
    print(md)
    write_report(
        out, script, argv,
        f'Machine: {describe(env)}. {what}, {dtype_name(device, amp)}; backbones from scratch. '
        f'Each ACmix model and its baseline in one process, iterations alternating, fastest of '
        f'{repeat} after {warmup} warm-up iterations each. Peak memory: the iteration\'s peak '
        f'over the memory allocated before it (CUDA allocator; on the CPU the growth of the '
        f'peak resident memory).', md, records)
    if any('baseline_seconds' in r for r in records):
        plot_iterations(records, out + '.png')
    print(f'wrote {out}.md, {out}.json and .png')
    not_finite = [r['name'] for r in records if not r['finite']]
    if not_finite:
        print(f'NOT FINITE losses: {not_finite}')
    return 1 if failures or not_finite else 0


def plot_iterations(records: Sequence[dict], path: str) -> None:
    """Bar chart of the time and memory ratios of the records that have a baseline."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    paired = [r for r in records if 'baseline_seconds' in r]
    labels = [f'{r["name"]}\n{r["dtype"]}' for r in paired]
    x = range(len(paired))
    fig, ax = plt.subplots(figsize=(max(5, 2 * len(paired)), 4))
    ax.bar([i - 0.2 for i in x], [r['seconds'] / r['baseline_seconds'] for r in paired], 0.4,
           label='training iteration time')
    ax.bar([i + 0.2 for i in x],
           [r['peak_mb'] / r['baseline_peak_mb'] if r['baseline_peak_mb'] > 0 else 0
            for r in paired], 0.4, label='peak memory')
    ax.axhline(1, color='k', linewidth=0.8)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel('ACmix / baseline (same process)')
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

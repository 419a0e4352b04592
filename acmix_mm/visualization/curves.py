"""Loss / metric curves from the ``vis_data/scalars.json`` that mmengine's LocalVisBackend writes."""
import json
from typing import Dict, List, Optional, Sequence, Union


def load_scalars(path: str) -> List[dict]:
    """The records of a scalars.json (one JSON object per line)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def merge_runs(paths: Sequence[str]) -> List[dict]:
    """The step records of several scalars.json of one work dir (a run and its ``--resume``
    continuations), in step order. Files are taken in name order (mmengine names the run
    directories by their start time); where two hold the same step and key, the later file's
    value is kept (a resumed run repeats the steps after its checkpoint)."""
    by_step: Dict[int, dict] = {}
    for path in sorted(paths):
        for record in load_scalars(path):
            if 'step' in record:
                by_step.setdefault(record['step'], {}).update(record)
    return [by_step[step] for step in sorted(by_step)]


def plot_curves(scalars_json: Union[str, Sequence[str]], out_png: str,
                keys: Optional[Sequence[str]] = None, title: str = '') -> Dict[str, List[float]]:
    """Plots every key that starts with ``loss`` (or ``keys``) against the iteration.

    Args:
        scalars_json: one scalars.json, or several of one work dir (see :func:`merge_runs`).

    Returns:
        The plotted series, key -> values.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    paths = [scalars_json] if isinstance(scalars_json, str) else list(scalars_json)
    records = merge_runs(paths)
    if keys is None:
        keys = sorted({k for r in records for k in r if k.startswith('loss')})
    if not keys:
        raise ValueError(f'{", ".join(paths)}: no loss records to plot')
    series = {}
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        points = [(r['step'], r[key]) for r in records if key in r]
        if points:
            steps, values = zip(*points)
            series[key] = list(values)
            ax.plot(steps, values, label=key, linewidth=2 if key == 'loss' else 1)
    ax.set_xlabel('iteration')
    ax.set_ylabel('value')
    ax.set_title(title or (paths[0] if len(paths) == 1 else f'{len(paths)} runs'))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return series

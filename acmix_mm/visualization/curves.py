"""Loss / metric curves from the ``vis_data/scalars.json`` that mmengine's LocalVisBackend writes."""
import json
from typing import Dict, List, Optional, Sequence


def load_scalars(path: str) -> List[dict]:
    """The records of a scalars.json (one JSON object per line)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(scalars_json: str, out_png: str, keys: Optional[Sequence[str]] = None,
                title: str = '') -> Dict[str, List[float]]:
    """Plots every key that starts with ``loss`` (or ``keys``) against the iteration.

    Returns:
        The plotted series, key -> values.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    records = [r for r in load_scalars(scalars_json) if 'step' in r]
    if keys is None:
        keys = sorted({k for r in records for k in r if k.startswith('loss')})
    if not keys:
        raise ValueError(f'{scalars_json} holds no loss records to plot')
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
    ax.set_title(title or scalars_json)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return series

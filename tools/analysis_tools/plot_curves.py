"""Plot the losses (or any logged scalars) of a run as a PNG.

    python tools/analysis_tools/plot_curves.py WORK_DIR/*/vis_data/scalars.json \
        --out curves.png [--keys loss loss_cls ...]

Several files (a run and its ``--resume`` continuations) make one curve per key, in step order;
where two hold the same step, the later run's value is plotted.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def main(argv=None):
    parser = argparse.ArgumentParser(description='Plot logged scalars as a PNG')
    parser.add_argument('scalars', nargs='+',
                        help="vis_data/scalars.json of a run (several: its resumed runs)")
    parser.add_argument('--out', default='curves.png', help='output PNG')
    parser.add_argument('--keys', nargs='+', help='scalars to plot (default: every loss)')
    args = parser.parse_args(argv)
    missing = [path for path in args.scalars if not osp.isfile(path)]
    if missing:
        sys.exit(f'error: {", ".join(map(repr, missing))} does not exist')
    from acmix_mm.visualization.curves import plot_curves
    series = plot_curves(args.scalars, args.out, args.keys)
    print(f'wrote {args.out}: ' + ', '.join(f'{k} ({len(v)} points)' for k, v in series.items()))


if __name__ == '__main__':
    main()

"""Plot the losses (or any logged scalars) of a run as a PNG.

    python tools/analysis_tools/plot_curves.py WORK_DIR/TIMESTAMP/vis_data/scalars.json \
        --out curves.png [--keys loss loss_cls ...]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def main(argv=None):
    parser = argparse.ArgumentParser(description='Plot logged scalars as a PNG')
    parser.add_argument('scalars', help="a run's vis_data/scalars.json")
    parser.add_argument('--out', default='curves.png', help='output PNG')
    parser.add_argument('--keys', nargs='+', help='scalars to plot (default: every loss)')
    args = parser.parse_args(argv)
    if not osp.isfile(args.scalars):
        sys.exit(f'error: {args.scalars!r} does not exist')
    from acmix_mm.visualization.curves import plot_curves
    series = plot_curves(args.scalars, args.out, args.keys)
    print(f'wrote {args.out}: ' + ', '.join(f'{k} ({len(v)} points)' for k, v in series.items()))


if __name__ == '__main__':
    main()

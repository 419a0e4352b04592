"""``tools/analysis_tools/plot_curves.py WORK_DIR/*/vis_data/scalars.json`` after a ``--resume``:
one curve per key over both runs."""
import json

import pytest

from acmix_mm.visualization.curves import merge_runs

from . import load_tool

TOOL_PATH = 'tools/analysis_tools/plot_curves.py'


def write_run(path, steps, offset):
    path.parent.mkdir(parents=True)
    path.write_text(''.join(json.dumps(dict(step=s, loss=s + offset, lr=0.1)) + '\n'
                            for s in steps) + json.dumps(dict(coco_bbox_mAP=0.1)) + '\n')
    return str(path)


def test_a_run_and_its_resumed_run_make_one_curve(tmp_path, capsys):
    first = write_run(tmp_path / '20261126_100000/vis_data/scalars.json', [10, 20, 30], 0.0)
    resumed = write_run(tmp_path / '20261126_110000/vis_data/scalars.json', [30, 40], 0.5)
    tool = load_tool('plot_curves', TOOL_PATH)
    out = tmp_path / 'curves.png'
    tool.main([resumed, first, '--out', str(out)])  # any order: names give the runs' order
    assert out.stat().st_size > 0
    assert 'loss (4 points)' in capsys.readouterr().out
    assert [(r['step'], r['loss']) for r in merge_runs([resumed, first])] == \
        [(10, 10.0), (20, 20.0), (30, 30.5), (40, 40.5)]


def test_a_missing_file_is_named(tmp_path):
    tool = load_tool('plot_curves', TOOL_PATH)
    with pytest.raises(SystemExit, match='nowhere.json'):
        tool.main([str(tmp_path / 'nowhere.json')])

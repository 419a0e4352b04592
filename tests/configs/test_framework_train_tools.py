"""mmdet's and mmseg's own tools/train.py run our configs (thanks to ``custom_imports``)."""
import os
import subprocess
import sys

import pytest

import mmdet
import mmseg
from acmix_mm.datasets import generate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


@pytest.mark.slow
@pytest.mark.parametrize('framework', ['mmdet', 'mmseg'])
def test_framework_train_script_runs_demo_config(framework, tmp_path):
    paths = generate(str(tmp_path / 'data'), num_train=4, num_val=2, size=64)
    if framework == 'mmdet':
        tool = os.path.join(os.path.dirname(mmdet.__file__), '.mim/tools/train.py')
        config = 'configs/demo/mask-rcnn_acmix-r26-slim_fpn_demo-shapes.py'
        root = paths['coco'] + '/'
        data = [f'{k}.dataset.data_root={root}' for k in ('train_dataloader', 'val_dataloader',
                                                            'test_dataloader')]
        data += [f'val_evaluator.ann_file={root}annotations/instances_val.json',
                 f'test_evaluator.ann_file={root}annotations/instances_val.json']
    else:
        tool = os.path.join(os.path.dirname(mmseg.__file__), '.mim/tools/train.py')
        config = 'configs/demo/upernet_acmix-swin-slim_demo-shapes.py'
        data = [f'{k}.dataset.data_root={paths["ade"]}' for k in (
            'train_dataloader', 'val_dataloader', 'test_dataloader')]
        data += ['model.data_preprocessor.size=(64,64)']
    out = subprocess.run(
        [sys.executable, tool, config, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
         'train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'train_dataloader.batch_size=2',
         *data], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp_path / 'work' / 'iter_2.pth').exists()

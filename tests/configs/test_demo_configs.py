"""The demo configs work on images of any size, not only the demo data's 128x128."""
import os

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from acmix_mm.datasets import render

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
SEG_DEMOS = [os.path.join(ROOT, 'configs/demo', name) for name in (
    'upernet_acmix-r26-slim_demo-shapes.py', 'upernet_acmix-swin-slim_demo-shapes.py')]


def write_ade_layout(root, sizes):
    """Images of the given sizes (squares of the shapes data) in ADE20K's layout, every one in
    both splits."""
    rng = np.random.RandomState(0)
    for split in ('training', 'validation'):
        os.makedirs(os.path.join(root, 'images', split))
        os.makedirs(os.path.join(root, 'annotations', split))
        for i, size in enumerate(sizes):
            image, labels, _ = render(rng, size)
            cv2.imwrite(os.path.join(root, 'images', split, f'{i}.jpg'), image)
            cv2.imwrite(os.path.join(root, 'annotations', split, f'{i}.png'), labels)


@pytest.mark.slow
@pytest.mark.parametrize('config', SEG_DEMOS, ids=os.path.basename)
def test_segmentation_demo_trains_and_evaluates_on_other_image_sizes(config, tmp_path):
    # smaller than the 128x128 crop (padded with the ignore label), larger, and mixed in a batch
    write_ade_layout(str(tmp_path / 'ade'), (96, 72, 160, 150))
    cfg = Config.fromfile(config)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.merge_from_dict({f'{split}_dataloader.dataset.data_root': str(tmp_path / 'ade')
                         for split in ('train', 'val', 'test')})
    cfg.merge_from_dict({'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2,
                         'train_dataloader.batch_size': 2, 'default_hooks.logger.interval': 1})
    cfg.visualizer.name = f'test_demo_configs_{os.path.basename(config)}'
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    assert 0 <= metrics['mIoU'] <= 100

"""Prediction images through the frameworks' own visualizers (DetLocalVisualizer,
SegLocalVisualizer), for a handful of validation samples."""
import os
from typing import List

import numpy as np
import torch


def save_predictions(runner, out_dir: str, num_images: int = 4) -> List[str]:
    """Runs the runner's model on the first ``num_images`` of its test dataloader and writes
    ground truth | prediction images with the config's visualizer.

    Returns:
        The written paths.
    """
    import mmcv
    from mmengine.visualization import Visualizer
    os.makedirs(out_dir, exist_ok=True)
    visualizer = Visualizer.get_current_instance()
    dataset = runner.test_dataloader.dataset
    visualizer.dataset_meta = dataset.metainfo
    model = runner.model
    model.eval()
    paths = []
    for idx in range(min(num_images, len(dataset))):
        batch = runner.test_dataloader.collate_fn([dataset[idx]])
        with torch.no_grad():
            sample = model.test_step(batch)[0]
        image = mmcv.imread(sample.img_path, channel_order='rgb')
        path = os.path.join(out_dir, os.path.basename(sample.img_path).rsplit('.', 1)[0] + '.png')
        visualizer.add_datasample(os.path.basename(path), np.ascontiguousarray(image), sample,
                                  draw_gt=True, draw_pred=True, show=False, out_file=path,
                                  **_score_threshold(visualizer))
        paths.append(path)
    return paths


def _score_threshold(visualizer) -> dict:
    from mmdet.visualization import DetLocalVisualizer
    return dict(pred_score_thr=0.3) if isinstance(visualizer, DetLocalVisualizer) else {}

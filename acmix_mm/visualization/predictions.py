"""Prediction images through the frameworks' own visualizers (DetLocalVisualizer,
SegLocalVisualizer), for a handful of validation samples: ground truth beside prediction, each
panel enlarged to a readable width and titled."""
import contextlib
import math
import os
from typing import Iterator, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

TITLES = ('ground truth', 'prediction')


def save_predictions(runner, out_dir: str, num_images: int = 4,
                     panel_width: int = 512) -> List[str]:
    """Runs the runner's model on the first ``num_images`` of its test dataloader and writes
    ground truth | prediction images with the config's visualizer.

    Small images are enlarged by a whole factor (nearest neighbour, masks and boxes with them)
    before drawing, so that each panel is at least ``panel_width`` pixels wide and the labels are
    legible; a title row names the two panels.

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
        draw_sample(visualizer, image, sample, path, panel_width)
        paths.append(path)
    return paths


def draw_sample(visualizer, image: np.ndarray, sample, path: str,
                panel_width: int = 512) -> np.ndarray:
    """Draws ground truth | prediction of one data sample with ``visualizer`` (mmdet's or
    mmseg's), enlarged to at least ``panel_width`` pixels per panel and titled, into ``path``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, the image that ``sample`` annotates.

    Returns:
        The written image, ``(rows, 2 * factor * W, 3)`` uint8 RGB.
    """
    import mmcv
    factor = max(1, math.ceil(panel_width / image.shape[1]))
    image, sample = enlarge(image, sample, factor)
    with _text_scaled(visualizer, max(1., factor / 2)):
        visualizer.add_datasample(os.path.basename(path), image, sample, draw_gt=True,
                                  draw_pred=True, show=False, out_file=path,
                                  **_score_threshold(visualizer))
    # both visualizers write the panels side by side into ``path``; only mmdet's keeps them
    drawn = add_titles(mmcv.imread(path, channel_order='rgb'), TITLES)
    mmcv.imwrite(mmcv.rgb2bgr(drawn), path)
    return drawn


def enlarge(image: np.ndarray, sample, factor: int) -> Tuple[np.ndarray, object]:
    """Enlarges an image and the annotations of its data sample by a whole ``factor``.

    Args:
        image: ``(H, W, 3)`` uint8.
        sample: a ``DetDataSample`` (``gt_instances`` / ``pred_instances`` with ``bboxes`` and
            optional ``masks``, in the coordinates of ``image``) or a ``SegDataSample``
            (``gt_sem_seg`` / ``pred_sem_seg`` of shape ``(1, H, W)``).

    Returns:
        The ``(factor*H, factor*W, 3)`` image and a copy of the sample scaled to it.
    """
    if factor == 1:
        return np.ascontiguousarray(image), sample
    import cv2
    height, width = image.shape[0] * factor, image.shape[1] * factor
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)
    sample = sample.clone()
    for key in ('gt_instances', 'pred_instances'):
        if key in sample:
            instances = sample.get(key)
            if 'bboxes' in instances:
                instances.bboxes = _scaled_boxes(instances.bboxes, factor)
            if 'masks' in instances:
                instances.masks = _scaled_masks(instances.masks, (height, width))
    for key in ('gt_sem_seg', 'pred_sem_seg'):
        if key in sample:
            data = sample.get(key).data
            scaled = F.interpolate(data[None].float(), size=(height, width), mode='nearest')
            sample.set_field(type(sample.get(key))(data=scaled[0].to(data.dtype)), key)
    return np.ascontiguousarray(image), sample


def _scaled_boxes(boxes, factor: int):
    """``(N, 4)`` boxes (a tensor or mmdet's box type) times ``factor``."""
    if isinstance(boxes, torch.Tensor):
        return boxes * factor
    boxes = boxes.clone()
    boxes.rescale_((factor, factor))
    return boxes


def _scaled_masks(masks, shape: Tuple[int, int]):
    """``(N, H, W)`` masks (a tensor or mmdet's mask type) resized to ``shape`` (nearest)."""
    if isinstance(masks, torch.Tensor):
        return F.interpolate(masks[None].float(), size=shape, mode='nearest')[0].to(masks.dtype)
    return masks.resize(shape)


@contextlib.contextmanager
def _text_scaled(visualizer, scale: float) -> Iterator[None]:
    """Draws text and lines ``scale`` times larger in pixels: the frameworks' visualizers size
    them in points, so their figure's resolution is raised while the image keeps its pixels."""
    dpi = visualizer.dpi
    visualizer.dpi = dpi * scale
    visualizer.fig_save.set_dpi(dpi * scale)
    try:
        yield
    finally:
        visualizer.dpi = dpi
        visualizer.fig_save.set_dpi(dpi)


def add_titles(image: np.ndarray, titles: Tuple[str, ...]) -> np.ndarray:
    """Puts a white row above ``image`` (``(H, W, 3)`` uint8, side-by-side panels of equal width)
    with one centred title per panel.

    Returns:
        ``(H + row, W, 3)`` uint8.
    """
    import cv2
    panel = image.shape[1] // len(titles)
    scale = max(panel / 512, 0.5)
    row = int(40 * scale)
    header = np.full((row, image.shape[1], 3), 255, np.uint8)
    for i, title in enumerate(titles):
        (w, h), _ = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
        cv2.putText(header, title, (i * panel + (panel - w) // 2, (row + h) // 2),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
    return np.concatenate([header, image], axis=0)


def _score_threshold(visualizer) -> dict:
    from mmdet.visualization import DetLocalVisualizer
    return dict(pred_score_thr=0.3) if isinstance(visualizer, DetLocalVisualizer) else {}

"""Prediction images: ground truth beside prediction, enlarged to a readable width, with the
frameworks' visualizers (boxes, masks and semantic maps scaled with the image)."""
import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData, PixelData

from acmix_mm.visualization.predictions import add_titles, draw_sample, enlarge

CLASSES = ('circle', 'square', 'triangle')


def detection_sample(box_type=torch.tensor):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    masks = np.zeros((1, 96, 128), np.uint8)
    masks[0, 10:30, 20:50] = 1
    sample = DetDataSample()
    # the data preprocessor turns mmdet's box type into tensors (boxtype2tensor); both work
    sample.gt_instances = InstanceData(bboxes=box_type(torch.tensor([[20., 10., 50., 30.]])),
                                       labels=torch.tensor([2]), masks=BitmapMasks(masks, 96, 128))
    sample.pred_instances = InstanceData(bboxes=torch.tensor([[21., 11., 49., 31.]]),
                                         labels=torch.tensor([2]), scores=torch.tensor([0.9]),
                                         masks=torch.from_numpy(masks.astype(bool)))
    return sample


def segmentation_sample():
    from mmseg.structures import SegDataSample
    labels = torch.zeros(1, 96, 128, dtype=torch.long)
    labels[0, 10:30, 20:50] = 3
    return SegDataSample(gt_sem_seg=PixelData(data=labels), pred_sem_seg=PixelData(data=labels))


def test_enlarge_scales_boxes_masks_and_label_maps():
    image = np.zeros((96, 128, 3), np.uint8)
    from mmdet.structures.bbox import HorizontalBoxes
    big, det = enlarge(image, detection_sample(HorizontalBoxes), 4)
    assert big.shape == (384, 512, 3)
    assert det.gt_instances.bboxes.tensor.tolist() == [[80., 40., 200., 120.]]
    assert det.pred_instances.bboxes.tolist() == [[84., 44., 196., 124.]]
    assert det.gt_instances.masks.masks.shape == (1, 384, 512)
    assert det.gt_instances.masks.masks.sum() == 16 * 20 * 30
    assert det.pred_instances.masks.shape == (1, 384, 512)
    assert det.pred_instances.masks.dtype == torch.bool and det.pred_instances.masks.sum() == 16 * 600
    _, seg = enlarge(image, segmentation_sample(), 4)
    assert seg.gt_sem_seg.data.shape == (1, 384, 512) and seg.pred_sem_seg.data.dtype == torch.long
    assert (seg.gt_sem_seg.data == 3).sum() == 16 * 600


def test_titles_row_names_each_panel():
    image = np.zeros((512, 1024, 3), np.uint8)
    titled = add_titles(image, ('ground truth', 'prediction'))
    assert titled.shape[0] > 512 and titled.shape[1] == 1024
    header = titled[:titled.shape[0] - 512]
    for half in (header[:, :512], header[:, 512:]):
        assert (half < 128).any()  # dark text on white in each panel's half


@pytest.mark.parametrize('kind', ['detection', 'segmentation'])
def test_drawn_file_has_two_panels_of_at_least_512_pixels(kind, tmp_path):
    import cv2
    if kind == 'detection':
        from mmdet.visualization import DetLocalVisualizer as Visualizer
        sample, meta = detection_sample(), dict(classes=CLASSES)
    else:
        from mmseg.visualization import SegLocalVisualizer as Visualizer
        sample = segmentation_sample()
        meta = dict(classes=('background', ) + CLASSES,
                    palette=[[120, 120, 120], [220, 20, 60], [0, 130, 230], [250, 170, 30]])
    visualizer = Visualizer(name=f'test_{kind}')
    visualizer.dataset_meta = meta
    image = np.full((96, 128, 3), 60, np.uint8)
    path = str(tmp_path / f'{kind}.png')
    drawn = draw_sample(visualizer, image, sample, path)
    written = cv2.imread(path)
    assert written.shape == drawn.shape and written.shape[1] == 2 * 512
    assert written.shape[0] > 384  # 4x the image's height plus the title row
    gt, pred = written[-384:, :512], written[-384:, 512:]
    assert (gt != 60).any(axis=2).sum() > 1000 and (pred != 60).any(axis=2).sum() > 1000
    assert visualizer.dpi == visualizer.fig_save.get_dpi()  # the text scale is restored

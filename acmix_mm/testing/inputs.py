"""Packed batches in the format each framework's data preprocessor takes."""
from typing import Sequence, Tuple

import torch


def detection_batch(batch_size: int = 2, image_shape: Tuple[int, int] = (128, 160),
                    num_classes: int = 80, with_mask: bool = True) -> dict:
    """Random images with boxes and masks, as mmdet's ``PackDetInputs`` gives them."""
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size, (3, *image_shape), num_items=[3] * batch_size,
                          num_classes=num_classes, with_mask=with_mask)


def segmentation_batch(batch_size: int = 2, image_shape: Tuple[int, int] = (128, 128),
                       num_classes: int = 150, seed: int = 0) -> dict:
    """Random images with label maps, as mmseg's ``PackSegInputs`` gives them."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    h, w = image_shape
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             pad_shape=(h, w)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes, (1, h, w), generator=g, dtype=torch.long))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def classification_batch(batch_size: int = 2, image_shape: Sequence[int] = (64, 64),
                         num_classes: int = 1000, seed: int = 0) -> dict:
    """Random images with labels, as mmpretrain's ``PackInputs`` gives them."""
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, *image_shape), generator=g, dtype=torch.uint8)
              for _ in range(batch_size)]
    samples = [DataSample().set_gt_label(int(torch.randint(0, num_classes, (1, ), generator=g)))
               for _ in range(batch_size)]
    return dict(inputs=inputs, data_samples=samples)

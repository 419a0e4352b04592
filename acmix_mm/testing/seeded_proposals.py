"""Proposals that do not depend on the detector, for comparing two-stage detectors' cost.

At random initialisation an RPN turns each backbone's random features into proposals of a
different size distribution, and RoIAlign with mmdet's adaptive sampling (``sampling_ratio=0``,
as in its Mask R-CNN configs) takes a number of samples per bin that grows with the proposal's
size: the RoI heads of two detectors then do different work, by chance, at the same image size
(measured on the Mask R-CNN benchmark: the RoIAlign forward and backward of ACmix-R50's proposals
took 1.5x-2.2x those of ResNet-50's, the same number of RoIs). :func:`use_seeded_proposals` gives
the RoI head the same seeded proposals whatever the backbone; the RPN still runs as always (its
losses, its proposal generation and their cost), only its proposals are replaced.
"""
import math
from typing import List, Sequence

import torch
from mmengine.structures import InstanceData
from torch import nn


def seeded_proposals(data_samples: Sequence, num: int = 1000,
                     seed: int = 0) -> List[InstanceData]:
    """``num`` random boxes per image, the same for the same ``seed`` and image shapes.

    Centres are uniform over the image, the square root of the area log-uniform in [16, 512]
    pixels and the aspect ratio log-uniform in [1/2, 2]; boxes are clipped to the image. Scores
    fall from 1 to 0 in the order of the boxes; labels are 0 (the RPN's single class).

    Args:
        data_samples: mmdet ``DetDataSample``s with ``img_shape`` ``(H, W)`` in their metainfo.
        num: boxes per image (mmdet's RPN keeps up to 1000 in training).
        seed: the generator's seed.

    Returns:
        One ``InstanceData`` per sample with ``bboxes (num, 4)`` (x1, y1, x2, y2), ``scores
        (num,)`` and ``labels (num,)``.
    """
    if num < 1:
        raise ValueError(f'num must be a positive number of boxes, got {num}')
    g = torch.Generator().manual_seed(seed)
    results = []
    for sample in data_samples:
        h, w = sample.metainfo['img_shape'][:2]
        centre = torch.rand(num, 2, generator=g) * torch.tensor([w, h])
        side = torch.empty(num).uniform_(math.log(16), math.log(512), generator=g).exp_()
        ratio = torch.empty(num).uniform_(-math.log(2), math.log(2), generator=g).exp_()
        half = torch.stack([side * ratio.sqrt(), side / ratio.sqrt()], 1) / 2  # (w, h) / 2
        boxes = torch.cat([centre - half, centre + half], 1)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        results.append(InstanceData(bboxes=boxes, scores=torch.linspace(1, 0, num),
                                    labels=torch.zeros(num, dtype=torch.long)))
    return results


def use_seeded_proposals(model: nn.Module, num: int = 1000, seed: int = 0) -> None:
    """Makes a two-stage mmdet detector's RoI head train on :func:`seeded_proposals`.

    ``model.rpn_head.loss_and_predict`` still runs (losses and proposal generation, as timed);
    the proposals it returns are replaced, on the device of the features.

    Raises:
        ValueError: where ``model`` has no ``rpn_head`` (not a two-stage detector).
    """
    rpn_head = getattr(model, 'rpn_head', None)
    if rpn_head is None:
        raise ValueError(f'model must be a two-stage detector with an rpn_head, got '
                         f'{type(model).__name__}')
    loss_and_predict = rpn_head.loss_and_predict

    def seeded_loss_and_predict(x, batch_data_samples, proposal_cfg=None):
        losses, _ = loss_and_predict(x, batch_data_samples, proposal_cfg=proposal_cfg)
        return losses, [p.to(x[0].device) for p in seeded_proposals(batch_data_samples, num, seed)]

    rpn_head.loss_and_predict = seeded_loss_and_predict

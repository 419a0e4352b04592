import math
import os

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample

from acmix_mm.testing import build_model, detection_batch, framework_model_cfg
from acmix_mm.testing.seeded_proposals import seeded_proposals, use_seeded_proposals

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
CONFIGS = {'r50': 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
           'acmix-r50': os.path.join(ROOT, 'configs/mmdet/mask-rcnn_acmix-r50_fpn_1x_coco.py')}


def samples(*shapes):
    return [DetDataSample(metainfo=dict(img_shape=shape)) for shape in shapes]


def test_proposals_are_seeded_boxes_inside_each_image():
    state = torch.get_rng_state()
    first = seeded_proposals(samples((90, 140), (60, 50)), num=300, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # its own generator, not the global one
    again = seeded_proposals(samples((90, 140), (60, 50)), num=300, seed=3)
    other = seeded_proposals(samples((90, 140), (60, 50)), num=300, seed=4)
    for p, q, r, (h, w) in zip(first, again, other, [(90, 140), (60, 50)]):
        assert torch.equal(p.bboxes, q.bboxes) and not torch.equal(p.bboxes, r.bboxes)
        b = p.bboxes
        assert b.shape == (300, 4) and p.scores.shape == p.labels.shape == (300,)
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 0] <= b[:, 2]).all()
        assert (b[:, 1] >= 0).all() and (b[:, 3] <= h).all() and (b[:, 1] <= b[:, 3]).all()
        assert (p.scores[:-1] > p.scores[1:]).all() and not p.labels.any()


def test_sizes_follow_the_documented_distribution():
    b = seeded_proposals(samples((100000, 100000)), num=20000, seed=0)[0].bboxes
    inside = (b[:, :2] > 0).all(1) & (b[:, 2:] < 100000).all(1)  # not clipped
    assert inside.float().mean() > 0.95
    b = b[inside]
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side, ratio = (w * h).sqrt(), h / w
    assert side.min() >= 16 * 0.999 and side.max() <= 512 * 1.001
    assert ratio.min() >= 0.5 * 0.999 and ratio.max() <= 2 * 1.001
    # log-uniform: the median side is the geometric mean of the bounds
    assert math.isclose(side.median().item(), math.sqrt(16 * 512), rel_tol=0.05)


def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match='num must be a positive'):
        seeded_proposals(samples((10, 10)), num=0)
    with pytest.raises(ValueError, match='rpn_head'):
        use_seeded_proposals(torch.nn.Linear(2, 2))


def roi_head_inputs(config, seeded):
    """The proposals that the RoI head of ``config``'s detector gets in one training forward."""
    torch.manual_seed(0)
    model = build_model(MODELS, framework_model_cfg(config)).train()
    if seeded:
        use_seeded_proposals(model, num=200, seed=1)
    data = model.data_preprocessor(detection_batch(2, (128, 160)), True)
    got = []
    loss = model.roi_head.loss
    model.roi_head.loss = lambda x, results, *a: (
        got.append([r.bboxes.clone() for r in results]), loss(x, results, *a))[1]
    losses = model(**data, mode='loss')
    assert 'loss_rpn_cls' in losses and 'loss_mask' in losses
    return got[0], data['data_samples']


@pytest.mark.slow
def test_two_backbones_get_the_same_proposals_only_when_seeded():
    own = {name: roi_head_inputs(config, False)[0] for name, config in CONFIGS.items()}
    assert not all(torch.equal(a, b) for a, b in zip(own['r50'], own['acmix-r50']))
    seeded = {}
    for name, config in CONFIGS.items():
        seeded[name], data_samples = roi_head_inputs(config, True)
    want = seeded_proposals(data_samples, num=200, seed=1)
    for a, b, w in zip(seeded['r50'], seeded['acmix-r50'], want):
        assert torch.equal(a, w.bboxes) and torch.equal(b, w.bboxes)

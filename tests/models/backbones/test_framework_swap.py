"""The frameworks' own configs with only ``backbone.type`` changed: loss and predict."""
import pytest
import torch

from acmix_mm.testing import (build_model, classification_batch, detection_batch,
                              framework_model_cfg, loss_backward_predict, segmentation_batch)


def open_residual_branches(model):
    """ResNet configs zero-initialise each block's last norm (``zero_init_residual``), which
    blocks every gradient into the block, and Swin configs drop whole branches at random
    (stochastic depth up to 0.3 in the last block: for a batch of two, 9% of draws drop it for
    both); open them so the check below means something."""
    with torch.no_grad():
        for name, m in model.backbone.named_modules():
            if name.endswith('.bn3'):
                m.weight.fill_(1.)
            if hasattr(m, 'drop_prob'):
                m.drop_prob = 0.
    return model


def grads_reach_acmix(model):
    """The ACmix parameters of the deepest stage received non-zero gradients."""
    names = [n for n, _ in model.backbone.named_parameters() if n.endswith('.rate1')]
    last = names[-1][:-len('rate1')]
    params = dict(model.backbone.named_parameters())
    return all(params[last + k].grad is not None and params[last + k].grad.abs().sum() > 0
               for k in ('rate1', 'rate2', 'fc.weight', 'dep_conv.weight'))


@pytest.mark.slow
@pytest.mark.parametrize('config,backbone', [
    ('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', 'ACmixResNet'),
    ('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', 'ACmixSwinTransformer'),
])
def test_mmdet_mask_rcnn(config, backbone):
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    cfg = framework_model_cfg(config, backbone)
    model = open_residual_branches(build_model(MODELS, cfg))
    log_vars, preds = loss_backward_predict(model, detection_batch(2, (96, 128)))
    for key in ('loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'):
        assert torch.isfinite(torch.tensor(log_vars[key]))
    assert grads_reach_acmix(model)
    assert isinstance(preds[0], DetDataSample)
    assert {'bboxes', 'scores', 'labels', 'masks'} <= set(preds[0].pred_instances.keys())


@pytest.mark.slow
@pytest.mark.parametrize('config,backbone', [
    ('mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py', 'ACmixResNetV1c'),
    ('mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
     'ACmixSwinTransformer'),
])
def test_mmseg_upernet(config, backbone):
    from mmseg.registry import MODELS
    cfg = framework_model_cfg(config, backbone)
    # the configs pad every batch to their 512 x 512 crop: 28 s a step here instead of 2 s
    cfg.data_preprocessor.size = (64, 64)
    model = open_residual_branches(build_model(MODELS, cfg))
    log_vars, preds = loss_backward_predict(model, segmentation_batch(2, (64, 64)))
    assert torch.isfinite(torch.tensor(log_vars['decode.loss_ce']))
    assert grads_reach_acmix(model)
    assert preds[0].pred_sem_seg.data.shape == (1, 64, 64)


@pytest.mark.slow
def test_mmpretrain_classifier():
    from mmpretrain.registry import MODELS
    cfg = framework_model_cfg('mmpretrain::resnet/resnet50_8xb32_in1k.py', 'ACmixResNet')
    model = open_residual_branches(build_model(MODELS, cfg))
    log_vars, preds = loss_backward_predict(model, classification_batch(2, (64, 64)))
    assert torch.isfinite(torch.tensor(log_vars['loss']))
    assert grads_reach_acmix(model)
    assert preds[0].pred_score.shape == (1000, )

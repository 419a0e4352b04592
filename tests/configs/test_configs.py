"""Every shipped config builds; its model trains a step and predicts on tiny inputs; its
optimizer keeps weight decay off the ACmix rates. The demo configs run through the Runner."""
import glob
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from acmix_mm.testing import (build_model, classification_batch, detection_batch,
                              loss_backward_predict, segmentation_batch)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
CONFIGS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'configs/[!_]*/*.py')))


def registry_and_batch(path, cfg):
    if '/mmdet/' in path or 'mask-rcnn' in path:
        from mmdet.registry import MODELS
        return MODELS, detection_batch(2, (96, 128), num_classes=3 if 'demo' in path else 80,
                                       with_mask='mask-rcnn' in path)
    if '/mmseg/' in path or 'upernet' in path:
        from mmseg.registry import MODELS
        cfg.model.data_preprocessor.size = (64, 64)
        return MODELS, segmentation_batch(2, (64, 64), num_classes=cfg.model.decode_head.num_classes)
    from mmpretrain.registry import MODELS
    return MODELS, classification_batch(2, (64, 64))


def test_every_issue_config_exists():
    names = {os.path.basename(p) for p in CONFIGS}
    for backbone in ('r50', 'swin-t-p4-w7', 'swin-s-p4-w7'):
        assert f'mask-rcnn_acmix-{backbone}_fpn_1x_coco.py' in names
        assert any(n.startswith(f'mask-rcnn_acmix-{backbone}_fpn_ms') and '3x' in n for n in names)
    assert {'retinanet_acmix-r50_fpn_1x_coco.py', 'retinanet_acmix-swin-t-p4-w7_fpn_1x_coco.py',
            'upernet_acmix-r50_4xb4-160k_ade20k-512x512.py',
            'upernet_acmix-swin-t_8xb2-160k_ade20k-512x512.py',
            'upernet_acmix-swin-s_8xb2-160k_ade20k-512x512.py',
            'fpn_acmix-r50_4xb4-80k_ade20k-512x512.py'} <= names


@pytest.mark.slow
@pytest.mark.parametrize('path', CONFIGS)
def test_config_trains_a_step_and_predicts(path):
    cfg = Config.fromfile(os.path.join(ROOT, path))
    assert cfg.custom_imports['imports'] == ['acmix_mm']
    assert cfg.model.backbone.type.startswith('ACmix')
    if cfg.get('data_preprocessor'):  # what the Runner does
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    cfg.model.pop('pretrained', None)
    cfg.model.backbone.pop('init_cfg', None)  # checkpoints are not downloaded in tests
    registry, batch = registry_and_batch(path, cfg)
    model = build_model(registry, cfg.model)

    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g['weight_decay'] for g in optim.optimizer.param_groups for p in g['params']}
    rates = [p for n, p in model.named_parameters()
             if n.endswith(('rate1', 'rate2')) and p.requires_grad]  # frozen stages are not optimised
    assert rates and all(decay[id(p)] == 0 for p in rates)

    log_vars, preds = loss_backward_predict(model, batch)
    assert torch.isfinite(torch.tensor(log_vars['loss']))
    assert len(preds) == 2

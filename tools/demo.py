"""The main job (for now): ACmix backbones inside the frameworks' own detector, segmentor and
classifier configs, one training step and one prediction each on generated images."""
import time

from mmengine.logging import MMLogger

import acmix_mm  # noqa: F401  (registers the ACmix modules)
from acmix_mm.testing import (build_model, classification_batch, detection_batch,
                              framework_model_cfg, loss_backward_predict, segmentation_batch)

CASES = [
    ('mmdet', 'Mask R-CNN R50-FPN', 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', 'ACmixResNet',
     lambda: detection_batch(2, (160, 224))),
    ('mmseg', 'UperNet R50 (ADE20K)', 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py',
     'ACmixResNetV1c', lambda: segmentation_batch(2, (128, 128))),
    ('mmpretrain', 'ImageNet classifier R50', 'mmpretrain::resnet/resnet50_8xb32_in1k.py',
     'ACmixResNet', lambda: classification_batch(2, (96, 96))),
]


def main() -> None:
    # Quiet mmengine's per-parameter initialisation report; warnings still show.
    MMLogger.get_instance('acmix_demo', log_level='WARNING')
    from mmdet.registry import MODELS as MMDET
    from mmpretrain.registry import MODELS as MMPRETRAIN
    from mmseg.registry import MODELS as MMSEG
    registries = dict(mmdet=MMDET, mmseg=MMSEG, mmpretrain=MMPRETRAIN)
    for scope, name, config, backbone, make_batch in CASES:
        start = time.perf_counter()
        model = build_model(registries[scope], framework_model_cfg(config, backbone))
        n_params = sum(p.numel() for p in model.backbone.parameters()) / 1e6
        log_vars, preds = loss_backward_predict(model, make_batch())
        losses = ', '.join(f'{k}={v:.3f}' for k, v in log_vars.items() if k != 'loss')
        print(f'[{scope}] {name} with {backbone} ({n_params:.2f}M backbone params) from {config}\n'
              f'    train step: loss={log_vars["loss"]:.3f} ({losses})\n'
              f'    predict: {len(preds)} images -> {type(preds[0]).__name__} '
              f'[{time.perf_counter() - start:.1f}s]')
    print('demo finished: all three frameworks built, trained a step and predicted with ACmix')


if __name__ == '__main__':
    main()

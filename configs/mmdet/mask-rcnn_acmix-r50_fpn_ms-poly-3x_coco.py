# Mask R-CNN, ACmix-ResNet-50 FPN, 3x with multi-scale training on COCO.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_ms-poly-3x_coco.py'
custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)

model = dict(backbone=dict(type='ACmixResNet'))
optim_wrapper = dict(paramwise_cfg=dict(
    norm_decay_mult=0., custom_keys={'.rate1': dict(decay_mult=0.), '.rate2': dict(decay_mult=0.)}))

# RetinaNet, ACmix-ResNet-50 FPN, 1x on COCO.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)

model = dict(backbone=dict(type='ACmixResNet'))
optim_wrapper = dict(paramwise_cfg=dict(
    norm_decay_mult=0., custom_keys={'.rate1': dict(decay_mult=0.), '.rate2': dict(decay_mult=0.)}))

# Mask R-CNN, ACmix-ResNet-50 FPN, 1x on COCO: mmdet's R50 config with the backbone swapped.
# No ImageNet ACmix-ResNet weights were released; torchvision's ResNet-50 initialises every
# layer of the same shape and the ACmix layers start from their own initialisation (logged).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)

model = dict(backbone=dict(type='ACmixResNet'))
optim_wrapper = dict(paramwise_cfg=dict(
    norm_decay_mult=0., custom_keys={'.rate1': dict(decay_mult=0.), '.rate2': dict(decay_mult=0.)}))

# Mask R-CNN, ACmix-Swin-T FPN, 1x on COCO: mmdet's Swin-T config with the backbone swapped,
# initialised from the released ACmix-Swin-T ImageNet-1k checkpoint of the reference code
# (put it at checkpoints/acmix_swin_tiny_patch4_window7_224.pth; converted on the fly).
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)

pretrained = 'checkpoints/acmix_swin_tiny_patch4_window7_224.pth'
model = dict(backbone=dict(type='ACmixSwinTransformer', convert_weights=True,
                           init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'absolute_pos_embed': dict(decay_mult=0.),
    'relative_position_bias_table': dict(decay_mult=0.),
    'norm': dict(decay_mult=0.),
    '.rate1': dict(decay_mult=0.),
    '.rate2': dict(decay_mult=0.)
}))

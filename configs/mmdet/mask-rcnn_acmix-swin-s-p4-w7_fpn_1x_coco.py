# Mask R-CNN, ACmix-Swin-S FPN, 1x on COCO (released ACmix-Swin-S ImageNet-1k checkpoint).
_base_ = './mask-rcnn_acmix-swin-t-p4-w7_fpn_1x_coco.py'

pretrained = 'checkpoints/acmix_swin_small_patch4_window7_224.pth'
model = dict(backbone=dict(depths=(2, 2, 18, 2), drop_path_rate=0.3,
                           init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

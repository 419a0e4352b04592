# Mask R-CNN, ACmix-Swin-T FPN, 3x with multi-scale crop training on COCO.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py', '../_base_/acmix-swin-t.py']

model = dict(backbone={{_base_.acmix_swin_t_backbone}})
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.acmix_swin_custom_keys}}))

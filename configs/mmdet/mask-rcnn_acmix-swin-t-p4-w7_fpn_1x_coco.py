# Mask R-CNN, ACmix-Swin-T FPN, 1x on COCO: mmdet's Swin-T config with the backbone swapped,
# initialised from the released ACmix-Swin-T ImageNet-1k checkpoint of the reference code
# (put it at checkpoints/acmix_swin_tiny_patch4_window7_224.pth; converted on the fly).
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', '../_base_/acmix-swin-t.py']

model = dict(backbone={{_base_.acmix_swin_t_backbone}})
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.acmix_swin_custom_keys}}))

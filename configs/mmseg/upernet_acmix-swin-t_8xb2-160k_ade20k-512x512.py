# UperNet, ACmix-Swin-T, 160k iterations on ADE20K 512x512: mmseg's Swin-T config with the
# backbone swapped, initialised from the released ACmix-Swin-T ImageNet-1k checkpoint of the
# reference code (put it at checkpoints/acmix_swin_tiny_patch4_window7_224.pth).
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py', '../_base_/acmix-swin-t.py']

model = dict(backbone={{_base_.acmix_swin_t_backbone}})
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.acmix_swin_custom_keys}}))

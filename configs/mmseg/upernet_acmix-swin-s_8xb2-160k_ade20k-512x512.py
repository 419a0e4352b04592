# UperNet, ACmix-Swin-S, 160k iterations on ADE20K 512x512 (released ACmix-Swin-S checkpoint).
_base_ = './upernet_acmix-swin-t_8xb2-160k_ade20k-512x512.py'

pretrained = 'checkpoints/acmix_swin_small_patch4_window7_224.pth'
model = dict(backbone=dict(depths=(2, 2, 18, 2), drop_path_rate=0.3,
                           init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

# ACmix-Swin-S on ImageNet-1k: as acmix-swin-tiny, depths (2, 2, 18, 2) and drop path 0.3.
_base_ = ['./acmix-swin-tiny_16xb64_in1k.py']

model = dict(backbone=dict(depths=(2, 2, 18, 2), drop_path_rate=0.3))

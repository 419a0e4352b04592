# Demo: UperNet with a slim ACmix-ResNetV1c-26 on the built-in shapes data in ADE20K's layout
# (data/demo/ade, written by tools/demo.py): the segmentation job of the main job. It is the
# ACmix-Swin demo config (mmseg's Swin-T UperNet shrunk: same data, head, loss and AdamW recipe)
# with the backbone replaced, because the slim ACmix-Swin learns the shapes too slowly for the
# main job's ~9-minute budget on 2 CPU cores: it labels every shape 'circle' after 500 iterations
# and reached mIoU 50.1 after 1500 and 55.4 after 2500 (window 8, no drop path), where this
# backbone reached 69.4 after 2000 at the same cost per iteration (README, top).
_base_ = './upernet_acmix-swin-slim_demo-shapes.py'

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    # mmseg's UperNet-R50 backbone (ResNetV1c) as ACmix-ResNet-26, 16 base channels
    backbone=dict(_delete_=True, type='ACmixResNetV1c', depth=26, stem_channels=16,
                  base_channels=16, norm_cfg=norm_cfg, norm_eval=False, init_cfg=None),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))

max_iters = 2000
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters, eta_min=1e-5)
]
default_hooks = dict(checkpoint=dict(interval=max_iters))

# Demo: UperNet with a slim ACmix-Swin on the built-in shapes data in ADE20K's layout
# (data/demo/ade, written by tools/demo.py), small enough to train on a CPU in minutes. Same
# structure as mmseg's Swin-T UperNet; widths and schedule shrunk. tools/demo.py segments with
# upernet_acmix-r26-slim_demo-shapes.py instead: in 500 iterations this model labels every
# shape 'circle', and it learns them too slowly for the main job's budget (README, top).
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)

crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)
data_root = 'data/demo/ade/'

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        type='ACmixSwinTransformer', embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
        drop_path_rate=0.1, init_cfg=None),
    # background covers ~90% of the pixels: weight it down so that the shapes are learnt quickly.
    # mmseg's CrossEntropyLoss fails on class weights where a batch holds padding (images smaller
    # than crop_size); IgnoreAwareCrossEntropyLoss is the same loss with that fixed.
    decode_head=dict(in_channels=[32, 64, 128, 256], channels=64, num_classes=4,
                     norm_cfg=norm_cfg, loss_decode=dict(type='IgnoreAwareCrossEntropyLoss',
                                                         class_weight=[0.25, 1., 1., 1.])),
    auxiliary_head=dict(in_channels=128, channels=32, num_classes=4, norm_cfg=norm_cfg,
                        loss_decode=dict(type='IgnoreAwareCrossEntropyLoss',
                                         class_weight=[0.25, 1., 1., 1.])))

# Images of any size: larger ones are cropped to crop_size, smaller ones padded (ignored label),
# so that a batch stacks; validation runs one image at a time, at its own size.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(_delete_=True, type='DemoShapesSegDataset', data_root=data_root,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='DemoShapesSegDataset', data_root=data_root,
                 data_prefix=dict(img_path='images/validation',
                                  seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 500
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters, eta_min=1e-5)
]
optim_wrapper = dict(
    optimizer=dict(lr=4e-3, weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
        '.rate1': dict(decay_mult=0.),
        '.rate2': dict(decay_mult=0.)
    }))
default_hooks = dict(
    logger=dict(interval=20, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    # random states saved with every checkpoint: a resumed run repeats the interrupted one
    exact_resume=dict(type='ExactResumeHook'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(vis_backends=vis_backends)
randomness = dict(seed=0)

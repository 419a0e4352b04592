# Demo: Mask R-CNN with a slim ACmix-ResNet-26 on the built-in shapes data (data/demo/coco,
# written by tools/demo.py), small enough to train on a CPU in minutes. Same structure as
# mmdet's Mask R-CNN R50-FPN 1x; widths and schedule shrunk.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)

data_root = 'data/demo/coco/'
metainfo = dict(classes=('circle', 'square', 'triangle'))
width = 64

model = dict(
    backbone=dict(
        type='ACmixResNet', depth=26, stem_channels=16, base_channels=16, frozen_stages=-1,
        norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=width),
    # the shapes are 20-46 px wide: anchors of 16, 32 and 64 px on the finest levels (mmdet's
    # default is 32 px and up, which leaves the smallest shapes few positive anchors)
    rpn_head=dict(in_channels=width, feat_channels=width, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        # boxes regressed as decoded boxes with a GIoU loss (mmdet's GIoU variant of this head)
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=3,
                       reg_decoded_bbox=True, loss_bbox=dict(type='GIoULoss', loss_weight=10.0)),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=width, num_classes=3)),
    train_cfg=dict(rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor'))
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_iters = 900  # 480: bbox mAP 0.30 on the demo validation split; 900: 0.39 (0.37 with seed 1)
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters, eta_min=1e-4)
]
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.04, momentum=0.9, weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'.rate1': dict(decay_mult=0.), '.rate2': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=10.))
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    # random states saved with every checkpoint: a resumed run repeats the interrupted one
    exact_resume=dict(type='ExactResumeHook'))
log_processor = dict(by_epoch=False)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(vis_backends=vis_backends)
auto_scale_lr = dict(enable=False)
randomness = dict(seed=0)

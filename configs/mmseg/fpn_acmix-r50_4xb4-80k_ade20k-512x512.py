# Semantic FPN, ACmix-ResNet-50, 80k iterations on ADE20K 512x512: mmseg's Semantic FPN R50
# ADE20K config (shipped with a 160k schedule) with the backbone swapped and an 80k schedule.
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)

model = dict(backbone=dict(type='ACmixResNetV1c'))
optim_wrapper = dict(paramwise_cfg=dict(
    norm_decay_mult=0., custom_keys={'.rate1': dict(decay_mult=0.), '.rate2': dict(decay_mult=0.)}))
train_cfg = dict(max_iters=80000, val_interval=8000)
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=80000, by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval=8000))

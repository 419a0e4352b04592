# Semantic FPN, ACmix-ResNet-50, 80k iterations on ADE20K 512x512.
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)

model = dict(backbone=dict(type='ACmixResNetV1c'))
optim_wrapper = dict(paramwise_cfg=dict(
    norm_decay_mult=0., custom_keys={'.rate1': dict(decay_mult=0.), '.rate2': dict(decay_mult=0.)}))

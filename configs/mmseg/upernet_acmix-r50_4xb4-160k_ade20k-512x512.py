# UperNet, ACmix-ResNet-50 (V1c deep stem), 160k iterations on ADE20K 512x512: mmseg's R50 config
# with the backbone swapped. mmseg's ResNet-50-V1c ImageNet weights initialise every layer of the
# same shape; the ACmix layers start from their own initialisation (logged).
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)

model = dict(backbone=dict(type='ACmixResNetV1c'))
optim_wrapper = dict(paramwise_cfg=dict(
    norm_decay_mult=0., custom_keys={'.rate1': dict(decay_mult=0.), '.rate2': dict(decay_mult=0.)}))

# ACmix-ResNet-50 on ImageNet-1k: mmpretrain's ResNet-50 recipe with the backbone type swapped.
# The classifier (ACmixResNet + global average pooling + linear head) is the reference one, so a
# checkpoint converted by tools/model_converters/acmix2mm.py loads as load_from.
_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'
custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)

model = dict(backbone=dict(type='ACmixResNet', depth=50))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        '.rate1': dict(decay_mult=0.0),
        '.rate2': dict(decay_mult=0.0),
    }))

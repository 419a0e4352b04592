# ACmix-Swin-T on ImageNet-1k: mmpretrain's Swin-T recipe (AdamW, 300 epochs, batch 1024) with the
# backbone swapped. A checkpoint converted by tools/model_converters/acmix2mm.py loads as load_from.
_base_ = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'
custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ACmixSwinTransformer',
        embed_dims=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size=7,
        drop_path_rate=0.2,
        out_indices=(3, )))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        '.absolute_pos_embed': dict(decay_mult=0.0),
        '.relative_position_bias_table': dict(decay_mult=0.0),
        '.rate1': dict(decay_mult=0.0),
        '.rate2': dict(decay_mult=0.0),
    }))

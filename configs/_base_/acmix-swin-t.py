# Shared by the detection and segmentation configs of ACmix-Swin-T (inherit it beside the
# framework's Swin config and use the variables with {{_base_.<name>}}).
custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)

# The released ACmix-Swin-T ImageNet-1k checkpoint of the reference code, converted on the fly.
acmix_swin_t_backbone = dict(
    type='ACmixSwinTransformer',
    convert_weights=True,
    init_cfg=dict(type='Pretrained',
                  checkpoint='checkpoints/acmix_swin_tiny_patch4_window7_224.pth'))

# No weight decay on position tables, norms and the ACmix rates.
acmix_swin_custom_keys = {
    'absolute_pos_embed': dict(decay_mult=0.),
    'relative_position_bias_table': dict(decay_mult=0.),
    'norm': dict(decay_mult=0.),
    '.rate1': dict(decay_mult=0.),
    '.rate2': dict(decay_mult=0.)
}

"""Every wrong setting, wrong input and bad checkpoint file gives a clear error.

One line per case: what is built or called, the settings, the exception expected and a word that
its message must contain (the argument as the user spells it in a config, or the file's name).
Each constructor checks its arguments before anything is built, so these cases take milliseconds.
"""
import pickle

import pytest
import torch
from mmcv.cnn import build_conv_layer

from acmix_mm.layers import ACmix
from acmix_mm.models.backbones import ACmixResNet, ACmixResNetV1c, ACmixSwinTransformer

SWIN = dict(embed_dims=24, depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4), drop_path_rate=0.)


def layer(**kw):
    return ACmix(**{'in_channels': 8, 'out_channels': 8, **kw})


def conv(**kw):  # the mmcv conv layer type, as mmdet's/mmseg's ResNet build it through `dcn`
    return build_conv_layer(dict(type='ACmix', **kw.pop('cfg', {})), kw.pop('in_channels', 8),
                            kw.pop('out_channels', 8), **{'kernel_size': 3, **kw})


def resnet(**kw):
    return ACmixResNet(**{'depth': 26, **kw})


def v1c(**kw):
    return ACmixResNetV1c(**{'depth': 26, **kw})


def swin(**kw):
    return ACmixSwinTransformer(**{**SWIN, **kw})


def run(model, x):
    return model(x)


def layer_input(x):
    return ACmix(8, 8)(x)


def resnet_input(x):
    return ACmixResNet(26, out_indices=(0, ))(x)


def swin_input(x, **kw):
    return swin(**kw)(x)


def write_checkpoint(path, kind):
    """A checkpoint file of the given ``kind`` at ``path``."""
    if kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'truncated':
        torch.save({'state_dict': ACmixResNet(26).state_dict()}, path)
        path.write_bytes(path.read_bytes()[:5000])
    elif kind == 'text':
        path.write_text('model = dict(type="ACmixResNet", depth=26)\n')
    elif kind == 'pickle of a list':
        with open(path, 'wb') as f:
            pickle.dump([1, 2, 3], f)
    elif kind == 'tensor':
        torch.save(torch.zeros(3), path)
    elif kind == 'no tensors':
        torch.save({'epoch': 3, 'meta': {'note': 'no weights'}}, path)
    elif kind == 'other architecture':
        torch.save({'state_dict': {'encoder.0.weight': torch.zeros(4, 4)}}, path)
    elif kind == 'directory':
        path.mkdir()


def load_into(build, tmp_path, kind, name='weights.pth', **kw):
    path = tmp_path / name
    write_checkpoint(path, kind)
    model = build(init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kw)
    model.init_weights()


def resnet_checkpoint(tmp_path, kind, name='weights.pth'):
    load_into(resnet, tmp_path, kind, name)


def swin_checkpoint(tmp_path, kind, name='weights.pth'):
    load_into(swin, tmp_path, kind, name, convert_weights=True)


E = (ValueError, TypeError)
V, T = ValueError, TypeError
I8 = torch.randn(2, 8, 9, 9)
I3 = torch.randn(1, 3, 33, 33)
CASES = [
    # --- acmix_mm.layers.ACmix: settings ---------------------------------------------------
    (layer, dict(in_channels=0), V, 'in_channels'),
    (layer, dict(in_channels='8'), T, 'in_channels'),
    (layer, dict(in_channels=None), T, 'in_channels'),
    (layer, dict(out_channels=0), V, 'out_channels'),
    (layer, dict(out_channels=8.0), T, 'out_channels'),
    (layer, dict(out_channels=10, heads=4), V, 'heads'),
    (layer, dict(heads=0), V, 'heads'),
    (layer, dict(heads=2.0), T, 'heads'),
    (layer, dict(kernel_att=4), V, 'kernel_att'),
    (layer, dict(kernel_att=0), V, 'kernel_att'),
    (layer, dict(kernel_att='7'), T, 'kernel_att'),
    (layer, dict(kernel_conv=2), V, 'kernel_conv'),
    (layer, dict(kernel_conv=-3), V, 'kernel_conv'),
    (layer, dict(stride=0), V, 'stride'),
    (layer, dict(stride=True), T, 'stride'),
    (layer, dict(stride=(2, 2)), T, 'stride'),
    (layer, dict(dilation=1.5), T, 'dilation'),
    (layer, dict(dilation=0), V, 'dilation'),
    # --- the mmcv conv layer type 'ACmix' (dcn=dict(type='ACmix', ...)) ----------------------
    (conv, dict(kernel_size=(3, 5)), V, 'kernel_size'),
    (conv, dict(kernel_size=4), V, 'kernel_size'),
    (conv, dict(kernel_size=(3, 3, 3)), V, 'kernel_size'),
    (conv, dict(stride=(1, 2)), V, 'stride'),
    (conv, dict(stride=0), V, 'stride'),
    (conv, dict(dilation=(2, 1)), V, 'dilation'),
    (conv, dict(groups=2), V, 'groups'),
    (conv, dict(padding=0), V, 'padding'),
    (conv, dict(padding='valid'), V, 'padding'),
    (conv, dict(bias='yes'), T, 'bias'),
    (conv, dict(cfg=dict(heads=3)), V, 'heads'),
    (conv, dict(cfg=dict(kernel_att=2)), V, 'kernel_att'),
    (conv, dict(cfg=dict(kernel_conv=4)), V, 'kernel_conv'),
    (conv, dict(in_channels=0), V, 'in_channels'),
    # --- ACmixResNet ------------------------------------------------------------------------
    (resnet, dict(depth=18), V, 'depth'),
    (resnet, dict(depth='50'), V, 'depth'),
    (resnet, dict(depth=True), V, 'depth'),
    (resnet, dict(num_stages=5), V, 'num_stages'),
    (resnet, dict(num_stages=0), V, 'num_stages'),
    (resnet, dict(num_stages=2.0), T, 'num_stages'),
    (resnet, dict(strides=(1, 2, 2)), V, 'strides'),
    (resnet, dict(strides=(1, 0, 2, 2)), V, 'strides'),
    (resnet, dict(strides=2), T, 'strides'),
    (resnet, dict(dilations=(1, 1, 1, 1, 1)), V, 'dilations'),
    (resnet, dict(num_stages=3, out_indices=(0, 1, 2)), V, 'strides'),
    (resnet, dict(dilations=(1, 1, 2.0, 4)), T, 'dilations'),
    (resnet, dict(out_indices=(0, 4)), V, 'out_indices'),
    (resnet, dict(out_indices=(-1, )), V, 'out_indices'),
    (resnet, dict(out_indices=()), T, 'out_indices'),
    (resnet, dict(out_indices=3), T, 'out_indices'),
    (resnet, dict(out_indices=(1, 1)), V, 'out_indices'),
    (resnet, dict(num_stages=2, strides=(1, 2), dilations=(1, 1)), V, 'out_indices'),
    (resnet, dict(frozen_stages=5), V, 'frozen_stages'),
    (resnet, dict(frozen_stages=-2), V, 'frozen_stages'),
    (resnet, dict(frozen_stages='1'), T, 'frozen_stages'),
    (resnet, dict(style='tf'), V, 'style'),
    (resnet, dict(deep_stem='yes'), T, 'deep_stem'),
    (resnet, dict(avg_down=1), T, 'avg_down'),
    (resnet, dict(norm_eval=1), T, 'norm_eval'),
    (resnet, dict(with_cp=None), T, 'with_cp'),
    (resnet, dict(zero_init_residual='no'), T, 'zero_init_residual'),
    (resnet, dict(contract_dilation=2), T, 'contract_dilation'),
    (resnet, dict(norm_cfg=dict(type='NoSuchNorm')), V, 'norm_cfg'),
    (resnet, dict(norm_cfg='BN'), T, 'norm_cfg'),
    (resnet, dict(norm_cfg=dict(requires_grad=True)), V, 'norm_cfg'),
    (resnet, dict(norm_cfg=dict(type='GN', num_groups=48)), V, 'norm_cfg'),
    (resnet, dict(conv_cfg=dict(type='Conv2d')), V, 'conv_cfg'),
    (resnet, dict(in_channels=0), V, 'in_channels'),
    (resnet, dict(base_channels=0), V, 'base_channels'),
    (resnet, dict(stem_channels=0), V, 'stem_channels'),
    (resnet, dict(base_channels=6), V, 'acmix_cfg.heads'),
    (resnet, dict(acmix_cfg=dict(head=4)), V, 'acmix_cfg'),
    (resnet, dict(acmix_cfg='heads=4'), T, 'acmix_cfg'),
    (resnet, dict(acmix_cfg=dict(heads=5)), V, 'acmix_cfg.heads'),
    (resnet, dict(acmix_cfg=dict(heads=0)), V, 'acmix_cfg.heads'),
    (resnet, dict(acmix_cfg=dict(kernel_att=6)), V, 'acmix_cfg.kernel_att'),
    (resnet, dict(acmix_cfg=dict(kernel_conv=2.0)), T, 'acmix_cfg.kernel_conv'),
    (resnet, dict(multi_grid=(1, 2)), V, 'multi_grid'),
    (resnet, dict(multi_grid=1), T, 'multi_grid'),
    (resnet, dict(plugins=[dict(cfg=dict(type='ContextBlock', ratio=0.25),
                                position='after_conv4')]), V, 'plugins'),
    (resnet, dict(plugins=[dict(cfg=dict(type='ContextBlock', ratio=0.25),
                                position='after_conv3', stages=(True, ))]), V, 'plugins'),
    (resnet, dict(plugins=dict(cfg=dict(type='ContextBlock'))), T, 'plugins'),
    (resnet, dict(dcn=dict(type='DCNv2')), V, 'dcn'),
    (resnet, dict(stage_with_dcn=(False, True, True, True)), V, 'stage_with_dcn'),
    (resnet, dict(pretrained=5), T, 'pretrained'),
    (resnet, dict(pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='b.pth')), V,
     'pretrained'),
    (resnet, dict(init_cfg=dict(type='Pretrained')), V, 'checkpoint'),
    (resnet, dict(init_cfg='a.pth'), T, 'init_cfg'),
    (resnet, dict(heads=4), T, 'heads'),
    # --- ACmixResNetV1c ---------------------------------------------------------------------
    (v1c, dict(deep_stem=False), V, 'deep_stem'),
    (v1c, dict(avg_down=True), V, 'avg_down'),
    (v1c, dict(stem_channels=1), V, 'stem_channels'),
    (v1c, dict(out_indices=(5, )), V, 'out_indices'),
    (v1c, dict(strides=(1, 2), dilations=(1, 1)), V, 'strides'),
    (v1c, dict(acmix_cfg=dict(heads=3)), V, 'acmix_cfg.heads'),
    # --- ACmixSwinTransformer ---------------------------------------------------------------
    (swin, dict(window_size=0), V, 'window_size'),
    (swin, dict(window_size=7.0), T, 'window_size'),
    (swin, dict(depths=(1, 1, 1)), V, 'num_heads'),
    (swin, dict(num_heads=(1, 2, 3)), V, 'num_heads'),
    (swin, dict(num_heads=(1, 2, 0, 4)), V, 'num_heads'),
    (swin, dict(embed_dims=30, num_heads=(4, 6, 12, 24)), V, 'num_heads'),
    (swin, dict(embed_dims=0), V, 'embed_dims'),
    (swin, dict(depths=()), V, 'depths'),
    (swin, dict(depths=(1, 0, 1, 1)), V, 'depths'),
    (swin, dict(depths=4), T, 'depths'),
    (swin, dict(strides=(4, 2, 2)), V, 'strides'),
    (swin, dict(strides=(2, 2, 2, 2)), V, 'strides'),
    (swin, dict(strides=(4, 0, 2, 2)), V, 'strides'),
    (swin, dict(patch_size=0), V, 'patch_size'),
    (swin, dict(patch_size=2), V, 'strides'),
    (swin, dict(in_channels=0), V, 'in_channels'),
    (swin, dict(out_indices=(0, 4)), V, 'out_indices'),
    (swin, dict(out_indices=(-1, )), V, 'out_indices'),
    (swin, dict(out_indices=[]), T, 'out_indices'),
    (swin, dict(frozen_stages=5), V, 'frozen_stages'),
    (swin, dict(frozen_stages=-2), V, 'frozen_stages'),
    (swin, dict(mlp_ratio=0), V, 'mlp_ratio'),
    (swin, dict(mlp_ratio=4.5), T, 'mlp_ratio'),
    (swin, dict(drop_path_rate=1.5), V, 'drop_path_rate'),
    (swin, dict(drop_rate=-0.1), V, 'drop_rate'),
    (swin, dict(attn_drop_rate='0'), T, 'attn_drop_rate'),
    (swin, dict(qk_scale=0), V, 'qk_scale'),
    (swin, dict(qk_scale='auto'), T, 'qk_scale'),
    (swin, dict(qkv_bias='yes'), T, 'qkv_bias'),
    (swin, dict(use_abs_pos_embed=1), T, 'use_abs_pos_embed'),
    (swin, dict(patch_norm=None), T, 'patch_norm'),
    (swin, dict(with_cp='no'), T, 'with_cp'),
    (swin, dict(convert_weights='yes'), T, 'convert_weights'),
    (swin, dict(pretrain_img_size=(224, 224, 3)), V, 'pretrain_img_size'),
    (swin, dict(pretrain_img_size=0), V, 'pretrain_img_size'),
    (swin, dict(pretrain_img_size=2), V, 'pretrain_img_size'),
    (swin, dict(act_cfg=dict(type='NoSuchAct')), V, 'act_cfg'),
    (swin, dict(act_cfg='GELU'), T, 'act_cfg'),
    (swin, dict(norm_cfg=dict(type='BNN')), V, 'norm_cfg'),
    (swin, dict(norm_cfg=dict(type='GN', num_groups=5)), V, 'norm_cfg'),
    (swin, dict(acmix_cfg=dict(kernel=3)), V, 'acmix_cfg'),
    (swin, dict(acmix_cfg=dict(kernel_conv=4)), V, 'acmix_cfg.kernel_conv'),
    (swin, dict(acmix_cfg=dict(fc_bias='yes')), T, 'acmix_cfg.fc_bias'),
    (swin, dict(acmix_cfg=[3]), T, 'acmix_cfg'),
    (swin, dict(init_cfg=[dict(type='Pretrained', checkpoint='a.pth')]), V, 'init_cfg'),
    (swin, dict(init_cfg=dict(type='Pretrained', ckpt='a.pth')), V, 'checkpoint'),
    (swin, dict(pretrained=['a.pth']), T, 'pretrained'),
    (swin, dict(pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='a.pth')), V,
     'pretrained'),
    (swin, dict(heads=(1, 2, 3, 4)), T, 'heads'),
    # --- input tensors ----------------------------------------------------------------------
    (layer_input, dict(x=torch.randn(8, 9, 9)), V, '(B, 8, H, W)'),
    (layer_input, dict(x=torch.randn(2, 4, 9, 9)), V, '(B, 8, H, W)'),
    (layer_input, dict(x=torch.randn(0, 8, 9, 9)), V, 'B >= 1'),
    (layer_input, dict(x=torch.randn(1, 8, 0, 9)), V, 'B >= 1'),
    (layer_input, dict(x=I8.long()), T, 'floating-point'),
    (layer_input, dict(x=I8.numpy()), T, '(B, 8, H, W)'),
    (resnet_input, dict(x=torch.randn(3, 33, 33)), V, '(B, 3, H, W)'),
    (resnet_input, dict(x=torch.randn(1, 1, 33, 33)), V, '(B, 3, H, W)'),
    (resnet_input, dict(x=torch.randn(1, 1, 3, 33, 33)), V, '(B, 3, H, W)'),
    (resnet_input, dict(x=torch.randn(0, 3, 33, 33)), V, 'B >= 1'),
    (resnet_input, dict(x=(I3 * 255).to(torch.uint8)), T, 'floating-point'),
    (swin_input, dict(x=torch.randn(3, 33, 33)), V, '(B, 3, H, W)'),
    (swin_input, dict(x=torch.randn(1, 4, 33, 33)), V, '(B, 3, H, W)'),
    (swin_input, dict(x=torch.randn(0, 3, 33, 33)), V, 'B >= 1'),
    (swin_input, dict(x=I3.int()), T, 'floating-point'),
    (swin_input, dict(x=I3, use_abs_pos_embed=True, pretrain_img_size=64), V, 'use_abs_pos_embed'),
    # --- checkpoint files (init_cfg=dict(type='Pretrained', checkpoint=...)) ----------------
    (resnet_checkpoint, dict(kind=None, name='missing.pth'), FileNotFoundError, 'missing.pth'),
    (resnet_checkpoint, dict(kind='directory', name='a_dir'), FileNotFoundError, 'a_dir'),
    (resnet_checkpoint, dict(kind='empty', name='empty.pth'), V, 'empty.pth'),
    (resnet_checkpoint, dict(kind='truncated', name='cut.pth'), V, 'cut.pth'),
    (resnet_checkpoint, dict(kind='text', name='config.py'), V, 'config.py'),
    (resnet_checkpoint, dict(kind='pickle of a list', name='list.pkl'), V, 'list.pkl'),
    (resnet_checkpoint, dict(kind='tensor', name='tensor.pth'), V, 'tensor.pth'),
    (resnet_checkpoint, dict(kind='no tensors', name='meta.pth'), V, 'meta.pth'),
    (resnet_checkpoint, dict(kind='other architecture', name='bert.pth'), V, 'bert.pth'),
    (swin_checkpoint, dict(kind=None, name='missing.pth'), FileNotFoundError, 'missing.pth'),
    (swin_checkpoint, dict(kind='truncated', name='cut.pth'), V, 'cut.pth'),
    (swin_checkpoint, dict(kind='text', name='notes.txt'), V, 'notes.txt'),
    (swin_checkpoint, dict(kind='other architecture', name='bert.pth'), V, 'bert.pth'),
]


def _shown(value):
    """A setting in a case's id: the shape of arrays, not their random values (so that ids are
    equal in every process)."""
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if hasattr(value, 'shape') and hasattr(value, 'dtype'):
        return f'{type(value).__name__}{tuple(value.shape)}'
    return repr(value)


def _id(case):
    fn, kwargs, _, _ = case
    shown = ', '.join(f'{k}={_shown(v)}' for k, v in kwargs.items())
    return f'{fn.__name__}({shown})'[:90]


@pytest.mark.parametrize('build,settings,error,word', CASES, ids=[_id(c) for c in CASES])
def test_bad_setting_gives_clear_error(build, settings, error, word, tmp_path):
    if build in (resnet_checkpoint, swin_checkpoint):
        settings = dict(settings, tmp_path=tmp_path)
    with pytest.raises(error) as info:
        build(**settings)
    message = str(info.value)
    assert word in message, message
    assert isinstance(info.value, E) or error is FileNotFoundError
    assert not isinstance(info.value, (AssertionError, IndexError, KeyError))

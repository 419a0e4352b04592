"""Swin position tensors from a checkpoint of another window / image size, and the log of
tensors that match by name but not by shape."""
import torch
from mmengine.config import ConfigDict
from mmdet.models.backbones import SwinTransformer as MMDetSwin
from mmpretrain.models.utils import resize_pos_embed

from acmix_mm.models.backbones import ACmixResNet, ACmixSwinTransformer
from acmix_mm.models.utils import pretrained as pretrained_module
from acmix_mm.models.utils import swin_position_resize

TINY = dict(embed_dims=24, depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4), drop_path_rate=0.)
TABLE = 'stages.1.blocks.0.attn.w_msa.relative_position_bias_table'


def randomised_swin(**kwargs):
    torch.manual_seed(0)
    model = ACmixSwinTransformer(**TINY, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def capture_log(monkeypatch):
    """The messages that the loader and the resizer log."""
    lines = []
    for module in (pretrained_module, swin_position_resize):
        monkeypatch.setattr(module, 'print_log', lambda msg, **kw: lines.append(msg))
    return lines


def test_relative_position_tables_resized_as_mmdet_does(tmp_path, monkeypatch):
    source = randomised_swin(window_size=7)
    path = tmp_path / 'window7.pth'
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()
             if not k.endswith('relative_position_index')}  # a buffer that mmdet loads strictly
    torch.save({'state_dict': state}, path)
    lines = capture_log(monkeypatch)

    mmdet = MMDetSwin(**TINY, window_size=5,
                      init_cfg=ConfigDict(type='Pretrained', checkpoint=str(path)))
    mmdet.init_weights()  # mmdet's own bicubic resize of every table
    ours = ACmixSwinTransformer(**TINY, window_size=5,
                                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    ours.init_weights()

    assert source.state_dict()[TABLE].shape == (13 * 13, 2)
    assert ours.state_dict()[TABLE].shape == (9 * 9, 2)
    tables = [k for k in ours.state_dict() if k.endswith('relative_position_bias_table')]
    for key in tables:
        torch.testing.assert_close(ours.state_dict()[key], mmdet.state_dict()[key], rtol=0,
                                   atol=0)
    log = '\n'.join(lines)
    assert f'{TABLE} (169, 2) -> (81, 2)' in log
    assert 'shape mismatch' not in log  # every resized table loaded


def test_absolute_position_embedding_resized_to_the_image_size(tmp_path, monkeypatch):
    source = randomised_swin(use_abs_pos_embed=True, pretrain_img_size=64)  # 16 x 16 patches
    path = tmp_path / 'abs64.pth'
    torch.save(source.state_dict(), path)
    lines = capture_log(monkeypatch)
    model = ACmixSwinTransformer(**TINY, use_abs_pos_embed=True, pretrain_img_size=(32, 48),
                                 init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    stored = source.absolute_pos_embed.detach()
    expected = torch.nn.functional.interpolate(
        stored.reshape(1, 16, 16, 24).permute(0, 3, 1, 2), size=(8, 12), mode='bicubic',
        align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(model.absolute_pos_embed.detach(), expected)
    torch.testing.assert_close(expected, resize_pos_embed(stored, (16, 16), (8, 12), 'bicubic', 0))
    assert 'absolute_pos_embed (1, 256, 24) -> (1, 96, 24)' in '\n'.join(lines)
    assert model(torch.randn(1, 3, 32, 48))[0].shape == (1, 24, 8, 12)


def test_shape_mismatch_is_logged_with_both_shapes(tmp_path, monkeypatch):
    path = tmp_path / 'heads2.pth'
    torch.save(ACmixResNet(26, acmix_cfg=dict(heads=2)).state_dict(), path)
    lines = capture_log(monkeypatch)
    model = ACmixResNet(26, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    log = '\n'.join(lines)
    assert str(path) in log
    assert 'layer1.0.conv2.fc.weight (9, 12, 1, 1) vs checkpoint (9, 6, 1, 1)' in log
    assert 'layer1.0.conv2 (ACmix)' in log  # starts from scratch, by module

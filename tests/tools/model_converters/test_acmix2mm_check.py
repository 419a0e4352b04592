"""``tools/model_converters/acmix2mm.py --check FILE``: what a checkpoint holds, nothing written."""
import os
import sys

import pytest
import torch

import tool_process

from spec_reference import reference_swin_state_dict

from .. import ROOT, load_tool

TOOL_PATH = 'tools/model_converters/acmix2mm.py'
TOOL = os.path.join(ROOT, TOOL_PATH)


class TrainingConfig:
    """Stands for the config object the reference training code pickles beside the weights."""

    def __reduce__(self):
        return (os.system, ('echo code from the checkpoint ran', ))


def test_check_reports_the_released_swin_tiny_and_writes_nothing(tmp_path):
    sd = reference_swin_state_dict(embed=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24),
                                   classes=1000)
    src = tmp_path / 'acmix_swin_tiny_patch4_window7_224.pth'
    torch.save({'model': sd, 'config': TrainingConfig(), 'max_accuracy': 81.9}, src)
    out = tool_process.run([sys.executable, TOOL, '--check', str(src)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert os.listdir(tmp_path) == [src.name]
    assert 'code from the checkpoint ran' not in out.stdout
    assert "layout: the reference code's" in out.stdout
    assert ('architecture: ACmix-Swin-T (embed_dims=96, depths=(2, 2, 6, 2), '
            'num_heads=(3, 6, 12, 24), window_size=7, patch_size=4); classifier: 1000 classes'
            in out.stdout)
    assert 'checkpoints/acmix_swin_tiny_patch4_window7_224.pth' in out.stdout
    assert 'max_accuracy (float)' in out.stdout
    assert "use: as it is by ACmixSwinTransformer(convert_weights=True" in out.stdout
    lines = out.stdout.splitlines()
    assert f'tensors: {len(sd)},' in out.stdout  # every tensor, stored buffers included
    qkv = next(ln for ln in lines if ln.split()[:1] == ['layers.2.blocks.5.attn.qkv.weight'])
    assert qkv.split(None, 1)[1].strip() == '(1152, 384)  float32'


def test_check_recognises_a_converted_resnet(tmp_path, capsys):
    from acmix_mm.models.backbones import ACmixResNet
    from acmix_mm.models.utils import convert_reference_classifier
    state = ACmixResNet(depth=26, acmix_cfg=dict(heads=8)).state_dict()
    state = {k: v for k, v in state.items() if not k.endswith('dep_conv.bias')}
    state.update({'fc.weight': torch.zeros(10, 2048), 'fc.bias': torch.zeros(10)})
    _, converted = convert_reference_classifier(state)
    path = tmp_path / 'converted.pth'
    torch.save({'state_dict': converted}, path)
    assert load_tool('acmix2mm', TOOL_PATH).main(['--check', str(path)]) == 0
    out = capsys.readouterr().out
    assert "layout: acmix_mm's (converted)" in out
    assert ('architecture: ACmix-ResNet-26 (depth=26, stage_blocks=(1, 2, 4, 1), heads=8, '
            'kernel_conv=3); classifier: 10 classes') in out
    assert os.listdir(tmp_path) == ['converted.pth']


def test_check_of_another_checkpoint_fails_with_its_keys(tmp_path, capsys):
    path = tmp_path / 'resnet50.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.weight': torch.zeros(10, 64)}, path)
    assert load_tool('acmix2mm', TOOL_PATH).main(['--check', str(path)]) == 1
    out = capsys.readouterr().out
    assert 'architecture: none matched (not an ACmix checkpoint' in out
    assert 'conv1.weight  (64, 3, 7, 7)  float32' in out


def test_check_takes_no_destination(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_tool('acmix2mm', TOOL_PATH).main(['--check', 'a.pth', str(tmp_path / 'b.pth')])
    assert exit_info.value.code == 2
    assert '--check writes nothing' in capsys.readouterr().err

"""The offline converter, run as a user runs it, and the mmpretrain classifier configs."""
import os
import sys

import pytest
import torch
from mmengine.config import Config

import tool_process
from acmix_mm.models.backbones import ACmixResNet
from spec_reference import reference_swin_state_dict, spec_acmix_swin_classifier

from ...models.backbones.test_acmix_resnet import randomise_, spec_resnet_forward
from ...utils.test_safe_checkpoint import SentinelPayload

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))

# Stands for the yacs config object that the reference training code pickles; unpickling it
# would create a sentinel file, which the test looks for after the converter's process ended.
TrainingConfig = SentinelPayload


def convert(src, dst, *extra):
    tool = os.path.join(ROOT, 'tools/model_converters/acmix2mm.py')
    return tool_process.run([sys.executable, tool, str(src), str(dst), *extra], cwd=ROOT)


def build_classifier(config):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')  # earlier tests may have left another default scope
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/mmpretrain', config))
    return MODELS.build(cfg.model)


@pytest.mark.slow
def test_swin_tiny_release_converts_and_gives_reference_logits(tmp_path):
    sd = reference_swin_state_dict(embed=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24),
                                   classes=1000)
    src, dst = tmp_path / 'acmix_swin_tiny.pth', tmp_path / 'converted.pth'
    sentinel = tmp_path / 'code_ran'
    torch.save({'model': sd, 'config': TrainingConfig(sentinel), 'max_accuracy': 81.9}, src)
    out = convert(src, dst)
    assert out.returncode == 0, out.stderr
    assert 'reference ACmix-swin' in out.stdout and 'norm.weight -> backbone.norm3.weight' in out.stdout
    assert not sentinel.exists()

    model = build_classifier('acmix-swin-tiny_16xb64_in1k.py')
    missing, unexpected = model.load_state_dict(torch.load(dst)['state_dict'], strict=False)
    assert unexpected == [] and all(k.endswith('relative_position_index') for k in missing)
    model = model.double().eval()
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x, mode='tensor')
    ref = spec_acmix_swin_classifier({k: v.double() for k, v in sd.items()}, x, (2, 2, 6, 2),
                                     (3, 6, 12, 24))
    torch.testing.assert_close(logits, ref, rtol=1e-8, atol=1e-8)


def test_resnet_release_converts_and_gives_reference_logits(tmp_path):
    source = randomise_(ACmixResNet(26)).eval()
    state = {f'module.{k}': v for k, v in source.state_dict().items()
             if not k.endswith('dep_conv.bias')}
    with torch.no_grad():
        for m in source.modules():
            if hasattr(m, 'dep_conv'):
                m.dep_conv.bias.zero_()
    state['module.fc.weight'], state['module.fc.bias'] = torch.randn(1000, 2048), torch.randn(1000)
    src, dst = tmp_path / 'acmix_resnet26.pth.tar', tmp_path / 'converted.pth'
    sentinel = tmp_path / 'code_ran'
    torch.save({'state_dict': state, 'epoch': 100, 'config': TrainingConfig(sentinel)}, src)
    out = convert(src, dst)
    assert out.returncode == 0, out.stderr
    assert not sentinel.exists()
    assert 'reference ACmix-resnet' in out.stdout and 'zero dep_conv.bias added: 8' in out.stdout

    model = build_classifier('acmix-resnet26_8xb32_in1k.py')
    missing, unexpected = model.load_state_dict(torch.load(dst)['state_dict'], strict=False)
    assert missing == [] and unexpected == []
    model = model.double().eval()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x, mode='tensor')
        feat = spec_resnet_forward(source.double(), x)[-1].mean((2, 3))
    ref = feat @ state['module.fc.weight'].double().t() + state['module.fc.bias'].double()
    torch.testing.assert_close(logits, ref, rtol=1e-8, atol=1e-8)


def test_converter_refuses_bad_input_without_touching_dst(tmp_path):
    src, dst = tmp_path / 'other.pth', tmp_path / 'dst.pth'
    torch.save({'state_dict': {'encoder.weight': torch.zeros(2)}}, src)
    out = convert(src, dst)
    assert out.returncode != 0 and 'not a reference ACmix checkpoint' in out.stderr
    assert not dst.exists()
    dst.write_bytes(b'precious')
    out = convert(tmp_path / 'missing.pth', dst)
    assert out.returncode != 0 and 'is not a file' in out.stderr
    (tmp_path / 'cut.pth').write_bytes(src.read_bytes()[:100])
    out = convert(tmp_path / 'cut.pth', tmp_path / 'new.pth')
    assert out.returncode != 0 and 'Traceback' not in out.stderr
    assert "cannot read checkpoint" in out.stderr and 'cut.pth' in out.stderr
    torch.save({'model': reference_swin_state_dict(depths=(2, 2, 2, 2))}, src)
    out = convert(src, dst)
    assert out.returncode != 0 and 'pass --force' in out.stderr
    assert dst.read_bytes() == b'precious'

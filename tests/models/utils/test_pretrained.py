"""Loading reference ACmix-ResNet and standard ImageNet ResNet checkpoints through init_cfg."""
import pytest
import torch
from mmdet.models.backbones import ResNet as MMDetResNet

from acmix_mm.layers import shift_kernels
from acmix_mm.models.backbones import ACmixResNet
from acmix_mm.models.utils import load_matching_weights

from ..backbones.test_acmix_resnet import randomise_


def reference_style_checkpoint(model):
    """What the reference training code saves: DataParallel names, a classifier ``fc``, and no
    ``dep_conv.bias`` (its initialisation drops that parameter)."""
    state = {f'module.{k}': v for k, v in model.state_dict().items()
             if not k.endswith('dep_conv.bias')}
    state['module.fc.weight'] = torch.randn(1000, 2048)
    state['module.fc.bias'] = torch.randn(1000)
    return {'state_dict': state, 'epoch': 90, 'best_acc1': 77.8}


def test_reference_checkpoint_loads_and_gives_same_outputs(tmp_path):
    source = randomise_(ACmixResNet(26)).eval()
    with torch.no_grad():
        for m in source.modules():
            if hasattr(m, 'dep_conv'):
                m.dep_conv.bias.zero_()  # the reference has none
    path = tmp_path / 'acmix_resnet26_reference.pth'
    torch.save(reference_style_checkpoint(source), path)

    model = ACmixResNet(26, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 64, 48)
    for out, ref in zip(model(x), source(x)):
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_imagenet_resnet_checkpoint_fills_same_shaped_layers(tmp_path):
    tv = randomise_(MMDetResNet(50), seed=3)  # torchvision / mmpretrain key names
    state = tv.state_dict()
    path = tmp_path / 'resnet50.pth'
    torch.save(state, path)

    model = ACmixResNet(50, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    own = model.state_dict()
    for key in ('conv1.weight', 'bn1.running_var', 'layer1.0.conv1.weight', 'layer3.5.bn3.bias',
                'layer4.0.downsample.0.weight'):
        torch.testing.assert_close(own[key], state[key])
    torch.testing.assert_close(model.layer2[0].conv2.dep_conv.weight, shift_kernels(128, 3))


def test_report_names_acmix_layers_from_scratch():
    state = {f'backbone.{k}': v for k, v in MMDetResNet(50).state_dict().items()}
    report = load_matching_weights(ACmixResNet(50), state, source='mmdet-style')
    assert 'layer1.0.conv2.weight' in report.unused
    assert any(k.startswith('layer4.2.conv2.dep_conv') for k in report.from_scratch)
    assert not any(k.startswith('layer4.2.conv3') for k in report.from_scratch)


def test_checkpoint_matching_nothing_is_an_error(tmp_path):
    path = tmp_path / 'unrelated.pth'
    torch.save({'state_dict': {'encoder.weight': torch.zeros(3)}}, path)
    model = ACmixResNet(26, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match='matches no parameter of ACmixResNet'):
        model.init_weights()

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.backbones import ResNet as MMDetResNet
from mmengine.registry import MODELS as ROOT_MODELS

from acmix_mm.layers import ACmix, shift_kernels
from acmix_mm.models.backbones import ACmixResNet, ACmixResNetV1c
from spec_reference import spec_acmix_from_module


def randomise_(model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if 'running_var' in name else
                        torch.randn_like(t) * 0.2)
    return model


def spec_resnet_forward(model, x):
    """torchvision-style ACmix-ResNet wiring written out by hand, ACmix from the spec."""
    def bn(m, t):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0., m.eps)

    x = F.relu(bn(model.bn1, F.conv2d(x, model.conv1.weight, stride=2, padding=3)))
    x = F.max_pool2d(x, 3, 2, 1)
    outs = []
    for i in range(4):
        for block in getattr(model, f'layer{i + 1}'):
            out = F.relu(bn(block.bn1, F.conv2d(x, block.conv1.weight)))
            out = F.relu(bn(block.bn2, spec_acmix_from_module(block.conv2, out)))
            out = bn(block.bn3, F.conv2d(out, block.conv3.weight))
            if block.downsample is not None:
                conv, norm = block.downsample
                x = bn(norm, F.conv2d(x, conv.weight, stride=conv.stride))
            x = F.relu(out + x)
        outs.append(x)
    return outs


def test_registered_in_all_frameworks():
    from mmdet.registry import MODELS as MMDET
    from mmpretrain.registry import MODELS as MMPRETRAIN
    from mmseg.registry import MODELS as MMSEG
    for registry in (MMDET, MMSEG, MMPRETRAIN):
        assert registry.module_dict['ACmixResNet'] is ACmixResNet
        assert registry.module_dict['ACmixResNetV1c'] is ACmixResNetV1c
    assert ROOT_MODELS.get('ACmix').__mro__[1] is ACmix


@pytest.mark.parametrize('depth,with_head_millions', [(26, 10.49), (38, 14.41), (50, 18.33)])
def test_parameter_count_matches_reference(depth, with_head_millions):
    """The spec's counts (two decimals) are of the reference, whose dep_conv has no bias."""
    params = dict(ACmixResNet(depth).named_parameters())
    n = sum(p.numel() for k, p in params.items() if not k.endswith('dep_conv.bias'))
    assert round((n + 2048 * 1000 + 1000) / 1e6, 2) == with_head_millions
    if depth == 50:
        assert round(n / 1e6, 2) == 16.28  # backbone only


def test_forward_equals_spec_wiring_and_stage_shapes():
    model = randomise_(ACmixResNet(26, acmix_cfg=dict(kernel_att=3))).double().eval()
    x = torch.randn(1, 3, 35, 29, dtype=torch.float64)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(1, 256, 9, 8), (1, 512, 5, 4), (1, 1024, 3, 2),
                                              (1, 2048, 2, 1)]
    for out, ref in zip(outs, spec_resnet_forward(model, x)):
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


def test_every_bottleneck_conv2_is_acmix_with_cfg():
    model = ACmixResNet(50, acmix_cfg=dict(heads=8, kernel_conv=5))
    convs = [b.conv2 for i in range(4) for b in getattr(model, f'layer{i + 1}')]
    assert len(convs) == 16
    assert all(isinstance(c, ACmix) and c.heads == 8 and c.kernel_conv == 5 for c in convs)
    assert [c.stride for c in convs[:4]] == [1, 1, 1, 2]  # stride on the 3x3 (pytorch style)


def test_v1c_has_deep_stem_and_contract_dilation():
    model = ACmixResNetV1c(depth=50, dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),
                           contract_dilation=True)
    assert hasattr(model, 'stem') and not hasattr(model, 'conv1')
    assert model.layer4[0].conv2.dilation == 2 and model.layer4[1].conv2.dilation == 4
    outs = model(torch.randn(1, 3, 33, 33))
    assert outs[3].shape[-2:] == outs[1].shape[-2:] == (5, 5)


def test_frozen_stages_and_norm_eval():
    model = ACmixResNet(26, frozen_stages=1, norm_eval=True)
    model.train()
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert not any(p.requires_grad for p in model.bn1.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert not model.layer3[0].bn2.training
    before = {k: v.clone() for k, v in model.layer1.state_dict().items()}
    loss = sum(o.sum() for o in model(torch.randn(2, 3, 32, 32)))
    loss.backward()
    assert all(p.grad is None for p in model.layer1.parameters())
    for k, v in model.layer1.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_with_cp_gives_same_outputs_and_grads():
    torch.manual_seed(0)
    plain = ACmixResNet(26).double()
    ckpt = ACmixResNet(26, with_cp=True).double()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    weights = [torch.randn(2, 256 * 2**i, 8 // 2**i, 8 // 2**i, dtype=torch.float64)
               for i in range(4)]
    outs = [sum((o * w).sum() for o, w in zip(m.train()(x), weights)) for m in (plain, ckpt)]
    torch.testing.assert_close(outs[0], outs[1])
    for o in outs:
        o.backward()
    torch.testing.assert_close(plain.layer2[0].conv2.fc.weight.grad,
                               ckpt.layer2[0].conv2.fc.weight.grad)


def test_acmix_as_dcn_in_mmdet_resnet():
    model = MMDetResNet(depth=50, dcn=dict(type='ACmix', heads=2),
                        stage_with_dcn=(False, True, True, True))
    assert isinstance(model.layer2[0].conv2, ACmix) and model.layer2[0].conv2.heads == 2
    assert not isinstance(model.layer1[0].conv2, ACmix)
    outs = model(torch.randn(1, 3, 45, 45))
    assert outs[1].shape == (1, 512, 6, 6)


def test_shift_init_survives_default_init_weights():
    model = ACmixResNet(26)
    model.init_weights()
    conv = model.layer3[1].conv2
    torch.testing.assert_close(conv.dep_conv.weight, shift_kernels(256, 3))
    assert conv.rate1.item() == conv.rate2.item() == 0.5
    assert model.layer3[1].bn3.weight.abs().sum() == 0  # zero_init_residual

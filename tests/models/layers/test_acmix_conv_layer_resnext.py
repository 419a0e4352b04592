"""The ``ACmix`` conv type through the frameworks' DCN switch: ResNet yes, ResNeXt no (ACmix has no
grouped form; the error names ``groups``)."""
import pytest
import torch

import acmix_mm  # noqa: F401
from acmix_mm.layers import ACmix


def test_mmdet_resnet_takes_acmix_through_its_dcn_switch():
    from mmdet.models.backbones import ResNet
    net = ResNet(depth=50, dcn=dict(type='ACmix', heads=4),
                 stage_with_dcn=(False, False, False, True))
    assert sum(isinstance(m, ACmix) for m in net.modules()) == 3
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64))[-1].shape == (1, 2048, 2, 2)


@pytest.mark.parametrize('framework', ['mmdet', 'mmseg'])
def test_resnext_is_refused_naming_groups(framework):
    if framework == 'mmdet':
        from mmdet.models.backbones import ResNeXt
    else:
        from mmseg.models.backbones import ResNeXt
    with pytest.raises(ValueError, match=r'`groups=1` only, got groups=32'):
        ResNeXt(depth=50, groups=32, base_width=4, dcn=dict(type='ACmix', heads=4),
                stage_with_dcn=(False, True, True, True))

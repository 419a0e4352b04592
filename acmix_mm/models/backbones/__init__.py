from .acmix_resnet import ACmixResNet, ACmixResNetV1c
from .acmix_swin import ACmixSwinTransformer

__all__ = ['ACmixResNet', 'ACmixResNetV1c', 'ACmixSwinTransformer']

from .ckpt_convert import (acmix_resnet_converter, acmix_swin_converter, convert_reference_classifier,
                           detect_reference_variant, fill_dep_conv_bias)
from .pretrained import PretrainedReport, extract_state_dict, load_matching_weights, read_checkpoint

__all__ = [
    'acmix_resnet_converter', 'acmix_swin_converter', 'convert_reference_classifier',
    'detect_reference_variant', 'fill_dep_conv_bias',
    'PretrainedReport', 'extract_state_dict', 'load_matching_weights', 'read_checkpoint']

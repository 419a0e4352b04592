from .acmix_conv_layer import ACmixConv2d
from .acmix_window_msa import ACmixShiftWindowMSA, ACmixWindowMSA
from .patch_merging import OneCopyPatchMerging

__all__ = ['ACmixConv2d', 'ACmixShiftWindowMSA', 'ACmixWindowMSA', 'OneCopyPatchMerging']

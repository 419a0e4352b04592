"""mmdet's ``PatchMerging`` whose non-overlapping case gathers the patches in one copy."""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.layers.transformer import PatchMerging


class OneCopyPatchMerging(PatchMerging):
    """mmdet's ``PatchMerging`` (same arguments, submodules and state-dict keys, same results).

    Where patches do not overlap (``kernel_size == stride``, dilation 1, ``'corner'`` or no
    padding: Swin's 2x2 merging), the ``(B, H * W, C)`` tokens are regrouped into patches by one
    copy, channel order ``c * kh * kw + i * kw + j`` as ``nn.Unfold`` makes it, instead of
    mmdet's permute, ``nn.Unfold`` (im2col, col2im in the backward) and transpose. Other settings
    run mmdet's forward.
    """

    @classmethod
    def from_patch_merging(cls, merging: PatchMerging) -> 'OneCopyPatchMerging':
        """The same layer as ``merging``, sharing its ``norm`` and ``reduction`` (and leaving
        the random number generator as it was)."""
        sampler = merging.sampler
        padding = sampler.padding if merging.adap_padding is None else \
            merging.adap_padding.padding
        with torch.device('meta'):  # its own reduction is replaced: no draw from the RNG
            new = cls(merging.in_channels, merging.out_channels, sampler.kernel_size,
                      sampler.stride, padding, sampler.dilation, bias=False, norm_cfg=None,
                      init_cfg=merging.init_cfg)
        new.norm, new.reduction = merging.norm, merging.reduction
        return new.train(merging.training)

    def one_copy_applies(self) -> bool:
        sampler = self.sampler
        return (tuple(sampler.kernel_size) == tuple(sampler.stride)
                and tuple(sampler.dilation) == (1, 1) and tuple(sampler.padding) == (0, 0)
                and (self.adap_padding is None or self.adap_padding.padding == 'corner'))

    def forward(self, x: torch.Tensor,
                input_size: Sequence[int]) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Args:
            x: ``(B, H * W, C_in)``.
            input_size: ``(H, W)``.

        Returns:
            ``(B, H_out * W_out, C_out)`` and ``(H_out, W_out)``.
        """
        if not self.one_copy_applies():
            return super().forward(x, input_size)
        b, length, c = x.shape
        h, w = input_size
        if length != h * w:
            raise ValueError(f'x has {length} tokens, input_size {tuple(input_size)} needs '
                             f'{h * w}')
        kh, kw = self.sampler.kernel_size
        x = x.view(b, h, w, c)
        if self.adap_padding is not None:
            pad_h, pad_w = self.adap_padding.get_pad_shape((h, w))
            if pad_h or pad_w:
                x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        out_h, out_w = x.shape[1] // kh, x.shape[2] // kw
        x = x[:, :out_h * kh, :out_w * kw].reshape(b, out_h, kh, out_w, kw, c)
        x = x.permute(0, 1, 3, 5, 2, 4).reshape(b, out_h * out_w, c * kh * kw)
        x = self.norm(x) if self.norm else x
        return self.reduction(x), (out_h, out_w)

"""ACmix in Swin's (shifted) window attention, built on mmdet's ``WindowMSA``/``ShiftWindowMSA``.

``qkv`` is computed once on the whole (padded, cyclically shifted) map; the windows of it feed the
attention path (relative position bias, shift mask, softmax, ``attn @ v``, ``proj``) and the whole
map feeds the convolution path (``fc`` with bias, shift-initialised ``dep_conv``), which is not
passed through ``proj``. ``out = rate1 * attention + rate2 * convolution``, then ``proj_drop``.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmdet.models.backbones.swin import ShiftWindowMSA, WindowMSA
from mmpretrain.models.utils.attention import ShiftWindowMSA as PretrainShiftWindowMSA
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...layers import build_dep_conv, build_fc, conv_path_channels_last, shift_init_
from ...layers._validation import check_heads, check_odd_kernel


class ACmixWindowMSA(WindowMSA):
    """mmdet's ``WindowMSA`` plus the ACmix parameters ``fc``, ``dep_conv``, ``rate1``, ``rate2``.

    Args:
        kernel_conv: odd kernel of the convolution path (3 in the paper).
        fc_bias: bias in ``fc`` (the reference Swin variant has one).
        Others: as mmdet's ``WindowMSA``.
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: Sequence[int],
                 qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 attn_drop_rate: float = 0., proj_drop_rate: float = 0., kernel_conv: int = 3,
                 fc_bias: bool = True, init_cfg: Optional[dict] = None) -> None:
        head_dim = check_heads('embed_dims', embed_dims, num_heads)
        check_odd_kernel('kernel_conv', kernel_conv)
        super().__init__(embed_dims, num_heads, window_size, qkv_bias, qk_scale, attn_drop_rate,
                         proj_drop_rate, init_cfg)
        self.fc = build_fc(num_heads, kernel_conv, bias=fc_bias)
        self.dep_conv = build_dep_conv(embed_dims, head_dim, kernel_conv)
        self.rate1 = nn.Parameter(torch.full((1, ), 0.5))
        self.rate2 = nn.Parameter(torch.full((1, ), 0.5))

    @torch.no_grad()
    def init_weights(self) -> None:
        super().init_weights()
        shift_init_(self.dep_conv)
        self.rate1.fill_(0.5)
        self.rate2.fill_(0.5)

    def convolution(self, qkv: torch.Tensor) -> torch.Tensor:
        """``rate2`` times the convolution path of a channels-last ``qkv`` ``(B, H, W, 3C)``."""
        return self.rate2 * conv_path_channels_last(qkv, self.num_heads, self.fc, self.dep_conv)

    def attend(self, qkv: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Window attention on precomputed ``qkv``, up to ``proj`` (``proj_drop`` comes later).

        Args:
            qkv: ``(num_windows * B, N, 3C)`` for windows of ``N`` tokens.
            mask: ``(num_windows, N, N)`` of 0 / -100, or None.

        Returns:
            ``(num_windows * B, N, C)``.
        """
        b, n, c3 = qkv.shape
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.view(b // num_windows, num_windows, self.num_heads, n, n)
            attn = (attn + mask.unsqueeze(1).unsqueeze(0)).view(-1, self.num_heads, n, n)
        attn = self.attn_drop(self.softmax(attn))
        out = (attn @ v).transpose(1, 2).reshape(b, n, c3 // 3)
        return self.proj(out)


class ACmixShiftWindowMSA(ShiftWindowMSA):
    """mmdet's ``ShiftWindowMSA`` with :class:`ACmixWindowMSA` as ``w_msa``.

    Any ``H x W``: the map is zero-padded to window multiples as in mmdet. As in the reference
    Swin, a block whose map fits in one window (``min(H, W) <= window_size``) does not shift.

    Args:
        kernel_conv, fc_bias: see :class:`ACmixWindowMSA`. Others: as mmdet's ``ShiftWindowMSA``.
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, shift_size: int = 0,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 attn_drop_rate: float = 0., proj_drop_rate: float = 0.,
                 dropout_layer: dict = dict(type='DropPath', drop_prob=0.),
                 kernel_conv: int = 3, fc_bias: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(embed_dims, num_heads, window_size, shift_size, qkv_bias, qk_scale,
                         attn_drop_rate, proj_drop_rate, dropout_layer, init_cfg)
        self.w_msa = ACmixWindowMSA(embed_dims, num_heads, (window_size, window_size), qkv_bias,
                                    qk_scale, attn_drop_rate, proj_drop_rate, kernel_conv,
                                    fc_bias)

    @classmethod
    def from_shift_window_msa(cls, attn: ShiftWindowMSA, **acmix_cfg) -> 'ACmixShiftWindowMSA':
        """The ACmix counterpart of an mmdet ``ShiftWindowMSA``, with the same settings."""
        w_msa = attn.w_msa
        return cls(w_msa.embed_dims, w_msa.num_heads, attn.window_size, attn.shift_size,
                   qkv_bias=w_msa.qkv.bias is not None, qk_scale=w_msa.scale,
                   attn_drop_rate=w_msa.attn_drop.p, proj_drop_rate=w_msa.proj_drop.p,
                   dropout_layer=dict(type='DropPath',
                                      drop_prob=getattr(attn.drop, 'drop_prob', 0.)),
                   **acmix_cfg)

    def forward(self, query: torch.Tensor, hw_shape: Sequence[int]) -> torch.Tensor:
        """Args:
            query: ``(B, H * W, C)``.
            hw_shape: ``(H, W)``.

        Returns:
            ``(B, H * W, C)``.
        """
        b, length, c = query.shape
        h, w = hw_shape
        if length != h * w:
            raise ValueError(f'query has {length} tokens, hw_shape {tuple(hw_shape)} needs {h * w}')
        ws = self.window_size
        x = F.pad(query.view(b, h, w, c), (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))
        h_pad, w_pad = x.shape[1:3]
        shift = self.shift_size if min(h, w) > ws else 0
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        mask = PretrainShiftWindowMSA.get_attn_mask((h_pad, w_pad), ws, shift, x.device)

        msa = self.w_msa
        qkv = msa.qkv(x)  # (B, H_pad, W_pad, 3C)
        if torch.is_grad_enabled():  # training keeps qkv only; the conv path is recomputed
            out_conv = checkpoint(msa.convolution, qkv, use_reentrant=False)
        else:
            out_conv = msa.convolution(qkv)
        windows = self.window_partition(qkv).view(-1, ws * ws, 3 * c)
        out_att = self.window_reverse(msa.attend(windows, mask).view(-1, ws, ws, c), h_pad, w_pad)
        x = msa.proj_drop(msa.rate1 * out_att + out_conv)

        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = x[:, :h, :w, :].reshape(b, h * w, c)
        return self.drop(x)

"""ACmix in Swin's (shifted) window attention, built on mmdet's ``WindowMSA``/``ShiftWindowMSA``.

``qkv`` is computed once on the whole (padded, cyclically shifted) map; the windows of it feed the
attention path (relative position bias, shift mask, softmax, ``attn @ v``, ``proj``) and the whole
map feeds the convolution path (``fc`` with bias, shift-initialised ``dep_conv``), which is not
passed through ``proj``. ``out = rate1 * attention + rate2 * convolution``, then ``proj_drop``.
"""
import functools
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.backbones.swin import ShiftWindowMSA, WindowMSA
from mmpretrain.models.utils.attention import ShiftWindowMSA as PretrainShiftWindowMSA
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...layers import (build_dep_conv, build_fc, conv_path_channels_last, pad_and_roll,
                       roll_and_crop, shift_init_, window_attention)
from ...layers.acmix_triton import fc_bias_map, folded_conv_weight, qkv_channel_order
from ...layers.kernels.conv_path_op import fused_conv_path_applies
from ...layers.projection import project_tokens, recording_graph
from ...layers.window_rows import gather_rows, window_row_index
from ...layers._validation import check_heads, check_int, check_odd_kernel, check_positive_int


def _wrapped(linear: nn.Module) -> bool:
    """Whether ``linear`` must be called as a module: anything but a plain ``nn.Linear`` without
    hooks (a quantised or adapted layer, pruning's or a user's hooks), which the timed product
    would bypass."""
    return (type(linear) is not nn.Linear or bool(linear._forward_hooks)
            or bool(linear._forward_pre_hooks))


def _gathers_rows(x: torch.Tensor) -> bool:
    """Whether the window partition and reverse of ``x`` run as row gathers
    (:mod:`acmix_mm.layers.window_rows`): on the CPU, outside traces (which keep the permutes)."""
    return x.device.type == 'cpu' and not recording_graph()


MASKED_LOGIT = -1e4


def build_shift_mask(padded_hw: Tuple[int, int], window_size: int, shift: int,
                     device: torch.device) -> Optional[torch.Tensor]:
    """Swin's shifted-window mask, ``(num_windows, n, n)``: 0 where query and key lie in one
    region of the shifted map, :data:`MASKED_LOGIT` where not; None without a shift.

    The regions are mmpretrain's (``ShiftWindowMSA.get_attn_mask``), whose mask, like the
    reference Swin's and mmdet's, holds -100. Those logits leave softmax weights of about
    ``exp(-100) = 3.7e-44``, denormal in float32, on which the CPU's ``attn @ v`` product runs
    tens of times slower (denormal operands take microcode assists). At -1e4 the weights are
    exactly 0 in float32 and float64; the reference's are 0 to within 4e-44 of every softmax
    row's sum of 1, far below the rounding of either dtype.
    """
    mask = PretrainShiftWindowMSA.get_attn_mask(padded_hw, window_size, shift, device)
    return None if mask is None else mask.masked_fill(mask != 0, MASKED_LOGIT)


@functools.lru_cache(maxsize=64)
def shift_mask(padded_hw: Tuple[int, int], window_size: int, shift: int,
               device: torch.device) -> Optional[torch.Tensor]:
    """:func:`build_shift_mask`, made once per map size, window, shift and device (it depends on
    nothing else). Shared by every caller, so never modified in place."""
    return build_shift_mask(padded_hw, window_size, shift, device)


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
        head_dim = check_heads('embed_dims', embed_dims, num_heads, heads_name='num_heads')
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
        """``rate2 * convolution path + rate1 * proj.bias`` of a channels-last ``qkv``.

        Args:
            qkv: ``(B, H, W, 3C)``.

        Returns:
            ``(B, H, W, C)``, contiguous. The scaling and the bias are folded into ``dep_conv``.
        """
        proj_bias = None if self.proj.bias is None else self.rate1 * self.proj.bias
        return conv_path_channels_last(qkv, self.num_heads, self.fc, self.dep_conv,
                                       out_scale=self.rate2, out_bias=proj_bias)

    def split_windows(self, qkv: torch.Tensor, window_size: int) -> torch.Tensor:
        """Queries, keys and values of every window and head, in one copy.

        Args:
            qkv: ``(B, H, W, 3C)``, ``H`` and ``W`` multiples of ``window_size``.

        Returns:
            ``(3, B * num_windows * N, ws * ws, d)``: q, k, v, windows in row-major order.
        """
        b, h, w, c3 = qkv.shape
        ws, heads = window_size, self.num_heads
        if _gathers_rows(qkv):
            index, inverse = window_row_index(b, h, w, ws, 3, heads, qkv.device)
            x = gather_rows(qkv.reshape(-1, c3 // (3 * heads)), index, inverse)
            return x.view(3, -1, ws * ws, c3 // (3 * heads))
        x = qkv.view(b, h // ws, ws, w // ws, ws, 3, heads, c3 // (3 * heads))
        return x.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, -1, ws * ws, c3 // (3 * heads))

    def attention_bias(self, mask: Optional[torch.Tensor], windows: int) -> torch.Tensor:
        """Relative position bias plus the shift mask, for every window and head.

        Args:
            mask: ``(num_windows, n, n)`` from :func:`build_shift_mask`, or None.
            windows: ``B * num_windows``.

        Returns:
            ``(B, num_windows, N, n, n)`` or, without ``mask``, ``(B * num_windows, N, n, n)``:
            broadcast views, in the order of :meth:`split_windows`.
        """
        n = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1).contiguous()  # (N, n, n)
        if mask is None:
            return bias.expand(windows, -1, -1, -1)
        bias = mask.unsqueeze(1) + bias  # (num_windows, N, n, n)
        return bias.expand(windows // mask.shape[0], -1, -1, -1, -1)

    def attend(self, qkv: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Softmax attention of every window and head.

        Args:
            qkv: ``(3, M, n, d)`` from :meth:`split_windows`.
            bias: ``(M, n, n)`` (anything that reshapes to it), from :meth:`attention_bias`.

        Returns:
            ``(M, n, d)``, before ``proj``.

        On the CPU, without dropout of the weights, autocast or a recorded graph (which sees the
        operators), this is :func:`~acmix_mm.layers.window_attention` (its backward writes the
        gradients of q, k and v into one tensor); elsewhere the same operators with ``attn_drop``
        and ``softmax``.
        """
        _, m, n, _ = qkv.shape
        bias = bias.reshape(m, n, n)
        if (qkv.device.type == 'cpu' and not torch.is_autocast_enabled('cpu')
                and not recording_graph() and (self.attn_drop.p == 0 or not self.training)):
            return window_attention(qkv, bias, self.scale)
        # unbind: its backward stacks the three gradients in one copy, where indexing's fills a
        # zero (3, ...) tensor per index and sums the three
        q, k, v = qkv.unbind(0)
        attn = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=self.scale)
        return torch.bmm(self.attn_drop(self.softmax(attn)), v)


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
        check_positive_int('window_size', window_size)
        check_int('shift_size', shift_size, minimum=0, maximum=window_size - 1)
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
        padded_hw = (h + (ws - h % ws) % ws, w + (ws - w % ws) % ws)
        shift = self.shift_size if min(h, w) > ws else 0
        x = pad_and_roll(query.view(b, h, w, c), padded_hw, shift)
        if recording_graph():  # sizes may be traced tensors
            mask = build_shift_mask(padded_hw, ws, shift, x.device)
        else:
            mask = shift_mask(padded_hw, ws, shift, x.device)

        if x.is_cuda and not recording_graph():
            x = self.attend_fused(x, mask)
        else:
            x = self.attend_composed(x, mask)
        x = roll_and_crop(self.w_msa.proj_drop(x), (h, w), shift).view(b, h * w, c)
        return self.drop(x)

    def attend_composed(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``rate1 * proj(window attention) + rate2 * conv path`` by PyTorch operators and, on
        the CPU, the fused conv-path kernel.

        Args:
            x: ``(B, H, W, C)`` padded to window multiples and shifted.
            mask: ``(num_windows, n, n)`` shift mask or None.

        Returns:
            ``(B, H, W, C)``, before ``proj_drop``.
        """
        b, h_pad, w_pad, c = x.shape
        ws = self.window_size
        msa = self.w_msa
        if _wrapped(msa.qkv):
            qkv = msa.qkv(x)  # (B, H_pad, W_pad, 3C)
        else:
            qkv = project_tokens(x, msa.qkv.weight, msa.qkv.bias)
        if torch.is_grad_enabled() and not fused_conv_path_applies(qkv, differentiable=True):
            # training keeps qkv only (the fused kernel's backward recomputes by itself)
            out_conv = checkpoint(msa.convolution, qkv, use_reentrant=False)
        else:
            out_conv = msa.convolution(qkv)
        windows = b * (h_pad // ws) * (w_pad // ws)
        heads = msa.attend(msa.split_windows(qkv, ws), msa.attention_bias(mask, windows))
        return self._merge(heads, out_conv, x.shape)

    def attend_fused(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """:meth:`attend_composed` for the GPU: the conv path as one grouped convolution of
        ``qkv`` (``fc`` folded into ``dep_conv``, see :mod:`acmix_mm.layers.acmix_triton`) and the
        window attention through ``scaled_dot_product_attention`` (its fused backends take the
        bias and the shift mask as an additive mask). Same arguments and result; any device.
        """
        b, h_pad, w_pad, c = x.shape
        ws = self.window_size
        msa = self.w_msa
        heads, d = msa.num_heads, c // msa.num_heads
        order = qkv_channel_order(heads, d, x.device)
        bias = None if msa.qkv.bias is None else msa.qkv.bias[order]
        qkv = F.linear(x, msa.qkv.weight[order], bias)  # channel c * 3N + t
        dep = msa.dep_conv
        conv_bias = msa.rate1 * msa.proj.bias if msa.proj.bias is not None else None
        if dep.bias is not None:
            conv_bias = dep.bias * msa.rate2 + (0 if conv_bias is None else conv_bias)
        out_conv = F.conv2d(qkv.permute(0, 3, 1, 2),
                            folded_conv_weight(msa.fc.weight, dep.weight) * msa.rate2,
                            conv_bias, 1, dep.padding, dep.dilation, d)
        if msa.fc.bias is not None:
            bias_map = fc_bias_map(msa.fc.bias, dep.weight, d, (h_pad, w_pad), 1,
                                   dep.padding[0], dep.dilation[0]) * msa.rate2
            out_conv = out_conv + bias_map.to(out_conv.dtype)
        out_conv = out_conv.permute(0, 2, 3, 1)

        windows = b * (h_pad // ws) * (w_pad // ws)
        split = qkv.view(b, h_pad // ws, ws, w_pad // ws, ws, d, 3, heads)
        q, k, v = split.permute(6, 0, 1, 3, 7, 2, 4, 5).reshape(3, windows, heads, ws * ws, d)
        # bias (+ shift mask) of one image, broadcast over the batch: (nW * N | N, n, n)
        groups = 1 if mask is None else mask.shape[0]
        attn_mask = msa.attention_bias(mask, groups).reshape(-1, ws * ws, ws * ws)
        q, k, v = (t.reshape(windows // groups, groups * heads, ws * ws, d) for t in (q, k, v))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask.to(q.dtype),
            dropout_p=msa.attn_drop.p if self.training else 0., scale=msa.scale)
        return self._merge(out, out_conv, x.shape)

    def _merge(self, heads: torch.Tensor, out_conv: torch.Tensor,
               shape: Sequence[int]) -> torch.Tensor:
        """``out_conv + rate1 * proj(heads)`` (proj's bias is already in ``out_conv``).

        Args:
            heads: ``(B * num_windows * N, n, d)`` or ``(B * num_windows, N, n, d)``.
            out_conv: ``(B, H, W, C)``.
            shape: ``(B, H, W, C)``.
        """
        b, h_pad, w_pad, c = shape
        ws = self.window_size
        msa = self.w_msa
        # window reverse and head merge in one copy
        if _gathers_rows(heads):
            index, inverse = window_row_index(b, h_pad, w_pad, ws, 1, msa.num_heads,
                                              heads.device)
            heads = gather_rows(heads.reshape(-1, c // msa.num_heads), inverse, index)
            heads = heads.view(-1, c)
        else:
            heads = heads.reshape(b, h_pad // ws, w_pad // ws, msa.num_heads, ws, ws, -1)
            heads = heads.permute(0, 1, 4, 2, 5, 3, 6).reshape(-1, c)
        weight = (msa.rate1 * msa.proj.weight).to(heads.dtype)
        if heads.is_cuda:
            x = torch.addmm(out_conv.reshape(-1, c), heads, weight.t())
        else:  # the product that the timing picks (see project_tokens), then the sum
            x = project_tokens(heads, weight).add_(out_conv.reshape(-1, c))
        return x.view(b, h_pad, w_pad, c)

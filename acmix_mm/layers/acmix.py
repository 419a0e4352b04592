"""ACmix, ResNet variant: a drop-in replacement for a ``k_conv x k_conv`` convolution.

Pan et al., "On the Integration of Self-Attention and Convolution", CVPR 2022. Submodule and
parameter names, channel layouts and initialisation follow the reference code, so its weights load
unchanged (``conv1, conv2, conv3, conv_p, fc, dep_conv, rate1, rate2``).
"""
import functools
from typing import Optional, Tuple

import torch
from torch import nn

from ._validation import check_heads, check_input, check_odd_kernel, check_positive_int
from .acmix_recompute import recomputed_acmix
from .acmix_triton import acmix_forward_triton
from .conv_path import build_dep_conv, build_fc, conv_path, shift_init_
from .kernels.conv_path_op import fused_conv_path_applies
from .kernels.cpu_extension import run_kernel
from .kernels.sliding_window_op import selected_backend
from .projection import project_1x1, recording_graph
from .sliding_window_attention import sliding_window_attention


def position_grid(height: int, width: int, dtype: torch.dtype,
                  device: torch.device) -> torch.Tensor:
    """Fixed positional grid: channel 0 is ``linspace(-1, 1, W)`` along the width, channel 1
    ``linspace(-1, 1, H)`` along the height.

    Returns:
        ``(1, 2, H, W)``.
    """
    line = _symbolic_linspace if torch.onnx.is_in_onnx_export() else _linspace
    loc_w = line(width, dtype, device).expand(height, width)
    loc_h = line(height, dtype, device)[:, None].expand(height, width)
    return torch.stack([loc_w, loc_h]).unsqueeze(0)


@functools.lru_cache(maxsize=64)
def _shared_position_grid_flat(height: int, width: int, dtype: torch.dtype,
                               device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False), torch.no_grad():
        return position_grid(height, width, dtype, device).view(2, height * width)


def _linspace(steps: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, steps, dtype=dtype, device=device)


def _symbolic_linspace(steps: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``linspace(-1, 1, steps)`` (to round-off) from tensor operations only, so that ONNX
    export keeps ``steps`` dynamic (``torch.linspace`` fixes it to the example's size)."""
    i = torch.arange(steps, dtype=dtype, device=device)
    return i * 2.0 / i.max().clamp(min=1.0) - 1.0


class ACmix(nn.Module):
    """Shared 1x1 projections feeding a sliding-window attention path and a shift-conv path.

    ``out = rate1 * attention + rate2 * convolution``.

    Args:
        in_channels: ``Cin``.
        out_channels: ``C``; ``heads`` must divide it.
        kernel_att: odd attention window ``k_att`` (7 in the paper).
        heads: ``N``, head dim ``d = C // N``.
        kernel_conv: odd kernel ``k_conv`` of the convolution path (3 in the paper).
        stride: output is ``ceil(H / stride) x ceil(W / stride)`` for any ``H, W``.
        dilation: spacing of the attention window and of ``dep_conv`` (the reference supports 1).

    Shape:
        ``(B, Cin, H, W) -> (B, C, ceil(H / stride), ceil(W / stride))``.

    Raises:
        ValueError / TypeError: at construction, for an argument of the wrong type or range
            (named as above); in ``forward``, for an input that is not a non-empty
            floating-point ``(B, Cin, H, W)`` tensor.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_att: int = 7, heads: int = 4,
                 kernel_conv: int = 3, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        check_positive_int('in_channels', in_channels)
        check_positive_int('out_channels', out_channels)
        self.head_dim = check_heads('out_channels', out_channels, heads)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.kernel_att = check_odd_kernel('kernel_att', kernel_att)
        self.kernel_conv = check_odd_kernel('kernel_conv', kernel_conv)
        self.stride = check_positive_int('stride', stride)
        self.dilation = check_positive_int('dilation', dilation)

        self.rate1 = nn.Parameter(torch.empty(1))
        self.rate2 = nn.Parameter(torch.empty(1))
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=1)  # q
        self.conv2 = nn.Conv2d(in_channels, out_channels, kernel_size=1)  # k
        self.conv3 = nn.Conv2d(in_channels, out_channels, kernel_size=1)  # v
        self.conv_p = nn.Conv2d(2, self.head_dim, kernel_size=1)
        self.fc = build_fc(heads, kernel_conv, bias=False)
        self.dep_conv = build_dep_conv(out_channels, self.head_dim, kernel_conv, stride, dilation)
        self.reset_parameters()
        self.tie_projections()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The ACmix-specific initialisation: both rates 0.5 and shift kernels in ``dep_conv``."""
        self.rate1.fill_(0.5)
        self.rate2.fill_(0.5)
        shift_init_(self.dep_conv)

    # mmengine's BaseModule calls ``init_weights`` on children after its own init_cfg.
    init_weights = reset_parameters

    @torch.no_grad()
    def tie_projections(self) -> None:
        """Places ``conv1``, ``conv2``, ``conv3``'s weights in one ``(3C, Cin, 1, 1)`` tensor and
        their biases in one ``(3C,)`` tensor, so that :meth:`projection_weights` reads them as
        one matrix without copying (the copy took a fifth of the layer's inference time at 512
        channels, 7x7). The parameters stay separate ``nn.Parameter`` objects (their ``.data``
        becomes a slice), so optimizers, hooks and ``state_dict`` keys see no change. Called at
        construction, after ``.to()`` / ``.half()`` and the like (:meth:`_apply`) and after
        unpickling or ``copy.deepcopy`` (:meth:`__setstate__`); where the three differ in shape,
        dtype or device, nothing changes."""
        self.__dict__.pop('_tied_projections', None)
        convs = (self.conv1, self.conv2, self.conv3)
        joint = []
        for name in ('weight', 'bias'):
            params = [getattr(conv, name) for conv in convs]
            first = params[0]
            if not all(isinstance(p, nn.Parameter) and p.shape == first.shape
                       and p.dtype == first.dtype and p.device == first.device for p in params):
                return
            joint.append(torch.cat(params))
            for i, param in enumerate(params):
                param.data = joint[-1][i * len(first):(i + 1) * len(first)]
        weight, bias = joint
        self.__dict__['_tied_projections'] = (weight.view(len(weight), -1), bias)

    def _apply(self, fn, recurse=True):
        module = super()._apply(fn, recurse)
        if self._tied_projection_weights() is None:  # e.g. share_memory_() keeps the tie
            self.tie_projections()
        return module

    def __getstate__(self):
        state = super().__getstate__().copy()
        state.pop('_tied_projections', None)  # views of the parameters' memory: made anew
        state.pop('_projection_buffers', None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.tie_projections()

    def _tied_projection_weights(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """The ``(3C, Cin)`` weight and ``(3C,)`` bias that :meth:`tie_projections` made, where
        every parameter still sits at its place in them (contiguous, of their dtype: the tie's
        tensors keep that memory alive, so nothing else can be there); None where one does not
        (e.g. its ``.data`` replaced)."""
        tied = self.__dict__.get('_tied_projections')
        if tied is None:
            return None
        modules = self._modules  # not nn.Module.__getattr__: 2 us an attribute, per call
        for joint, name in zip(tied, ('weight', 'bias')):
            base, count = joint.data_ptr(), joint.numel() // 3
            step = count * joint.element_size()
            for i, conv in enumerate(('conv1', 'conv2', 'conv3')):
                param = modules[conv]._parameters.get(name)
                if (param is None or param.data_ptr() != base + i * step
                        or param.dtype != joint.dtype or param.numel() != count
                        or not param.is_contiguous()):
                    return None
        return tied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input('ACmix', x, self.in_channels)
        if self._triton_path_applies(x):
            h, w = x.shape[-2:]
            return acmix_forward_triton(self, x, self.position_term(h, w, x.dtype, x.device))
        if torch.is_grad_enabled() and not recording_graph():
            params = tuple(self.parameters())
            if not (x.requires_grad or any(p.requires_grad for p in params)):
                # nothing to differentiate (a frozen stage, e.g. mmdet's frozen_stages): the
                # inference path, as autograd would record nothing either
                with torch.no_grad():
                    return self.mix_paths(self.project(x))
            if x.dtype == self.conv1.weight.dtype:
                # Training keeps only x; the backward recomputes what it needs from it, in x's
                # dtype (an input of another dtype than the parameters, as autocast makes of the
                # previous layer's output, trains through the composition under autograd).
                return recomputed_acmix(self, x, params)
        return self.mix_paths(self.project(x))

    def projection_weights(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``conv1``, ``conv2``, ``conv3`` as one ``(3C, Cin)`` weight and ``(3C,)`` bias.

        Without grad mode on the CPU (inference, and the training path's recomputation) they are
        views of the parameters' memory (:meth:`tie_projections`). Elsewhere where no gradient
        flows to them, and where the tie no longer holds, they are copied into the same buffers
        on every call: a freshly allocated weight of megabytes made oneDNN's convolution fault
        its pages in again on every call (up to 8x its time at 512 channels, 7x7).
        """
        if not torch.is_grad_enabled() and not recording_graph():  # inference: checked first
            tied = self._tied_projection_weights()
            if tied is not None and tied[0].device.type == 'cpu':
                return tied
        convs = (self.conv1, self.conv2, self.conv3)
        weights = [conv.weight for conv in convs]
        biases = [conv.bias for conv in convs]
        first = weights[0]
        if (first.device.type != 'cpu' or recording_graph()
                or (torch.is_grad_enabled() and any(p.requires_grad for p in weights + biases))):
            return torch.cat(weights).view(-1, self.in_channels), torch.cat(biases)
        buffers = self.__dict__.get('_projection_buffers')
        shape = (3 * self.out_channels, self.in_channels, 1, 1)
        if (buffers is None or buffers[0].shape != shape or buffers[0].dtype != first.dtype
                or buffers[0].device != first.device):
            with torch.inference_mode(False):  # also written outside inference mode later
                buffers = (first.new_empty(shape), first.new_empty(3 * self.out_channels))
            self.__dict__['_projection_buffers'] = buffers
        torch.cat(weights, out=buffers[0])
        torch.cat(biases, out=buffers[1])
        return buffers[0].view(-1, self.in_channels), buffers[1]

    @staticmethod
    def _triton_path_applies(x: torch.Tensor) -> bool:
        """Whether :mod:`.acmix_triton` runs this layer: where the attention operator would use
        Triton (CUDA), outside tracing and compilation (which see the operators)."""
        if recording_graph():
            return False
        return selected_backend(x.device, x.dtype) == 'triton'

    def project(self, x: torch.Tensor,
                weights: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """Stage I: ``q, k, v`` of ``x`` ``(B, Cin, H, W)`` as one ``(B, 3C, H, W)`` map.

        One product for the three 1x1 projections (:func:`.projection.project_1x1`); q, k, v
        are views of its output. ``weights``: :meth:`projection_weights`' result where the
        caller has it already.
        """
        weight, bias = self.projection_weights() if weights is None else weights
        if weight.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            weight, bias = weight.to(x.dtype), bias.to(x.dtype)  # e.g. bfloat16 inputs
        return project_1x1(x, weight, bias)

    @staticmethod
    def position_grid_flat(height: int, width: int, dtype: torch.dtype,
                           device: torch.device) -> torch.Tensor:
        """:func:`position_grid` as ``(2, H * W)``; read-only: outside recorded graphs it is
        shared by every call with the same arguments (the grid is a constant)."""
        if recording_graph():
            return position_grid(height, width, dtype, device).view(2, height * width)
        return _shared_position_grid_flat(height, width, dtype, torch.device(device))

    def position_term(self, height: int, width: int, dtype: torch.dtype,
                      device: torch.device) -> torch.Tensor:
        """``conv_p`` of the position grid, ``(d, H, W)``.

        The spec's logit ``q(p) . (k(o) + pe(p) - pe(o))`` differs from ``q(p) . (k(o) - pe(o))``
        by a term constant over the window, which the softmax removes: only ``pe(o)`` is kept.
        """
        grid = self.position_grid_flat(height, width, dtype, device)
        pe = torch.addmm(self.conv_p.bias.view(-1, 1), self.conv_p.weight.view(-1, 2), grid)
        return pe.view(-1, height, width)

    def mix_paths(self, qkv: torch.Tensor) -> torch.Tensor:
        """``rate1 * attention + rate2 * convolution`` from ``qkv`` ``(B, 3C, H, W)``.

        Where no gradient is recorded and the C++ kernels run (see :meth:`_fused_stage_two`),
        one call of the extension does it all; otherwise the operators below, with the same
        kernels where they apply.
        """
        b, _, h, w = qkv.shape
        if self._fused_stage_two(qkv):
            (conv_p_w, conv_p_b, fc_w, fc_b, dep_w, dep_b, rate1,
             rate2) = self._stage_two_parameters()
            return run_kernel(
                'acmix_mix_paths', qkv.contiguous(),
                self.position_grid_flat(h, w, qkv.dtype, qkv.device), conv_p_w, conv_p_b, fc_w,
                fc_b, dep_w, dep_b, rate1.item(), rate2, self.heads, self.kernel_att,
                self.stride, self.dilation)
        n, d = self.heads, self.head_dim
        q, k, v = qkv.view(b, 3, n, d, h, w).unbind(1)
        att = sliding_window_attention(q, k, v, self.kernel_att, self.stride, self.dilation,
                                       pe=self.position_term(h, w, qkv.dtype, qkv.device),
                                       scale=float(d) ** -0.5)
        out_att = att.view(b, self.out_channels, att.shape[-2], att.shape[-1])
        # rate2 is folded into dep_conv's weight; the conv path adds rate1 * attention as it
        # writes its result (planar, as the attention's)
        return conv_path(qkv.view(b, 3 * n, d, h, w), self.fc, self.dep_conv, self.rate2,
                         residual=out_att, residual_scale=self.rate1)

    def _fused_stage_two(self, qkv: torch.Tensor) -> bool:
        """Whether :meth:`mix_paths` runs as one call of the C++ extension: no gradient recorded,
        no graph recorded (traces must see the operators), and the conv-path kernel applicable
        to ``qkv`` and stage II's parameters (:func:`.kernels.conv_path_op.fused_conv_path_applies`:
        one dtype, the attention operator's backend ``cpp``)."""
        if torch.is_grad_enabled() or recording_graph():
            return False
        conv_p_w, _, fc_w, _, dep_w, _, rate1, rate2 = self._stage_two_parameters()
        return fused_conv_path_applies(qkv, conv_p_w, fc_w, dep_w, rate1, rate2)

    def _stage_two_parameters(self) -> Tuple[Optional[torch.Tensor], ...]:
        """``conv_p``'s weight and bias, ``fc``'s, ``dep_conv``'s, ``rate1`` and ``rate2``, read
        from the parameter dicts: ``nn.Module.__getattr__`` costs about 2 us an attribute, and
        the inference path asks for them twice a call."""
        modules, own = self._modules, self._parameters
        conv_p = modules['conv_p']._parameters
        fc = modules['fc']._parameters
        dep_conv = modules['dep_conv']._parameters
        return (conv_p['weight'], conv_p['bias'], fc['weight'], fc.get('bias'),
                dep_conv['weight'], dep_conv.get('bias'), own['rate1'], own['rate2'])

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_att={self.kernel_att}, '
                f'heads={self.heads}, kernel_conv={self.kernel_conv}, stride={self.stride}, '
                f'dilation={self.dilation}')

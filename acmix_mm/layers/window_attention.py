"""Softmax attention of many small windows from one packed ``(3, M, n, d)`` tensor of q, k, v.

Autograd through ``q, k, v = packed.unbind(0)`` and the products stacks the three gradients into
a new tensor in the backward (one more copy of ``qkv``). Here the backward writes them into one
buffer directly, and keeps what autograd would keep (the packed input and the weights).
"""
import torch
from torch.autograd.function import once_differentiable


def window_attention(qkv: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
    """``softmax(q @ k^T * scale + bias) @ v`` for every window and head.

    Args:
        qkv: ``(3, M, n, d)``: queries, keys and values of ``M`` windows (and heads) of ``n``
            positions.
        bias: ``(M, n, n)``, any strides (e.g. a broadcast position bias); its gradient flows.
        scale: multiplies the logits ``q @ k^T``.

    Returns:
        ``(M, n, d)``.

    Under autograd the backward is a custom one without double backward (``create_graph=True``
    through it raises).
    """
    if qkv.dim() != 4 or qkv.shape[0] != 3 or bias.shape != (qkv.shape[1], qkv.shape[2],
                                                             qkv.shape[2]):
        raise ValueError(f'qkv must be (3, M, n, d) and bias (M, n, n), got {tuple(qkv.shape)} '
                         f'and {tuple(bias.shape)}')
    if torch.is_grad_enabled() and (qkv.requires_grad or bias.requires_grad):
        return _WindowAttention.apply(qkv, bias, scale)
    return _forward(qkv, bias, scale)[0]


def _forward(qkv, bias, scale):
    q, k, v = qkv.unbind(0)
    weights = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale).softmax(-1)
    return torch.bmm(weights, v), weights


class _WindowAttention(torch.autograd.Function):

    @staticmethod
    def forward(ctx, qkv, bias, scale):
        out, weights = _forward(qkv, bias, scale)
        ctx.save_for_backward(qkv, weights)
        ctx.scale = scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        qkv, weights = ctx.saved_tensors
        q, k, v = qkv.unbind(0)
        grad = torch.empty_like(qkv, memory_format=torch.contiguous_format)
        grad_q, grad_k, grad_v = grad.unbind(0)
        grad_out = grad_out.contiguous()
        torch.bmm(weights.transpose(1, 2), grad_out, out=grad_v)
        grad_weights = torch.bmm(grad_out, v.transpose(1, 2))
        grad_logits = torch._softmax_backward_data(grad_weights, weights, -1, weights.dtype)
        ignored = grad_logits.new_zeros(())
        torch.baddbmm(ignored, grad_logits, k, beta=0, alpha=ctx.scale, out=grad_q)
        torch.baddbmm(ignored, grad_logits.transpose(1, 2), q, beta=0, alpha=ctx.scale,
                      out=grad_k)
        return grad, grad_logits, None

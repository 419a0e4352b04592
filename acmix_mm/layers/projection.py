"""Stage I of ACmix: several 1x1 projections of one map as one product."""
import torch
import torch.nn.functional as F

# On the CPU, oneDNN's 1x1 convolution (float32) runs about 1.7x faster than a matrix product on
# maps of up to 32x32 positions, but erratically (2x-10x slower) on larger ones, where the batched
# matrix product is steady (tools/analysis_tools/benchmark_backbones.py, qkv-1x1 cases).
CONV_MAX_POSITIONS = 32 * 32


def project_1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``weight @ x + bias`` at every position: a 1x1 convolution.

    Args:
        x: ``(B, Cin, H, W)``.
        weight: ``(Cout, Cin)``.
        bias: ``(Cout,)``.

    Returns:
        ``(B, Cout, H, W)``, contiguous.
    """
    b, c_in, h, w = x.shape
    if x.device.type != 'cpu' or (x.dtype == torch.float32 and h * w <= CONV_MAX_POSITIONS):
        return F.conv2d(x, weight.view(-1, c_in, 1, 1), bias)
    # bmm with the weight expanded: torch.matmul would run this as a slow transposed product.
    out = torch.baddbmm(bias.view(1, -1, 1), weight.expand(b, -1, -1), x.reshape(b, c_in, h * w))
    return out.view(b, -1, h, w)

"""``nn.Linear`` whose product is :func:`~acmix_mm.layers.projection.project_tokens`'s timed
choice: on the CPU in float32, the faster of PyTorch's BLAS product and oneDNN's for its size.

Where the choice matters most is few tokens and wide layers: for Swin-T's stage-4 feed-forward
layers at 224x224 (49 tokens, 768 <-> 3072 channels) oneDNN's product took 0.63x-0.67x of the BLAS
product's time at 2 threads on an AMD EPYC (AVX2); at 196 tokens and more they were within 15% of
each other either way. Elsewhere (other devices and dtypes, autocast, recorded graphs,
deterministic runs) the layer is ``F.linear``.
"""
import torch
from torch import nn

from .projection import project_tokens


class TunedLinear(nn.Linear):
    """``nn.Linear`` (same arguments, parameters and state-dict keys) computed by
    :func:`~acmix_mm.layers.projection.project_tokens`.

    Shape:
        ``(..., in_features)`` -> ``(..., out_features)``, contiguous.

    Under autograd there is no double backward (``create_graph=True`` through it raises), as for
    ``project_tokens``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return project_tokens(x, self.weight, self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> 'TunedLinear':
        """A ``TunedLinear`` holding ``linear``'s parameters (the same tensors, not copies), in
        ``linear``'s training mode."""
        tuned = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device='meta')
        tuned.weight = linear.weight
        tuned.bias = linear.bias
        return tuned.train(linear.training)

"""One training step of a small ACmix model on each rank, through acmix_mm's CPU launcher set-up
(gloo, :class:`AnyDeviceDistributedDataParallel`, mmengine's ``train_step``), as under torchrun.

    python -m torch.distributed.run --nproc_per_node 2 tests/engine/ddp_step_worker.py OUT_DIR

Each rank builds its model from its own seed (the wrapper must broadcast rank 0's weights), steps
on its half of :func:`combined_batch` and saves its parameters as ``OUT_DIR/rank{RANK}.pth``.
"""
import os
import sys

import torch
from mmengine.model import BaseModel
from torch import nn


class TinyACmixNet(BaseModel):
    """ACmix, then a linear head; no batch statistics, so a split batch equals the whole."""

    def __init__(self) -> None:
        super().__init__()
        from acmix_mm.layers import ACmix
        self.acmix = ACmix(3, 4, kernel_att=3, heads=2, stride=2)
        self.head = nn.Linear(4, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.head(self.acmix(inputs).mean((2, 3))).squeeze(1)
        if mode == 'loss':
            return dict(loss=((out - labels)**2).mean())
        return out


def combined_batch(size: int = 4) -> dict:
    g = torch.Generator().manual_seed(123)
    return dict(inputs=torch.randn(size, 3, 9, 9, generator=g),
                labels=torch.randn(size, generator=g))


def sgd(model: nn.Module):
    from mmengine.optim import OptimWrapper
    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9))


def main(out_dir: str) -> None:
    from mmengine.config import Config
    from mmengine.registry import MODEL_WRAPPERS

    from acmix_mm.engine import setup_cpu_distributed
    cfg = Config(dict(launcher='pytorch'))
    assert setup_cpu_distributed(cfg)
    rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    torch.manual_seed(rank)  # different weights on every rank until the wrapper broadcasts
    model = TinyACmixNet()
    ddp = MODEL_WRAPPERS.build(dict(cfg.model_wrapper_cfg, module=model))
    batch = combined_batch()
    per_rank = batch['inputs'].shape[0] // world
    mine = slice(rank * per_rank, (rank + 1) * per_rank)
    ddp.train_step(dict(inputs=batch['inputs'][mine], labels=batch['labels'][mine]), sgd(model))
    torch.save(model.state_dict(), os.path.join(out_dir, f'rank{rank}.pth'))


if __name__ == '__main__':
    main(sys.argv[1])

"""Mixed precision on the CPU: a bfloat16-autocast training step of both backbones gives finite
losses and gradients and outputs within 2e-2 of float32 (relative to each output's norm);
tools/train.py --amp trains with it."""
import copy
import os
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper

import tool_process
from acmix_mm.datasets import generate
from acmix_mm.engine import CPUAmpOptimWrapper, configure_amp
from acmix_mm.models.backbones import ACmixResNet, ACmixSwinTransformer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
RTOL = 2e-2

BACKBONES = {
    'resnet': lambda: ACmixResNet(depth=26, stem_channels=16, base_channels=16),
    'swin': lambda: ACmixSwinTransformer(embed_dims=32, depths=(2, 2, 2, 2),
                                         num_heads=(1, 2, 4, 8)),
}


def training_step(model, x, optim_wrapper):
    """Forward in the wrapper's context, a loss over every output, backward and update;
    returns the outputs (float32) and the gradients (before the update). The generator is
    seeded first, so that both precisions drop the same paths (Swin's stochastic depth)."""
    torch.manual_seed(1)
    with optim_wrapper.optim_context(model):
        outs = model(x)
        loss = sum((o.float() ** 2).mean() for o in outs)
    optim_wrapper.backward(loss)
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    optim_wrapper.step()
    optim_wrapper.zero_grad()
    return loss.detach(), [o.detach().float() for o in outs], grads


@pytest.mark.parametrize('name', list(BACKBONES))
def test_bfloat16_training_step_is_finite_and_close_to_float32(name):
    torch.manual_seed(0)
    model = BACKBONES[name]()
    model.init_weights()
    model.train()
    reference = copy.deepcopy(model)
    x = torch.randn(2, 3, 64, 64)
    amp = CPUAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.01))
    fp32 = OptimWrapper(optimizer=torch.optim.SGD(reference.parameters(), lr=0.01))

    with amp.optim_context(model), torch.no_grad():
        assert model(x)[0].dtype == torch.bfloat16  # autocast is on
    loss, outs, grads = training_step(model, x, amp)
    _, outs32, grads32 = training_step(reference, x, fp32)

    assert torch.isfinite(loss) and len(grads) == len(grads32) > 0
    assert all(torch.isfinite(g).all() for g in grads)
    for out, out32 in zip(outs, outs32):  # every stage, relative to its norm
        rel = ((out - out32).norm() / out32.norm()).item()
        assert rel < RTOL, rel


@pytest.mark.parametrize('cuda', [False, True])
def test_configure_amp(cuda):
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', loss_scale=512,
                                         optimizer=dict(type='SGD', lr=0.1))))
    note = configure_amp(cfg, cuda_available=cuda)
    if cuda:
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 512
    else:
        assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper' and 'loss_scale' not in cfg.optim_wrapper
        assert 'bfloat16' in note


@pytest.mark.slow
def test_train_amp_on_the_cpu(tmp_path):
    ade = generate(str(tmp_path / 'data'), num_train=4, num_val=2, size=64)['ade']
    options = [f'{k}.dataset.data_root={ade}' for k in ('train_dataloader', 'val_dataloader',
                                                        'test_dataloader')]
    out = tool_process.run(
        [sys.executable, 'tools/train.py', 'configs/demo/upernet_acmix-swin-slim_demo-shapes.py',
         '--amp', '--work-dir', str(tmp_path / 'work'), '--cfg-options', *options,
         'model.data_preprocessor.size=(64,64)', 'train_dataloader.batch_size=2',
         'train_cfg.max_iters=2', 'train_cfg.val_interval=100', 'default_hooks.logger.interval=1'],
        cwd=ROOT, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert 'bfloat16 autocast on the CPU' in log
    assert 'Iter(train) [2/2]' in log and 'loss: nan' not in log

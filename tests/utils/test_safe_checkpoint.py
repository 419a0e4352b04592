"""Resuming an mmengine run under torch's weights-only loading, without arbitrary unpickling."""
import pickle

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import acmix_mm  # noqa: F401  (installs the allow-list)
from acmix_mm.layers import ACmix


class TinyACmixNet(BaseModel):
    def __init__(self):
        super().__init__()
        self.acmix = ACmix(3, 4, kernel_att=3, heads=2)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.acmix(inputs).mean((1, 2, 3))
        if mode == 'loss':
            return dict(loss=((out - labels) ** 2).mean())
        return out


class RandomImages(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(3, 8, 8, generator=g), labels=torch.tensor(float(i % 2)))


def make_runner(work_dir, max_iters, resume=False):
    return Runner(
        model=TinyACmixNet(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=RandomImages(), sampler=dict(type='DefaultSampler'),
                              batch_size=2, collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[2], by_epoch=False),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume, randomness=dict(seed=0))


def test_resume_under_weights_only_loading(tmp_path):
    make_runner(tmp_path, 2).train()
    ckpt = tmp_path / 'iter_2.pth'
    assert ckpt.exists()
    state = torch.load(ckpt, map_location='cpu')  # weights_only=True is torch's default
    assert state['meta']['iter'] == 2 and 'message_hub' in state

    runner = make_runner(tmp_path, 4, resume=True)
    runner.train()
    assert runner.iter == 4
    assert torch.load(tmp_path / 'iter_4.pth')['meta']['iter'] == 4


class Payload:
    def __reduce__(self):
        return (print, ('pwned', ))


def test_arbitrary_objects_are_still_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    with open(path, 'wb') as f:
        torch.save({'state_dict': {}, 'evil': Payload()}, f, pickle_module=pickle)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


class Attribute:
    """Pickles as ``getattr(OrderedDict, 'fromkeys')``: getattr on an allowed class."""

    def __reduce__(self):
        from collections import OrderedDict
        return (getattr, (OrderedDict, 'fromkeys'))


def test_getattr_resolves_history_buffer_methods_only(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'f': Attribute()}, path)
    with pytest.raises(pickle.UnpicklingError, match='only HistoryBuffer'):
        torch.load(path)

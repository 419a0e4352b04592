"""Resuming an mmengine run under torch's weights-only loading, without arbitrary unpickling."""
import copy
import pickle

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import acmix_mm  # noqa: F401  (installs the allow-list)
from acmix_mm.layers import ACmix
from acmix_mm.utils.safe_checkpoint import UnknownPickledObject, load_checkpoint_with_placeholders


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


class RecordResume(Hook):
    """Records what the run starts from (after any resume) and which iterations it trains."""

    def __init__(self):
        self.start = None
        self.trained = []

    def before_train(self, runner):
        self.start = dict(model=copy.deepcopy(runner.model.state_dict()),
                          optimizer=copy.deepcopy(runner.optim_wrapper.state_dict()),
                          lr=runner.optim_wrapper.get_lr()['lr'][0])

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.trained.append(runner.iter + 1)  # 1-based, as in the log's Iter(train) [i/n]


def make_runner(work_dir, max_iters, resume=False):
    return Runner(
        model=TinyACmixNet(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=RandomImages(), sampler=dict(type='DefaultSampler'),
                              batch_size=2, collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1], by_epoch=False),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[RecordResume()], resume=resume, randomness=dict(seed=0))


def recorder(runner):
    return next(h for h in runner.hooks if isinstance(h, RecordResume))


def test_resume_under_weights_only_loading(tmp_path):
    make_runner(tmp_path, 2).train()
    ckpt = tmp_path / 'iter_2.pth'
    assert ckpt.exists()
    state = torch.load(ckpt, map_location='cpu')  # weights_only=True is torch's default
    assert state['meta']['iter'] == 2 and 'message_hub' in state

    runner = make_runner(tmp_path, 4, resume=True)
    runner.train()
    record = recorder(runner)
    # what only a real resume gives: training goes on at iteration 3, from the saved weights,
    # momentum buffers and the learning rate after the milestone at 1 (a fresh run: 0.1)
    assert record.trained == [3, 4]
    for key, value in state['state_dict'].items():
        torch.testing.assert_close(record.start['model'][key], value, rtol=0, atol=0)
    saved, restored = state['optimizer']['state'], record.start['optimizer']['state']
    assert saved and saved.keys() == restored.keys()
    for i in saved:
        torch.testing.assert_close(restored[i]['momentum_buffer'], saved[i]['momentum_buffer'],
                                   rtol=0, atol=0)
    assert record.start['lr'] == pytest.approx(0.01)
    assert torch.load(tmp_path / 'iter_4.pth')['meta']['iter'] == 4


class SentinelPayload:
    """Unpickling it runs code that creates ``sentinel``: visible from any process."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (exec, (f'open({self.sentinel!r}, "w").write("code from the checkpoint ran")', ))


def test_arbitrary_objects_are_still_refused(tmp_path):
    sentinel, path = tmp_path / 'ran', tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'evil': SentinelPayload(sentinel)}, path, pickle_module=pickle)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    assert not sentinel.exists()


def test_placeholder_unpickler_runs_no_code(tmp_path):
    sentinel, path = tmp_path / 'ran', tmp_path / 'release.pth'
    weights = {'layer.weight': torch.randn(3, 2)}
    torch.save({'model': weights, 'config': SentinelPayload(sentinel), 'acc': 81.9}, path)
    torch.load(path, weights_only=False)  # the payload is live: plain unpickling runs it
    assert sentinel.exists()
    sentinel.unlink()

    ckpt = load_checkpoint_with_placeholders(str(path))
    assert not sentinel.exists()
    assert isinstance(ckpt['config'], UnknownPickledObject)
    assert ckpt['config'].qualname.endswith('.exec') and ckpt['acc'] == 81.9
    torch.testing.assert_close(ckpt['model']['layer.weight'], weights['layer.weight'])


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

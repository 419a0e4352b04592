"""No code from a checkpoint, on every path that reads one: a crafted file whose unpickling
would run ``touch SENTINEL`` (an effect visible across processes) is read by each path; the
file is never created, and the error (or, for the restricted unpickler, the warning) names the
checkpoint."""
import functools
import http.server
import os
import pickle
import sys
import threading

import pytest
import torch
from mmengine.runner import Runner

import tool_process
import acmix_mm  # noqa: F401  (weights-only loaders)
from acmix_mm.datasets import generate
from acmix_mm.models.backbones import ACmixResNet, ACmixSwinTransformer
from acmix_mm.utils import UnknownObjectsWarning

from .test_safe_checkpoint import make_runner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


class RunsCommand:
    """Unpickles as ``os.system('touch SENTINEL')``."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.system, (f'touch {self.sentinel}', ))


@pytest.fixture
def crafted(tmp_path):
    """(checkpoint path, sentinel path): a checkpoint with real weights of a small ACmix-ResNet
    and the payload next to them. Checked once with plain unpickling: the payload does create
    the sentinel."""
    sentinel = tmp_path / 'code_ran'
    weights = {f'backbone.{k}': v for k, v in small_resnet().state_dict().items()}
    path = tmp_path / 'crafted.pth'
    torch.save({'state_dict': weights, 'meta': {'config': RunsCommand(sentinel)}}, path,
               pickle_module=pickle)
    torch.load(path, weights_only=False)
    assert sentinel.exists(), 'the payload itself does not work'
    sentinel.unlink()
    return path, sentinel


def small_resnet(**kwargs):
    return ACmixResNet(depth=26, stem_channels=16, base_channels=16, **kwargs)


@pytest.mark.parametrize('build', [
    lambda ckpt: small_resnet(init_cfg=dict(type='Pretrained', checkpoint=ckpt,
                                            prefix='backbone.')),
    lambda ckpt: ACmixSwinTransformer(embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                                      init_cfg=dict(type='Pretrained', checkpoint=ckpt)),
], ids=['resnet', 'swin'])
def test_backbone_init_cfg_reads_placeholders_and_warns(crafted, build):
    path, sentinel = crafted
    model = build(str(path))
    with pytest.warns(UnknownObjectsWarning, match=str(path)):
        try:
            model.init_weights()
        except ValueError as e:  # the Swin matches none of the ResNet tensors
            assert str(path) in str(e)
    assert not sentinel.exists()


def test_converter_reads_placeholders_and_warns(crafted, tmp_path):
    path, sentinel = crafted
    out = tool_process.run([sys.executable, 'tools/model_converters/acmix2mm.py', str(path),
                             str(tmp_path / 'converted.pth')], cwd=ROOT, timeout=300)
    assert str(path) in out.stderr and 'placeholders' in out.stderr, out.stderr[-2000:]
    assert not sentinel.exists()


@pytest.mark.parametrize('resume', [False, True], ids=['load_from', 'resume'])
def test_runner_load_from_and_resume_refuse(crafted, tmp_path, resume):
    path, sentinel = crafted
    runner = make_runner(tmp_path / 'work', 2, resume=resume)
    runner._load_from = str(path)
    with pytest.raises(pickle.UnpicklingError, match=str(path)):
        runner.train()
    assert not sentinel.exists()


@pytest.mark.slow
def test_tools_test_checkpoint_refuses(crafted, tmp_path):
    path, sentinel = crafted
    ade = generate(str(tmp_path / 'data'), num_train=1, num_val=1, size=64)['ade']
    config = 'configs/demo/upernet_acmix-swin-slim_demo-shapes.py'
    out = tool_process.run([sys.executable, 'tools/test.py', config, str(path), '--work-dir',
                             str(tmp_path / 'work'), '--cfg-options',
                             f'test_dataloader.dataset.data_root={ade}'], cwd=ROOT,
                            timeout=300)
    assert out.returncode != 0
    assert f'{path}: refused to load' in out.stderr, out.stderr[-2000:]
    assert not sentinel.exists()


def test_url_checkpoint_refuses(crafted, tmp_path, monkeypatch):
    """mmengine's http(s) loader calls torch.hub.load_state_dict_from_url, which unpickles
    everything unless told otherwise: ours reads weights only."""
    path, sentinel = crafted
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f'http://127.0.0.1:{server.server_address[1]}/{path.name}'
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))  # the download cache
    model = small_resnet(init_cfg=dict(type='Pretrained', checkpoint=url, prefix='backbone.'))
    try:
        with pytest.raises(pickle.UnpicklingError, match=url):
            model.init_weights()
    finally:
        server.shutdown()
    assert not sentinel.exists()

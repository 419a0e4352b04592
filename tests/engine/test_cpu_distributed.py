"""Two CPU processes (gloo) train a demo config through tools/dist_train.sh, as on a cluster."""
import os
import socket
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from acmix_mm.datasets import generate
from acmix_mm.engine import setup_cpu_distributed

from .ddp_step_worker import TinyACmixNet, combined_batch, sgd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
CONFIG = 'configs/demo/upernet_acmix-swin-slim_demo-shapes.py'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_training_and_checkpoint(tmp_path):
    ade = generate(str(tmp_path / 'data'), num_train=8, num_val=4, size=64)['ade']
    work_dir = tmp_path / 'work'
    options = [f'{loader}.dataset.data_root={ade}'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    options += ['train_cfg.max_iters=4', 'train_cfg.val_interval=4', 'train_dataloader.batch_size=2',
                'model.data_preprocessor.size=(64,64)', 'default_hooks.logger.interval=1']
    env = dict(os.environ, PORT=str(free_port()), OMP_NUM_THREADS='1')
    out = subprocess.run(['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', str(work_dir),
                          '--cfg-options', *options], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert 'Distributed training: True' in log and 'mIoU' in log

    ckpt = torch.load(work_dir / 'iter_4.pth', map_location='cpu')
    assert ckpt['meta']['iter'] == 4
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    model = MODELS.build(Config.fromfile(os.path.join(ROOT, CONFIG)).model)
    model.load_state_dict(ckpt['state_dict'])  # strict: no DDP "module." prefixes


def test_ranks_step_as_one_process_on_the_combined_batch(tmp_path):
    """After one step both ranks hold the same parameters, equal to one process stepping on the
    two halves together (gradients averaged across ranks, rank 0's initial weights broadcast)."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [ROOT, env.get('PYTHONPATH')]))
    out = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                          '--master_addr', '127.0.0.1', '--master_port', str(free_port()),
                          os.path.join(ROOT, 'tests/engine/ddp_step_worker.py'), str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ranks = [torch.load(tmp_path / f'rank{r}.pth') for r in (0, 1)]

    torch.manual_seed(0)  # rank 0's weights
    model = TinyACmixNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train_step(combined_batch(), sgd(model))
    after = model.state_dict()
    assert sum(not torch.equal(after[k], before[k]) for k in after) >= len(after) - 2
    for key, value in after.items():
        torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-5, atol=1e-6)


def test_setup_is_a_no_op_without_launcher():
    cfg = Config(dict(launcher='none'))
    assert setup_cpu_distributed(cfg) is False and 'model_wrapper_cfg' not in cfg


def test_launcher_without_environment_is_a_clear_error(monkeypatch):
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(RuntimeError, match="needs the environment variables.*torchrun"):
        setup_cpu_distributed(Config(dict(launcher='pytorch')))

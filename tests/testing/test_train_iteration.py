import math
import os

import pytest
import torch
from mmseg.registry import MODELS

from acmix_mm.testing import segmentation_batch
from acmix_mm.testing.train_iteration import (iteration_table, measure_pair, training_iteration,
                                              write_iteration_report)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
SLIM_UPERNET = os.path.join(ROOT, 'configs/demo/upernet_acmix-swin-slim_demo-shapes.py')


@pytest.fixture(scope='module')
def batch():
    return segmentation_batch(2, (128, 128), num_classes=4)  # the crop size: no padding


@pytest.mark.slow
def test_an_iteration_returns_finite_losses_and_steps_the_optimizer(batch):
    iteration, model = training_iteration(MODELS, SLIM_UPERNET, batch, 'cpu', amp=False)
    before = [p.detach().clone() for p in model.parameters()]
    losses = iteration()
    assert {'loss', 'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values())
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert sum(changed) > 0.9 * len(changed)  # AdamW moved (nearly) every parameter


@pytest.mark.slow
def test_a_pair_is_timed_against_its_baseline_and_reported(batch, tmp_path):
    configs = {'acmix': SLIM_UPERNET, 'same': SLIM_UPERNET}
    records = measure_pair(MODELS, configs, ['acmix', 'same'], batch, 'cpu', amp=False,
                           repeat=1, warmup=0)
    first, base = records
    assert first['baseline'] == 'same' and first['baseline_seconds'] == base['seconds'] > 0
    for r in records:
        assert r['mode'] == 'train' and r['device'] == 'cpu' and r['batch'] == 2
        assert r['dtype'] == 'float32' and r['finite'] and r['params_m'] > 0
    assert '| acmix | same | float32 |' in iteration_table(records)
    records[1]['finite'] = False
    status = write_iteration_report(str(tmp_path / 'it'), 'tool.py', [], 'One iteration', 'cpu',
                                    False, 1, 0, records, [])
    assert status == 1  # a loss that is not finite fails the benchmark
    assert (tmp_path / 'it.png').stat().st_size > 5000
    assert '| same | - | float32 |' in (tmp_path / 'it.md').read_text()

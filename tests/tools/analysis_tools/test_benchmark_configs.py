"""``tools/analysis_tools/benchmark_configs.py`` on two tiny classifier configs, one of them a
user's config file with an ACmix backbone (``custom_imports``)."""
import json
import os
import sys

import pytest
import torch

import tool_process

from . import ROOT, load_tool

TOOL_PATH = 'tools/analysis_tools/benchmark_configs.py'
TOOL = os.path.join(ROOT, TOOL_PATH)
CLASSIFIER = '''
default_scope = 'mmpretrain'
{imports}
model = dict(
    type='ImageClassifier',
    backbone=dict(type={backbone!r}, depth={depth}, base_channels=16, stem_channels=16,
                  out_indices=(3, ), init_cfg=dict(type='Pretrained', checkpoint='missing.pth')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=512,
              loss=dict(type='CrossEntropyLoss')))
'''


def tiny_configs(tmp_path):
    base, acmix = tmp_path / 'resnet_tiny.py', tmp_path / 'acmix_resnet_tiny.py'
    base.write_text(CLASSIFIER.format(imports='', backbone='ResNet', depth=50))
    acmix.write_text(CLASSIFIER.format(
        imports="custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)",
        backbone='ACmixResNet', depth=26))
    return str(base), str(acmix)


def build(config):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    return MODELS.build(Config.fromfile(config).model)


@pytest.mark.slow  # a fresh interpreter per config
def test_two_tiny_configs_side_by_side(tmp_path):
    configs = tiny_configs(tmp_path)
    out = tool_process.run([sys.executable, TOOL, *configs, '--parts', 'model', '--size', '32',
                            '48', '--batch', '2', '--repeat', '1', '--threads', '1',
                            '--out', str(tmp_path / 'report')], cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / 'report.json').read_text())
    assert [r['config'] for r in results] == list(configs)
    assert (tmp_path / 'report.png').stat().st_size > 0
    models = [build(c) for c in configs]  # nothing loaded: the missing checkpoint is ignored
    for result, model in zip(results, models):
        assert result['params_m'] == pytest.approx(
            sum(p.numel() for p in model.parameters()) / 1e6)
        assert result['size'] == [32, 48] and result['batch'] == 2
        assert result['throughput'] == pytest.approx(2 / result['infer_seconds'])
        for key in ('gflops', 'infer_seconds', 'train_seconds', 'peak_mb'):
            assert result[key] is not None and result[key] >= 0
    first, second = results
    assert all(v == 1 for k, v in first['ratios'].items() if first[k])
    for key in ('params_m', 'gflops', 'infer_seconds', 'train_seconds'):
        assert second['ratios'][key] == pytest.approx(second[key] / first[key])
    md = (tmp_path / 'report.md').read_text()
    assert 'resnet_tiny' in md and 'acmix_resnet_tiny' in md
    assert f'{second["ratios"]["params_m"]:.2f}x' in md


def test_backbone_flops_are_the_standard_count_of_the_backbone(tmp_path):
    from mmengine.analysis import get_model_complexity_info
    tool = load_tool('benchmark_configs', TOOL_PATH)
    configs = tiny_configs(tmp_path)
    results = tool.measure_times(list(configs), 'backbone', (64, 64), 1, 'cpu', 1)
    for result, config in zip(results, configs):
        backbone = build(config).backbone
        backbone.eval()
        with torch.no_grad():
            info = get_model_complexity_info(backbone, inputs=(torch.randn(1, 3, 64, 64), ),
                                             show_table=False, show_arch=False)
        assert result['gflops'] * 1e9 == pytest.approx(info['flops'])
        assert result['params_m'] * 1e6 == info['params']


def test_a_config_that_is_not_there(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tool = load_tool('benchmark_configs', TOOL_PATH)
        tool.main([str(tmp_path / 'missing.py'), str(tmp_path / 'other.py')])
    assert 'missing.py' in str(exit_info.value.code)

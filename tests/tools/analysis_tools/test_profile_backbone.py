from . import load_tool


def test_profile_lists_the_layers_functions_and_writes_the_table(tmp_path, capsys):
    tool = load_tool('profile_backbone', 'tools/analysis_tools/profile_backbone.py')
    out = tmp_path / 'sub' / 'profile.txt'
    assert tool.main(['acmix-layer-64', '--device', 'cpu', '--batch', '1', '--steps', '2',
                      '--top', '40', '--out', str(out)]) == 0
    text = out.read_text()
    # a layer case runs at its ResNet-50 stage's size
    assert text.startswith('acmix-layer-64 train, cpu, batch 1 of 56x56, 2 steps, sorted by '
                           'self_cpu_time_total')
    # the profiled steps ran the training step: the layer's forward and backward Functions
    assert '_RecomputedACmix ' in text and '_RecomputedACmixBackward' in text
    assert text.strip() in capsys.readouterr().out


def test_inference_profile_runs_no_backward(tmp_path):
    tool = load_tool('profile_backbone', 'tools/analysis_tools/profile_backbone.py')
    out = tmp_path / 'profile.txt'
    assert tool.main(['acmix-layer-64', '--mode', 'infer', '--device', 'cpu', '--batch', '1',
                      '--steps', '1', '--top', '40', '--out', str(out)]) == 0
    text = out.read_text()
    assert 'acmix-layer-64 infer' in text and 'Backward' not in text
    assert 'aten::' in text  # the projections ran under the profiler

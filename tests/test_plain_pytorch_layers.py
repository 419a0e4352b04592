"""``acmix_mm.layers`` is plain PyTorch wherever it is imported, while ``import acmix_mm`` (a
config's ``custom_imports``) registers every module. Each case runs in a fresh interpreter."""
import subprocess
import sys
import textwrap

OPENMMLAB = ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain')
REGISTERED = '''
from mmdet.registry import MODELS as DET
from mmengine.analysis.complexity_analysis import _DEFAULT_SUPPORTED_FLOP_OPS
from mmengine.registry import MODEL_WRAPPERS, MODELS
from mmpretrain.registry import MODELS as PRETRAIN
from mmseg.registry import DATASETS, MODELS as SEG
names = ['ACmixResNet', 'ACmixResNetV1c', 'ACmixSwinTransformer']
assert all(r.get(n) for r in (DET, SEG, PRETRAIN) for n in names)
assert MODELS.get('ACmix') and DATASETS.get('DemoShapesSegDataset')
assert MODEL_WRAPPERS.get('AnyDeviceDistributedDataParallel')
assert 'acmix_mm::sliding_window_attention' in _DEFAULT_SUPPORTED_FLOP_OPS
print('registered')
'''


def run(*code: str) -> str:
    """Runs the pieces of ``code`` (each dedented) in a fresh interpreter; returns its stdout."""
    out = subprocess.run([sys.executable, '-c', '\n'.join(textwrap.dedent(c) for c in code)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_layers_import_without_openmmlab():
    """It works with every OpenMMLab package blocked."""
    out = run(f'''
        import sys
        for name in {OPENMMLAB}:
            sys.modules[name] = None
        import torch
        from acmix_mm.layers import ACmix
        print(tuple(ACmix(8, 8, stride=2)(torch.randn(1, 8, 7, 7)).shape))
        ''')
    assert out.strip() == '(1, 8, 4, 4)'


def test_layers_import_no_openmmlab_where_it_is_installed():
    out = run(f'''
        import sys
        import torch
        from acmix_mm.layers import ACmix
        from acmix_mm.layers.kernels import sliding_window_attention_op
        ACmix(8, 8)(torch.randn(1, 8, 5, 5))
        print(sorted(m for m in sys.modules if m.split('.')[0] in {OPENMMLAB}))
        ''')
    assert out.strip() == '[]'


def test_custom_imports_registers_every_module(tmp_path):
    config = tmp_path / 'config.py'
    config.write_text("custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)\n")
    assert run(f'''
        from mmengine.config import Config
        Config.fromfile({str(config)!r})
        ''', REGISTERED).strip() == 'registered'


def test_import_acmix_mm_registers_every_module():
    assert run('import acmix_mm', REGISTERED).strip() == 'registered'


def test_registration_after_a_plain_layers_import():
    assert run('''
        from acmix_mm.layers import ACmix
        import acmix_mm
        acmix_mm.register_all_modules()
        ''', REGISTERED).strip() == 'registered'

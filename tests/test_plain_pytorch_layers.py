import subprocess
import sys


def test_layers_import_without_openmmlab():
    """``acmix_mm.layers`` is plain PyTorch: it works with every OpenMMLab package blocked."""
    code = (
        'import sys\n'
        'for name in ("mmengine", "mmcv", "mmdet", "mmseg", "mmpretrain"):\n'
        '    sys.modules[name] = None\n'
        'import torch\n'
        'from acmix_mm.layers import ACmix\n'
        'print(tuple(ACmix(8, 8, stride=2)(torch.randn(1, 8, 7, 7)).shape))\n'
        'assert not any(m.startswith(("mmengine.", "mmdet.")) for m in sys.modules)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '(1, 8, 4, 4)'

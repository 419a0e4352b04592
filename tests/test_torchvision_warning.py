"""Importing acmix_mm silences torchvision's "Failed to load image Python extension" warning
and nothing else."""
import subprocess
import sys
import warnings

from acmix_mm._torchvision_warning import MESSAGE, silence_torchvision_image_extension_warning


def test_only_that_warning_is_silenced():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        silence_torchvision_image_extension_warning()
        for message, module in ((f"{MESSAGE}: 'Could not load image.so'", 'torchvision.io.image'),
                                ('another warning', 'torchvision.io.image'),
                                (f'{MESSAGE}: elsewhere', 'some.other.module')):
            warnings.warn_explicit(message, UserWarning, 'image.py', 13, module=module)
    assert [str(w.message) for w in caught] == ['another warning', f'{MESSAGE}: elsewhere']


def test_importing_the_package_then_torchvision_prints_no_such_warning():
    out = subprocess.run([sys.executable, '-W', 'default', '-c', 'import acmix_mm, torchvision.io'],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert MESSAGE not in out.stderr

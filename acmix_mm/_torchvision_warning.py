"""Silences exactly one warning: torchvision's "Failed to load image Python extension".

``tools/setup_env.sh`` installs torchvision's pure-Python parts where no torchvision matches the
CPU torch (mmpretrain imports it for box utilities only), so its compiled image extension cannot
load and torchvision warns at import about ``torchvision.io`` image decoding, which nothing here
uses (images are read by mmcv). Every other warning, torchvision's included, stays visible.
"""
import warnings

MESSAGE = 'Failed to load image Python extension'


def silence_torchvision_image_extension_warning() -> None:
    """Adds a filter for that warning only (message prefix, category and emitting module)."""
    warnings.filterwarnings('ignore', message=MESSAGE, category=UserWarning,
                            module=r'torchvision\.io\.image')

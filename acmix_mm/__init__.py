"""ACmix backbones for OpenMMLab.

``import acmix_mm`` (a config's ``custom_imports=dict(imports=['acmix_mm'])``) registers, where the
OpenMMLab stack is installed, the backbones in the MODELS registries of mmdet, mmseg and
mmpretrain, the ``ACmix`` conv layer type in mmengine's root registry, the demo datasets, the CPU
distributed wrapper, and ACmix's FLOP handles in mmengine's analysis (:func:`register_all_modules`).

``acmix_mm.layers`` is plain PyTorch: ``from acmix_mm.layers import ACmix`` in a process that has
not loaded mmengine imports no OpenMMLab package (the package is then only the parent of
``acmix_mm.layers``). Such a process that later wants the OpenMMLab modules calls
:func:`register_all_modules` (a later ``import acmix_mm`` finds the package already imported).
"""
import importlib.util
import sys

from ._torchvision_warning import silence_torchvision_image_extension_warning

silence_torchvision_image_extension_warning()  # before anything imports torchvision

__version__ = '0.1.0'


def register_all_modules() -> None:
    """Registers every acmix_mm module in the OpenMMLab registries and ACmix's FLOP handles in
    mmengine's analysis tables (idempotent)."""
    from . import datasets, engine, models, visualization  # noqa: F401  (registers modules)
    from .utils.flop_count import register_flop_handles
    register_flop_handles()


def _imported_for_plain_layers() -> bool:
    """Whether this import of the package is the parent import of ``acmix_mm.layers`` (or of a
    module under it) in a process that has not loaded mmengine.

    Python imports a package before its submodules; the import machinery's frames say which
    module was asked for (``importlib._bootstrap._find_and_load``'s ``name``).
    """
    if sys.modules.get('mmengine') is not None:
        return False
    frame = sys._getframe(1)
    requested = []
    while frame is not None:
        if (frame.f_code.co_name == '_find_and_load'
                and frame.f_globals.get('__name__') == 'importlib._bootstrap'):
            requested.append(frame.f_locals.get('name', ''))
        frame = frame.f_back
    # requested[0] is this package; requested[1], if any, the module that needed it
    return len(requested) > 1 and (requested[1] == 'acmix_mm.layers'
                                   or requested[1].startswith('acmix_mm.layers.'))


if importlib.util.find_spec('mmengine') is not None and not _imported_for_plain_layers():
    register_all_modules()

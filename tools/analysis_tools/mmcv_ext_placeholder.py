"""Stands in for ``mmcv._ext`` (mmcv's compiled ops) in an mmcv built without them (mmcv-lite).

Only ``tools/analysis_tools/gpu_suite.sh`` uses it, and only in the site folder it installs from
its wheelhouse: it copies this file to ``<site>/mmcv/_ext.py`` when mmcv's compiled ops are
missing. mmdet and mmseg import ``mmcv.ops`` at import time (RoIAlign, nms, point_sample, ...), so
without the ops neither imports at all, although a backbone or UperNet never calls one of them.
With this module every ``mmcv.ops`` name exists, and calling any compiled function raises a
RuntimeError that names it; nothing computes a wrong result silently.
"""
from typing import Any, Callable

#: lets a caller tell this placeholder from mmcv's real compiled module
ACMIX_MM_PLACEHOLDER = True


def __getattr__(name: str) -> Callable[..., Any]:
    if name.startswith('__'):
        raise AttributeError(name)

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"mmcv's compiled op {name!r} is not available: this mmcv was installed without its "
            'compiled ops (mmcv-lite, from the GPU suite\'s wheelhouse). Install mmcv 2.1.0 '
            'built with its ops (MMCV_WITH_OPS=1) to run models that need it.')

    missing.__name__ = missing.__qualname__ = name
    return missing

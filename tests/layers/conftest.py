"""Fixtures shared by the layer tests."""
import pytest

from acmix_mm.layers import projection


@pytest.fixture
def forced(monkeypatch):
    """``forced(name)`` makes every call of :func:`acmix_mm.layers.projection.fastest` run the
    candidate ``name`` (skipping where this torch lacks oneDNN's product for ``'onednn'``);
    returns the list of the keys' first items seen since, e.g. ``'project_tokens'``."""
    keys = []

    def force(name):
        if name == 'onednn' and projection._MATMUL is None:
            pytest.skip('this torch has no oneDNN matrix product')

        def run(key, candidates):
            keys.append(key[0])
            return candidates[name]()
        monkeypatch.setattr(projection, 'fastest', run)
        return keys
    return force

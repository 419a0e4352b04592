"""Synthetic batches and framework-config helpers for smoke runs (the demo and the tests)."""
from .configs import framework_model_cfg
from .smoke import build_model, loss_backward_predict
from .inputs import classification_batch, detection_batch, segmentation_batch

__all__ = ['build_model', 'loss_backward_predict', 'framework_model_cfg', 'classification_batch', 'detection_batch', 'segmentation_batch']

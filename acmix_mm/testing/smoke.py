from typing import Dict, List, Tuple

import torch
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import Registry, init_default_scope
from torch import nn


def build_model(registry: Registry, model_cfg: dict) -> nn.Module:
    """Builds and initialises a model in the registry's default scope (so that its data
    preprocessor and heads resolve); SyncBN becomes BN for single-process runs."""
    init_default_scope(registry.scope)
    model = revert_sync_batchnorm(registry.build(model_cfg))
    model.init_weights()
    return model


def loss_backward_predict(model: nn.Module, batch: dict) -> Tuple[Dict[str, torch.Tensor], List]:
    """One training forward/backward and one prediction, through the data preprocessor.

    Returns:
        The loss terms (scalars) and the predicted data samples.
    """
    model.train()
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    loss, log_vars = model.parse_losses(losses)
    loss.backward()
    model.eval()
    with torch.no_grad():
        predictions = model(**model.data_preprocessor(batch, False), mode='predict')
    return log_vars, predictions

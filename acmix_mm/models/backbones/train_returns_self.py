from torch import nn


class TrainReturnsSelfMixin:
    """mmdet's and mmseg's backbones override ``train`` (frozen stages, ``norm_eval``) without
    returning ``self``; this restores ``nn.Module.train``'s contract so ``model.eval()`` chains."""

    def train(self, mode: bool = True) -> nn.Module:
        super().train(mode)  # type: ignore[misc]
        return self  # type: ignore[return-value]

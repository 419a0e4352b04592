"""mmseg's cross-entropy loss, with class weights that also work on padded label maps."""
from typing import Optional

import torch
from mmseg.models.losses import CrossEntropyLoss
from mmseg.registry import MODELS


@MODELS.register_module()
class IgnoreAwareCrossEntropyLoss(CrossEntropyLoss):
    """``CrossEntropyLoss`` of mmseg whose ``class_weight`` works where labels hold ``ignore_index``.

    mmseg 1.2.2 normalises a class-weighted mean by looking up ``class_weight`` at every label,
    the ignore index included, so any batch with ignored pixels (the padding that the data
    preprocessor adds to images smaller than its ``size``) fails with ``IndexError: index 255 is
    out of bounds``. This class gives that normaliser as the sum of the class weights of the
    pixels that are not ignored, which is what ``torch.nn.functional.cross_entropy`` divides by;
    on label maps without ignored pixels the loss is mmseg's, unchanged. Everything else
    (sigmoid/mask variants, sample weights, ``avg_factor``) is mmseg's.
    """

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor,
                weight: Optional[torch.Tensor] = None, avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None, ignore_index: int = -100,
                **kwargs) -> torch.Tensor:
        """Args as mmseg's: ``cls_score`` ``(N, C, H, W)``, ``label`` ``(N, H, W)`` int64.

        Returns:
            The loss, a scalar for ``'mean'``/``'sum'`` reduction.
        """
        reduction = reduction_override or self.reduction
        if (self.class_weight is not None and avg_factor is None and reduction == 'mean'
                and not self.use_sigmoid and not self.use_mask):
            class_weight = cls_score.new_tensor(self.class_weight)
            valid = label != ignore_index
            avg_factor = (class_weight[torch.where(valid, label, 0)] * valid).sum()
        return super().forward(cls_score, label, weight=weight, avg_factor=avg_factor,
                               reduction_override=reduction_override, ignore_index=ignore_index,
                               **kwargs)

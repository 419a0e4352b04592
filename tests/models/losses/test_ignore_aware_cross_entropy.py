"""Class-weighted cross-entropy on padded label maps: torch's weighted mean over the pixels that
are not ignored; mmseg's own loss where nothing is ignored."""
import pytest
import torch
import torch.nn.functional as F
from mmseg.models.losses import CrossEntropyLoss

from acmix_mm.models.losses import IgnoreAwareCrossEntropyLoss

WEIGHTS = [0.25, 1., 2., 1.]


def scores_and_labels(pad: bool):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 4, 12, 10, generator=g)
    labels = torch.randint(0, 4, (2, 12, 10), generator=g)
    if pad:
        labels[:, 9:] = 255
        labels[1, :, 7:] = 255
    return scores, labels


def test_padded_labels_give_torchs_weighted_mean_over_the_pixels_kept():
    scores, labels = scores_and_labels(pad=True)
    with pytest.raises(IndexError, match='255'):  # what mmseg's own loss does (mmseg 1.2.2)
        CrossEntropyLoss(class_weight=WEIGHTS)(scores, labels, ignore_index=255)
    loss = IgnoreAwareCrossEntropyLoss(class_weight=WEIGHTS, loss_weight=0.4)(
        scores, labels, ignore_index=255)
    expected = F.cross_entropy(scores, labels, weight=torch.tensor(WEIGHTS), ignore_index=255)
    torch.testing.assert_close(loss, 0.4 * expected)


def test_without_ignored_pixels_it_is_mmsegs_loss():
    scores, labels = scores_and_labels(pad=False)
    for kwargs in (dict(class_weight=WEIGHTS), dict()):
        torch.testing.assert_close(
            IgnoreAwareCrossEntropyLoss(**kwargs)(scores, labels, ignore_index=255),
            CrossEntropyLoss(**kwargs)(scores, labels, ignore_index=255))

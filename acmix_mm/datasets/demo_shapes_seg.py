"""mmseg dataset class of the built-in demo shapes, in ADE20K's layout."""
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS


@DATASETS.register_module()
class DemoShapesSegDataset(BaseSegDataset):
    """``images/{split}/*.jpg`` and ``annotations/{split}/*.png``; label 0 is background."""

    METAINFO = dict(classes=('background', 'circle', 'square', 'triangle'),
                    palette=[[120, 120, 120], [220, 20, 60], [0, 130, 230], [250, 170, 30]])

    def __init__(self, **kwargs) -> None:
        super().__init__(img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=False,
                         **kwargs)

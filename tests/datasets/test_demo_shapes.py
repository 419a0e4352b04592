import json
import os

import numpy as np
from pycocotools.coco import COCO

from acmix_mm.datasets import CLASSES, generate


def test_generation_is_deterministic_and_consistent(tmp_path):
    a = generate(str(tmp_path / 'a'), num_train=6, num_val=2, size=64, seed=3)
    b = generate(str(tmp_path / 'b'), num_train=6, num_val=2, size=64, seed=3)
    ann_a = json.load(open(os.path.join(a['coco'], 'annotations/instances_train.json')))
    ann_b = json.load(open(os.path.join(b['coco'], 'annotations/instances_train.json')))
    assert ann_a == ann_b and len(ann_a['images']) == 6
    assert [c['name'] for c in ann_a['categories']] == list(CLASSES)

    import cv2
    coco = COCO(os.path.join(a['coco'], 'annotations/instances_train.json'))
    for img in coco.dataset['images']:
        name = img['file_name'].replace('.jpg', '.png')
        labels = cv2.imread(os.path.join(a['ade'], 'annotations/training', name),
                            cv2.IMREAD_UNCHANGED)
        semantic = np.zeros_like(labels)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
            semantic[coco.annToMask(ann) > 0] = ann['category_id']
        # the instance masks (visible parts) and the semantic map describe the same pixels,
        # except for tiny slivers that the instances drop
        assert (semantic == labels).mean() > 0.98
        assert set(np.unique(labels)) <= {0, 1, 2, 3}

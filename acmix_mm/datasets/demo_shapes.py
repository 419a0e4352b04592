"""A deterministic, built-in demo dataset: coloured circles, squares and triangles on textured
backgrounds, written both as COCO instance segmentation and in ADE20K's semantic layout.

    coco/{train,val}/*.jpg, coco/annotations/instances_{train,val}.json
    ade/images/{training,validation}/*.jpg, ade/annotations/{training,validation}/*.png

Semantic labels: 0 background, 1 circle, 2 square, 3 triangle (no ignore label).
"""
import json
import os
from typing import Dict, List, Tuple

import numpy as np

CLASSES = ('circle', 'square', 'triangle')


def _texture(rng: np.random.RandomState, size: int) -> np.ndarray:
    """Smooth random colour noise plus stripes, uint8 ``(H, W, 3)``."""
    coarse = rng.uniform(40, 200, (size // 16 + 1, size // 16 + 1, 3))
    img = np.kron(coarse, np.ones((16, 16, 1)))[:size, :size]
    yy, xx = np.mgrid[:size, :size]
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
    stripes = 20 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    img = img + stripes[..., None] + rng.normal(0, 8, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _polygon(rng: np.random.RandomState, cls: int, size: int) -> np.ndarray:
    """Vertices ``(K, 2)`` (x, y) of a random shape of class ``cls``."""
    r = rng.uniform(size * 0.08, size * 0.18)
    cx, cy = rng.uniform(r + 2, size - r - 2, 2)
    if cls == 0:
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    elif cls == 1:
        t = np.linspace(0, 2 * np.pi, 4, endpoint=False) + rng.uniform(0, np.pi / 2)
    else:
        t = np.linspace(0, 2 * np.pi, 3, endpoint=False) + rng.uniform(0, 2 * np.pi)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def render(rng: np.random.RandomState, size: int,
           max_objects: int = 4) -> Tuple[np.ndarray, np.ndarray, List[Dict]]:
    """One image, its semantic label map and its instances (later ones occlude earlier ones).

    Returns:
        image ``(H, W, 3)`` uint8 (BGR), labels ``(H, W)`` uint8, instances with ``category``,
        ``polygon`` and ``mask`` (visible part).
    """
    import cv2
    img = _texture(rng, size)
    labels = np.zeros((size, size), np.uint8)
    owner = np.full((size, size), -1, np.int32)
    instances = []
    for i in range(rng.randint(1, max_objects + 1)):
        cls = rng.randint(len(CLASSES))
        poly = _polygon(rng, cls, size)
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
        colour = tuple(int(c) for c in rng.randint(0, 256, 3))
        cv2.fillPoly(img, [np.round(poly).astype(np.int32)], colour)
        labels[mask > 0] = cls + 1
        owner[mask > 0] = i
        instances.append(dict(category=cls, polygon=poly))
    for i, inst in enumerate(instances):
        inst['mask'] = owner == i
    return img, labels, [inst for inst in instances if inst['mask'].sum() > 20]


def generate(root: str, num_train: int = 160, num_val: int = 40, size: int = 128,
             seed: int = 0) -> Dict[str, str]:
    """Writes the dataset under ``root`` (idempotent: an existing complete copy is kept).

    Returns:
        The paths of the COCO and ADE20K-layout roots.
    """
    import cv2
    from pycocotools import mask as mask_utils
    paths = dict(coco=os.path.join(root, 'coco'), ade=os.path.join(root, 'ade'))
    stamp = os.path.join(root, f'.complete-{num_train}-{num_val}-{size}-{seed}')
    if os.path.exists(stamp):
        return paths
    rng = np.random.RandomState(seed)
    for split, ade_split, count in (('train', 'training', num_train),
                                    ('val', 'validation', num_val)):
        for d in (f'coco/{split}', f'ade/images/{ade_split}', f'ade/annotations/{ade_split}',
                  'coco/annotations'):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        images, annotations = [], []
        for idx in range(count):
            img, labels, instances = render(rng, size)
            name = f'{split}_{idx:05d}'
            cv2.imwrite(os.path.join(paths['coco'], split, name + '.jpg'), img)
            cv2.imwrite(os.path.join(paths['ade'], 'images', ade_split, name + '.jpg'), img)
            cv2.imwrite(os.path.join(paths['ade'], 'annotations', ade_split, name + '.png'), labels)
            images.append(dict(id=idx, file_name=name + '.jpg', height=size, width=size))
            for inst in instances:
                rle = mask_utils.encode(np.asfortranarray(inst['mask'].astype(np.uint8)))
                x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                rle['counts'] = rle['counts'].decode('ascii')
                annotations.append(dict(id=len(annotations) + 1, image_id=idx,
                                        category_id=inst['category'] + 1, segmentation=rle,
                                        area=float(mask_utils.area(rle)), bbox=[x, y, w, h],
                                        iscrowd=0))
        categories = [dict(id=i + 1, name=n) for i, n in enumerate(CLASSES)]
        with open(os.path.join(paths['coco'], 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    open(stamp, 'w').close()
    return paths

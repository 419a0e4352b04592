"""The main job end to end on a shortened schedule: real training, COCO AP and mIoU through the
frameworks' metrics, curves and prediction images on disk."""
import json
import os
import sys

import cv2
import pytest

import tool_process

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


@pytest.mark.slow
def test_demo_job_trains_evaluates_and_saves_pictures(tmp_path):
    out = tool_process.run([sys.executable, 'tools/demo.py', '--iters', '30', '--out',
                             str(tmp_path / 'out'), '--data-root', str(tmp_path / 'data'),
                             '--num-train', '160'],
                            cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = json.load(open(tmp_path / 'out' / 'results.json'))
    det, seg = results['detection'], results['segmentation']
    assert set(det['trained']) == {'coco/bbox_mAP', 'coco/segm_mAP'}
    # 30 iterations already move the segmentor well past its untrained self
    assert seg['trained']['mIoU'] > seg['untrained']['mIoU'] + 5
    for r in (det, seg):
        assert os.path.getsize(r['loss_curves']) > 10_000
        assert len(r['predictions']) == 4 and all(os.path.exists(p) for p in r['predictions'])
        for path in r['predictions']:  # ground truth | prediction, each panel >= 512 px wide
            height, width = cv2.imread(path).shape[:2]
            assert width >= 2 * 512 and height >= 512
    assert 'untrained -> trained' in out.stdout
    assert 'Failed to load image Python extension' not in out.stderr  # torchvision's, silenced

"""The main job: on the built-in demo data, train Mask R-CNN and UperNet with slim ACmix-ResNets on
the CPU, evaluate each with its framework's metric (COCO AP through pycocotools,
mIoU), compare with the same model untrained, and save loss curves and prediction images.

    python tools/demo.py [--out work_dirs/demo] [--iters N] [--num-train N]
                         [--cpu-allocator {retain,system}]
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
from acmix_mm.utils.argument_types import positive_int  # noqa: E402
from acmix_mm.utils.cpu_allocator import (add_cpu_allocator_argument,  # noqa: E402
                                           configure_cpu_allocator)

JOBS = [  # name, config, data format, metrics to report
    ('detection', 'configs/demo/mask-rcnn_acmix-r26-slim_fpn_demo-shapes.py', 'coco',
     ('coco/bbox_mAP', 'coco/segm_mAP')),
    ('segmentation', 'configs/demo/upernet_acmix-r26-slim_demo-shapes.py', 'ade', ('mIoU', )),
]


def data_options(root: str) -> dict:
    """Config overrides that point every dataloader (and a COCO evaluator) at ``root``."""
    root = root.rstrip('/') + '/'
    options = {f'{split}_dataloader.dataset.data_root': root for split in ('train', 'val', 'test')}
    if osp.exists(osp.join(root, 'annotations', 'instances_val.json')):
        for split in ('val', 'test'):
            options[f'{split}_evaluator.ann_file'] = root + 'annotations/instances_val.json'
    return options


def run_job(name, config, data_root, keys, out, iters):
    from mmengine.config import Config
    from mmengine.runner import Runner

    from acmix_mm.visualization import plot_curves, save_predictions

    def make_runner(work_dir, **options):
        cfg = Config.fromfile(osp.join(ROOT, config))
        cfg.work_dir = work_dir
        if iters:
            cfg.merge_from_dict({'train_cfg.max_iters': iters, 'train_cfg.val_interval': iters})
        cfg.merge_from_dict({**data_options(data_root), **options})
        # Visualizers are named singletons: a fresh name keeps each run's curves in its log_dir.
        cfg.visualizer.name = f'visualizer_{work_dir}'
        return Runner.from_cfg(cfg)

    print(f'\n=== {name}: {config}', flush=True)
    untrained = make_runner(osp.join(out, name, 'untrained'))
    untrained.model.init_weights()
    before = untrained.test()
    start = time.perf_counter()
    runner = make_runner(osp.join(out, name))
    runner.train()
    train_seconds = time.perf_counter() - start
    after = runner.test()
    minutes = (time.perf_counter() - start) / 60
    scalars = osp.join(runner.log_dir, 'vis_data', 'scalars.json')
    curves = osp.join(out, name, 'loss_curves.png')
    plot_curves(scalars, curves, title=f'{name}: {osp.basename(config)}')
    images = save_predictions(runner, osp.join(out, name, 'predictions'))
    result = dict(config=config, train_minutes=round(minutes, 2),
                  seconds_per_iter=round(train_seconds / runner.iter, 3), iters=runner.iter,
                  untrained={k: float(before[k]) for k in keys},
                  trained={k: float(after[k]) for k in keys},
                  loss_curves=curves, predictions=images)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='work_dirs/demo', help='output folder')
    parser.add_argument('--iters', type=positive_int,
                        help='training iterations (default: the configs\')')
    parser.add_argument('--data-root', default='data/demo', help='where the demo data goes')
    parser.add_argument('--num-train', type=positive_int, default=800,
                        help='training images to generate (the validation split has 40)')
    add_cpu_allocator_argument(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    os.chdir(ROOT)
    import torch

    import acmix_mm  # noqa: F401
    from acmix_mm.datasets import generate
    print(configure_cpu_allocator(args.cpu_allocator, not torch.cuda.is_available()))
    paths = generate(args.data_root, num_train=args.num_train)
    print(f'demo data: {paths["coco"]} (COCO instances), {paths["ade"]} (ADE20K layout)')
    results = {name: run_job(name, config, paths[data], keys, args.out, args.iters)
               for name, config, data, keys in JOBS}
    with open(osp.join(args.out, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    print('\n=== results on the demo validation split (untrained -> trained)')
    for name, r in results.items():
        for key in r['trained']:
            print(f'{name:13s} {key:15s} {r["untrained"][key]:.3f} -> {r["trained"][key]:.3f}  '
                  f'({r["iters"]} iterations, {r["train_minutes"]:.1f} min to train and test)')
        print(f'{"":13s} loss curves: {r["loss_curves"]}; predictions: '
              f'{osp.dirname(r["predictions"][0])}/')
    print(f'all results: {osp.join(args.out, "results.json")}; the main job took '
          f'{(time.perf_counter() - start) / 60:.1f} min')


if __name__ == '__main__':
    main()

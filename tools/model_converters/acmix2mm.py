"""Convert a checkpoint of the reference ACmix code (LeapLabTHU/ACmix; Swin or ResNet variant)
into one that acmix_mm loads without conversion.

The result holds ``backbone.*`` and ``head.fc.*`` keys: it loads as ``load_from`` of an mmpretrain
``ImageClassifier`` config (configs/acmix/), and as a backbone through
``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``.
The source is read without executing pickled code (config objects become placeholders).

    python tools/model_converters/acmix2mm.py acmix_swin_tiny.pth acmix-swin-t_in1k_mm.pth
    python tools/model_converters/acmix2mm.py --check acmix_swin_tiny.pth   # writes nothing

``--check FILE`` prints what a checkpoint holds (its entries, every key's shape, the layout and
the ACmix architecture its shapes match, where the configs expect it) and exits with status 1 if
it matches no ACmix architecture.
"""
import argparse
import os
import sys

import torch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='reference checkpoint ({"model": state_dict, ...} or a '
                        'state dict, DataParallel prefixes allowed)')
    parser.add_argument('dst', nargs='?', help='where to write the converted checkpoint')
    parser.add_argument('--force', action='store_true', help='overwrite an existing DST')
    parser.add_argument('--check', action='store_true',
                        help='print what SRC holds (keys, shapes, the architecture it matches) '
                        'and write nothing')
    args = parser.parse_args(argv)
    if args.check and args.dst is not None:
        parser.error('--check writes nothing: give SRC only, without DST')
    if not args.check and args.dst is None:
        parser.error('DST is required (or pass --check to inspect SRC)')
    return args


def check(src: str) -> int:
    """Prints what ``src`` holds; 0 if it is an ACmix checkpoint, 1 if not."""
    from acmix_mm.models.utils import extract_state_dict, read_checkpoint
    from acmix_mm.models.utils.ckpt_inspect import describe_checkpoint
    checkpoint = read_checkpoint(src)
    lines, arch = describe_checkpoint(checkpoint, extract_state_dict(checkpoint))
    print('\n'.join([f'{src}:'] + lines))
    return 0 if arch else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    from acmix_mm.models.utils import (convert_reference_classifier, extract_state_dict,
                                       read_checkpoint)
    if not os.path.isfile(args.src):
        sys.exit(f'error: SRC {args.src!r} is not a file')
    if args.check:
        return check(args.src)
    if os.path.exists(args.dst) and not args.force:
        sys.exit(f'error: DST {args.dst!r} exists; pass --force to overwrite it')
    try:
        state = extract_state_dict(read_checkpoint(args.src), source=f'SRC {args.src!r}')
        variant, converted = convert_reference_classifier(state)
    except ValueError as e:
        sys.exit(f'error: {e}')
    dropped = sorted(k for k in state if k.endswith(('attn_mask', 'relative_position_index')))
    filled = (sum(k.endswith('dep_conv.weight') for k in state) -
              sum(k.endswith('dep_conv.bias') for k in state))
    print(f'{args.src}: reference ACmix-{variant}, {len(state)} tensors -> {len(converted)}')
    print(f'  backbone tensors: {sum(k.startswith("backbone.") for k in converted)}, '
          f'head tensors: {sum(k.startswith("head.") for k in converted)}')
    print(f'  dropped stored buffers: {len(dropped)}; zero dep_conv.bias added: {filled}')
    for src_key, dst_key in _examples(variant):
        print(f'  e.g. {src_key} -> {dst_key}')
    tmp = args.dst + '.tmp'
    torch.save({'state_dict': converted,
                'meta': dict(converted_from=os.path.basename(args.src), variant=variant)}, tmp)
    os.replace(tmp, args.dst)  # never leave a half-written DST behind
    print(f'saved {args.dst}')
    return 0


def _examples(variant):
    if variant == 'swin':
        return [('layers.0.blocks.0.attn.qkv.weight', 'backbone.stages.0.blocks.0.attn.w_msa.qkv.weight'),
                ('layers.0.blocks.0.mlp.fc1.weight', 'backbone.stages.0.blocks.0.ffn.layers.0.0.weight'),
                ('norm.weight', 'backbone.norm3.weight'), ('head.weight', 'head.fc.weight')]
    return [('layer1.0.conv2.conv1.weight', 'backbone.layer1.0.conv2.conv1.weight'),
            ('fc.weight', 'head.fc.weight')]


if __name__ == '__main__':
    sys.exit(main())

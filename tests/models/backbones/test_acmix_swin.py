import pytest
import torch
import torch.nn.functional as F

from acmix_mm.layers import shift_kernels
from acmix_mm.models.backbones import ACmixSwinTransformer
from acmix_mm.models.layers import ACmixShiftWindowMSA
from acmix_mm.models.utils import acmix_swin_converter, load_matching_weights
from spec_reference import (reference_swin_state_dict, spec_acmix_swin_attention,
                            spec_acmix_swin_classifier, spec_window_mask)

TINY = dict(embed_dims=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 3, 4), drop_path_rate=0.)


def build_classifier(num_classes=10, **backbone):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')  # earlier tests may have left another default scope
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='ACmixSwinTransformer', out_indices=(3, ), **backbone),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes,
                  in_channels=backbone['embed_dims'] * 8)))


def test_registered_in_all_frameworks():
    from mmdet.registry import MODELS as MMDET
    from mmpretrain.registry import MODELS as MMPRETRAIN
    from mmseg.registry import MODELS as MMSEG
    for registry in (MMDET, MMSEG, MMPRETRAIN):
        assert registry.module_dict['ACmixSwinTransformer'] is ACmixSwinTransformer


def test_converted_reference_classifier_gives_reference_logits(tmp_path):
    sd = reference_swin_state_dict(**{'embed': 24, 'depths': (2, 2, 2, 2), 'heads': (1, 2, 3, 4)})
    path = tmp_path / 'acmix_swin_reference.pth'
    torch.save({'model': sd, 'epoch': 299}, path)
    model = build_classifier(**TINY, convert_weights=True,
                             init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    with torch.no_grad():
        model.head.fc.weight.copy_(sd['head.weight'])
        model.head.fc.bias.copy_(sd['head.bias'])
    model = model.double().eval()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    ref = spec_acmix_swin_classifier({k: v.double() for k, v in sd.items()}, x, TINY['depths'],
                                     TINY['num_heads'])
    with torch.no_grad():
        logits = model(x, mode='tensor')
    torch.testing.assert_close(logits, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('name,depths,heads', [('swin-t', (2, 2, 6, 2), (3, 6, 12, 24)),
                                               ('swin-s', (2, 2, 18, 2), (3, 6, 12, 24))])
def test_reference_keys_convert_with_nothing_missing(name, depths, heads):
    sd = reference_swin_state_dict(embed=96, depths=depths, heads=heads, classes=1000)
    model = ACmixSwinTransformer(embed_dims=96, depths=depths, num_heads=heads)
    report = load_matching_weights(model, acmix_swin_converter(sd), source=name)
    assert report.unused == [] and report.shape_mismatch == []
    assert sorted(report.from_scratch) == sorted(
        f'norm{i}.{p}' for i in range(3) for p in ('weight', 'bias'))
    torch.testing.assert_close(model.norm3.weight, sd['norm.weight'])
    torch.testing.assert_close(model.stages[2].blocks[5].attn.w_msa.rate2,
                               sd['layers.2.blocks.5.attn.rate2'])
    assert model.stages[0].blocks[1].attn.w_msa.dep_conv.bias.abs().sum() == 0


def randomised_shift_window_msa(shift):
    torch.manual_seed(0)
    attn = ACmixShiftWindowMSA(8, 2, window_size=7, shift_size=shift).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return attn


def spec_shift_window_msa(attn, x, h, w, shift):
    """The spec on ``x`` ``(B, H * W, C)``: zero-pad to window multiples, shift (only if the map
    exceeds one window), ACmix window attention, shift back, crop."""
    b, c = x.shape[0], x.shape[-1]
    hp, wp = -(-h // 7) * 7, -(-w // 7) * 7
    s = shift if min(h, w) > 7 else 0
    y = F.pad(x.view(b, h, w, c), (0, 0, 0, wp - w, 0, hp - h))
    y = torch.roll(y, (-s, -s), (1, 2))
    sd = dict(attn.w_msa.named_parameters())
    y = spec_acmix_swin_attention(y, sd, '', 2, 7, spec_window_mask(hp, wp, 7, s) if s else None)
    return torch.roll(y, (s, s), (1, 2))[:, :h, :w].reshape(b, h * w, c)


def use_path(attn, path, monkeypatch):
    """Makes the CPU forward take ``attend_fused`` (the GPU's path: SDPA and the folded conv
    path) when ``path == 'fused'``."""
    if path == 'fused':
        monkeypatch.setattr(attn, 'attend_composed', attn.attend_fused)
    return attn


@pytest.mark.parametrize('path', ['composed', 'fused'])
@pytest.mark.parametrize('h,w,shift', [(14, 14, 3), (10, 17, 3), (9, 9, 0), (5, 3, 3)])
def test_shift_window_attention_matches_spec_any_size(h, w, shift, path, monkeypatch):
    attn = use_path(randomised_shift_window_msa(shift).eval(), path, monkeypatch)
    x = torch.randn(2, h * w, 8, dtype=torch.float64)
    torch.testing.assert_close(attn(x, (h, w)), spec_shift_window_msa(attn, x, h, w, shift),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('path', ['composed', 'fused'])
@pytest.mark.parametrize('h,w,shift', [(14, 17, 3), (7, 7, 0)])
def test_shift_window_attention_gradients_match_spec(h, w, shift, path, monkeypatch):
    """Training gradients (conv path recomputed, rates folded into the weights) against autograd
    through the spec, for the input and every parameter."""
    attn = use_path(randomised_shift_window_msa(shift).train(), path, monkeypatch)
    x = torch.randn(2, h * w, 8, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, h * w, 8, dtype=torch.float64)
    wrt = [x] + list(attn.parameters())
    got = torch.autograd.grad(attn(x, (h, w)), wrt, grad_out)
    want = torch.autograd.grad(spec_shift_window_msa(attn, x, h, w, shift), wrt, grad_out)
    for (name, _), g, r in zip([('x', None)] + list(attn.named_parameters()), got, want):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize('h,w,shift', [(10, 17, 3), (14, 14, 0)])
def test_traced_window_attention_takes_the_permutes_and_matches_eager(h, w, shift):
    """A trace records F.pad, torch.roll and the permuting window partition (which FLOP counting
    and export read) where eager CPU runs use pad_and_roll and the row gathers: same outputs."""
    attn = randomised_shift_window_msa(shift).eval()
    x = torch.randn(2, h * w, 8, dtype=torch.float64)

    class OnMap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, t):
            return self.attn(t, (h, w))

    with torch.no_grad():
        traced = torch.jit.trace(OnMap(), (x, ), check_trace=False)
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert 'aten::index_select' not in kinds and 'prim::PythonOp' not in kinds
    assert ('aten::roll' in kinds) == bool(shift)
    torch.testing.assert_close(traced(x), attn(x, (h, w)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(attn(x, (h, w)), spec_shift_window_msa(attn, x, h, w, shift),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('choice', ['blas', 'onednn'])
def test_float32_window_attention_with_either_timed_product_matches_spec(choice, monkeypatch):
    """float32 on the CPU runs ``qkv`` and ``proj`` through the timed product
    (:func:`acmix_mm.layers.projection.project_tokens`): either choice gives the spec's output and
    gradients (float64 spec, float32 tolerance)."""
    from acmix_mm.layers import projection
    if choice == 'onednn' and projection._MATMUL is None:
        pytest.skip('this torch has no oneDNN matrix product')
    chosen = []

    def force(key, candidates):
        chosen.append(key[0])
        return candidates[choice]()

    monkeypatch.setattr(projection, 'fastest', force)
    attn64 = randomised_shift_window_msa(3).train()
    attn = randomised_shift_window_msa(3).float().train()
    h, w = 14, 17
    x = torch.randn(2, h * w, 8, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, h * w, 8, dtype=torch.float64)
    x32 = x.detach().float().requires_grad_()
    got = torch.autograd.grad(attn(x32, (h, w)), [x32] + list(attn.parameters()), grad_out.float())
    want = torch.autograd.grad(spec_shift_window_msa(attn64, x, h, w, shift=3),
                               [x] + list(attn64.parameters()), grad_out)
    assert sorted(set(chosen)) == ['project_tokens', 'project_tokens_backward']
    for (name, _), g, r in zip([('x', None)] + list(attn.named_parameters()), got, want):
        torch.testing.assert_close(g, r.float(), rtol=1e-4, atol=1e-4, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(attn.eval()(x32, (h, w)),
                                   spec_shift_window_msa(attn64, x, h, w, shift=3).float(),
                                   rtol=1e-4, atol=1e-4)


def test_arbitrary_input_sizes_and_backward():
    model = ACmixSwinTransformer(**TINY)
    outs = model(torch.randn(1, 3, 61, 97))
    assert [tuple(o.shape) for o in outs] == [(1, 24, 16, 25), (1, 48, 8, 13), (1, 96, 4, 7),
                                              (1, 192, 2, 4)]
    sum(o.sum() for o in outs).backward()
    assert model.stages[0].blocks[1].attn.w_msa.fc.weight.grad.abs().sum() > 0


def test_init_keeps_acmix_initialisation():
    model = ACmixSwinTransformer(**TINY)
    model.init_weights()
    msa = model.stages[1].blocks[0].attn.w_msa
    torch.testing.assert_close(msa.dep_conv.weight, shift_kernels(48, 3))
    assert msa.rate1.item() == msa.rate2.item() == 0.5


def test_with_cp_same_outputs_and_grads():
    torch.manual_seed(0)
    plain = ACmixSwinTransformer(**TINY).double()
    ckpt = ACmixSwinTransformer(**TINY, with_cp=True).double()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    weights = [torch.randn(1, 24 * 2**i, 16 // 2**i, 16 // 2**i, dtype=torch.float64)
               for i in range(4)]
    losses = [sum((o * w).sum() for o, w in zip(m(x), weights)) for m in (plain, ckpt)]
    torch.testing.assert_close(losses[0], losses[1])
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(plain.stages[1].blocks[1].attn.w_msa.fc.weight.grad,
                               ckpt.stages[1].blocks[1].attn.w_msa.fc.weight.grad)


def test_frozen_stages_are_frozen():
    model = ACmixSwinTransformer(**TINY, frozen_stages=1)
    model.train()
    frozen = [model.patch_embed, model.stages[0], model.norm0]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in frozen]
    sum(o.sum() for o in model(torch.randn(1, 3, 64, 64))).backward()
    for m, b in zip(frozen, before):
        assert all(not p.requires_grad and p.grad is None for p in m.parameters())
        for k, v in m.state_dict().items():
            torch.testing.assert_close(v, b[k])
    assert model.stages[1].blocks[0].attn.w_msa.fc.weight.requires_grad


def test_qkv_with_hooks_or_another_type_is_called_as_a_module():
    """The timed product reads ``qkv``'s weight directly; a hooked (pruning, a user's hook) or
    replaced ``qkv`` is called as a module instead, so that it takes effect."""
    attn = randomised_shift_window_msa(3).float().eval()
    x = torch.randn(2, 14 * 14, 8)
    with torch.no_grad():
        plain = attn(x, (14, 14))
        calls = []
        handle = attn.w_msa.qkv.register_forward_hook(
            lambda module, inputs, out: calls.append(1) or out * 2)
        hooked = attn(x, (14, 14))
        handle.remove()
        attn.w_msa.qkv = torch.nn.Sequential(attn.w_msa.qkv)
        wrapped = attn(x, (14, 14))
    assert calls == [1] and not torch.allclose(hooked, plain)
    torch.testing.assert_close(wrapped, plain)


@pytest.mark.parametrize('choice', ['blas', 'onednn'])
def test_feed_forward_layers_take_the_timed_product_with_unchanged_outputs(choice, monkeypatch):
    """The feed-forward layers are TunedLinear (only they, besides the attention's own products):
    the state-dict keys are mmdet's, the outputs and gradients those of the model with plain
    linear layers, whichever product the timing picks."""
    from mmcv.cnn.bricks.wrappers import Linear as MMCVLinear

    from acmix_mm.layers import TunedLinear, projection
    from mmdet.models.backbones.swin import SwinTransformer
    if choice == 'onednn' and projection._MATMUL is None:
        pytest.skip('this torch has no oneDNN matrix product')
    torch.manual_seed(0)
    model = ACmixSwinTransformer(**TINY)
    tuned = [n for n, m in model.named_modules() if isinstance(m, TunedLinear)]
    assert len(tuned) == 2 * sum(TINY['depths'])
    assert all('.ffn.' in n for n in tuned)
    assert list(model.state_dict()) == list(ACmixSwinTransformer(**TINY).state_dict())
    mmdet_keys = set(SwinTransformer(**TINY).state_dict())
    assert {k for k in model.state_dict() if '.ffn.' in k} == {k for k in mmdet_keys
                                                              if '.ffn.' in k}
    plain = ACmixSwinTransformer(**TINY)
    plain.load_state_dict(model.state_dict())
    for block in (b for stage in plain.stages for b in stage.blocks):
        for parent in list(block.ffn.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, TunedLinear):
                    linear = MMCVLinear(child.in_features, child.out_features)
                    linear.weight, linear.bias = child.weight, child.bias
                    setattr(parent, name, linear)
    assert not any(isinstance(m, TunedLinear) for m in plain.modules())
    monkeypatch.setattr(projection, 'fastest', lambda key, candidates: candidates[choice]())
    x = torch.randn(1, 3, 64, 64)
    outs = [m(x) for m in (model, plain)]
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)
    got, want = (torch.autograd.grad(sum((o * o).sum() for o in out),
                                     [m.stages[3].blocks[1].ffn.layers[0][0].weight])[0]
                 for m, out in zip((model, plain), outs))
    torch.testing.assert_close(got, want)


def test_stochastic_depth_is_one_pass_with_mmdets_probabilities():
    from mmcv.cnn.bricks.drop import DropPath as MMCVDropPath
    from mmdet.models.backbones.swin import SwinTransformer

    from acmix_mm.layers import DropPath
    kwargs = dict(embed_dims=24, depths=(2, 3), num_heads=(1, 2), strides=(4, 2),
                  out_indices=(0, 1), drop_path_rate=0.3)

    def probabilities(model, kind):
        return [m.drop_prob for m in model.modules() if type(m) is kind]
    ours, theirs = ACmixSwinTransformer(**kwargs), SwinTransformer(**kwargs)
    assert probabilities(ours, MMCVDropPath) == []
    assert probabilities(ours, DropPath) == probabilities(theirs, MMCVDropPath)
    assert len(probabilities(ours, DropPath)) == 10 and max(probabilities(ours, DropPath)) > 0


def test_patch_merging_is_one_copy():
    from acmix_mm.models.layers import OneCopyPatchMerging
    model = ACmixSwinTransformer(**TINY)
    merges = [stage.downsample for stage in model.stages if stage.downsample is not None]
    assert len(merges) == 3
    assert all(type(m) is OneCopyPatchMerging and m.one_copy_applies() for m in merges)

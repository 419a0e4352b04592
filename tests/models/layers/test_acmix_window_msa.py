import pytest
import torch
from mmpretrain.models.utils.attention import ShiftWindowMSA as PretrainShiftWindowMSA

from acmix_mm.layers import pad_and_roll
from acmix_mm.models.layers import ACmixShiftWindowMSA
from acmix_mm.models.layers.acmix_window_msa import MASKED_LOGIT, build_shift_mask, shift_mask

SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


@pytest.mark.parametrize('padded_hw,window,shift', [((14, 14), 7, 3), ((21, 14), 7, 2),
                                                    ((8, 12), 4, 1)])
def test_shift_mask_masks_mmpretrains_regions(padded_hw, window, shift):
    ours = build_shift_mask(padded_hw, window, shift, torch.device('cpu'))
    theirs = PretrainShiftWindowMSA.get_attn_mask(padded_hw, window, shift, torch.device('cpu'))
    assert ours.shape == theirs.shape
    assert torch.equal(ours != 0, theirs != 0) and bool((theirs != 0).any())
    assert set(ours.unique().tolist()) == {0.0, MASKED_LOGIT}
    assert build_shift_mask(padded_hw, window, 0, torch.device('cpu')) is None


def shifted_attention(hw=(15, 13), dtype=torch.float32):
    torch.manual_seed(0)
    attn = ACmixShiftWindowMSA(32, 2, 7, shift_size=3).to(dtype).eval()
    x = torch.randn(2, hw[0] * hw[1], 32, dtype=dtype)
    return attn, x


def test_shifted_softmax_writes_no_denormals():
    """The reference's -100 leaves weights near exp(-100), denormal in float32, on which the
    CPU's products run tens of times slower; masked weights must be exactly 0 instead. The
    weights of the layer's windows and bias, as ``attend`` computes them."""
    attn, x = shifted_attention()
    msa, ws = attn.w_msa, attn.window_size
    with torch.no_grad():
        frame = pad_and_roll(x.view(2, 15, 13, 32), (21, 14), attn.shift_size)
        q, k, _ = msa.split_windows(msa.qkv(frame), ws).unbind(0)
        bias = msa.attention_bias(shift_mask((21, 14), ws, attn.shift_size, x.device), 2 * 6)
        a = torch.baddbmm(bias.reshape(q.shape[0], ws * ws, ws * ws), q, k.transpose(1, 2),
                          alpha=msa.scale).softmax(-1)
    assert int(((a > 0) & (a < SMALLEST_NORMAL)).sum()) == 0
    assert int((a == 0).sum()) > 0  # the shifted windows' cross-region pairs


def test_masked_logit_gives_the_reference_masks_result_in_float64():
    attn, x = shifted_attention(dtype=torch.float64)
    ws, shift = attn.window_size, attn.shift_size
    frame = pad_and_roll(x.view(2, 15, 13, 32), (21, 14), shift)
    reference_mask = PretrainShiftWindowMSA.get_attn_mask((21, 14), ws, shift, x.device)
    ours_mask = build_shift_mask((21, 14), ws, shift, x.device)
    with torch.no_grad():
        ours = attn.attend_composed(frame, ours_mask.double())
        reference = attn.attend_composed(frame, reference_mask.double())
    assert not torch.equal(ours_mask, reference_mask)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)

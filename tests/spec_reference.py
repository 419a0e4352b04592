"""Straightforward computations of ``../shared/acmix-spec.md``, written independently of the
package (explicit unfolding, the full positional logit, explicit channel bookkeeping), used as
the ground truth in the tests."""
import torch
import torch.nn.functional as F


def spec_position(h, w, dtype=torch.float64):
    gx = torch.linspace(-1, 1, w, dtype=dtype).repeat(h, 1)
    gy = torch.linspace(-1, 1, h, dtype=dtype).unsqueeze(1).repeat(1, w)
    return torch.stack([gx, gy], 0)[None]


def spec_reflect_pad(x, p):
    """Reflection padding by index arithmetic, pixel by pixel (any size)."""
    h, w = x.shape[-2:]

    def src(i, n):
        if n == 1:
            return 0
        while i < 0 or i >= n:
            i = -i if i < 0 else 2 * (n - 1) - i
        return i

    rows = torch.tensor([src(i, h) for i in range(-p, h + p)])
    cols = torch.tensor([src(j, w) for j in range(-p, w + p)])
    return x[..., rows, :][..., cols]


def spec_acmix_resnet(x, conv1, conv2, conv3, conv_p, fc, dep_conv, rate1, rate2, heads, k_att,
                      k_conv, stride, dilation=1):
    """ACmix (ResNet variant) from parameter tensors: conv* are (weight, bias) pairs."""
    q = F.conv2d(x, *conv1)
    k = F.conv2d(x, *conv2)
    v = F.conv2d(x, *conv3)
    b, c, h, w = q.shape
    n = heads
    d = c // n
    pe = F.conv2d(spec_position(h, w, x.dtype), *conv_p)  # (1, d, H, W)
    p = dilation * (k_att - 1) // 2
    ho, wo = -(-h // stride), -(-w // stride)
    kp, vp, pep = (spec_reflect_pad(t, p) for t in (k, v, pe))
    out_att = torch.zeros(b, c, ho, wo, dtype=x.dtype)
    for head in range(n):
        sl = slice(head * d, (head + 1) * d)
        qh = q[:, sl] * d ** -0.5
        for i in range(ho):
            for j in range(wo):
                yi, xj = i * stride, j * stride
                qv = qh[:, :, yi, xj]  # (B, d)
                rows = [yi + a * dilation for a in range(k_att)]
                cols = [xj + a * dilation for a in range(k_att)]
                kw = kp[:, sl][:, :, rows][:, :, :, cols].reshape(b, d, -1)
                vw = vp[:, sl][:, :, rows][:, :, :, cols].reshape(b, d, -1)
                pw = pep[:, :, rows][:, :, :, cols].reshape(1, d, -1)
                logit = (qv[:, :, None] * (kw + pe[:, :, yi, xj][:, :, None] - pw)).sum(1)
                a = logit.softmax(-1)
                out_att[:, sl, i, j] = (a[:, None] * vw).sum(-1)
    # conv path: 3N maps of d channels, fc over the 3N axis, channel c*k^2+j, grouped conv
    maps = torch.cat([q, k, v], 1).reshape(b, 3 * n, d, h, w)
    f = torch.einsum('jt,btchw->bcjhw', fc[0][:, :, 0, 0], maps)
    if fc[1] is not None:
        f = f + fc[1][None, None, :, None, None]
    f = f.reshape(b, d * k_conv * k_conv, h, w)
    out_conv = F.conv2d(f, dep_conv[0], dep_conv[1], stride=stride,
                        padding=dilation * (k_conv // 2), dilation=dilation, groups=d)
    return rate1 * out_att + rate2 * out_conv


def spec_acmix_from_module(m, x):
    g = lambda c: (c.weight, c.bias)  # noqa: E731
    return spec_acmix_resnet(x, g(m.conv1), g(m.conv2), g(m.conv3), g(m.conv_p), g(m.fc),
                             g(m.dep_conv), m.rate1, m.rate2, m.heads, m.kernel_att,
                             m.kernel_conv, m.stride, m.dilation)


# ----------------------------------------------------------------------------------------------
# Swin variant: a whole reference classifier, from a state dict with the reference key names.

def spec_window_mask(h, w, ws, shift):
    """Region-id mask of shifted windows: 0 within a region, -100 across regions."""
    def region(n):
        idx = torch.arange(n)
        return (idx >= n - ws).long() + (idx >= n - shift).long()
    ids = (region(h)[:, None] * 3 + region(w)[None, :]).float()
    win = ids.view(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, torch.full_like(diff, -100.), torch.zeros_like(diff))


def spec_relative_index(ws):
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij'))
    coords = coords.flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def spec_acmix_swin_attention(x, sd, p, heads, ws, mask):
    """x: (B, H, W, C) after norm1 and the cyclic shift. Reference key prefix ``p``."""
    b, h, w, c = x.shape
    d = c // heads
    qkv = F.linear(x, sd[p + 'qkv.weight'], sd[p + 'qkv.bias'])  # (B, H, W, 3C)
    # conv path: 3N maps of d channels, fc (with bias) over them, channel c*9+j, grouped conv
    maps = qkv.reshape(b, h * w, 3 * heads, d).permute(0, 2, 1, 3)  # (B, 3N, HW, d)
    fcw = sd[p + 'fc.weight'][:, :, 0, 0]
    f = torch.einsum('jt,btpc->bjpc', fcw, maps) + sd[p + 'fc.bias'][None, :, None, None]
    f = f.permute(0, 3, 1, 2).reshape(b, d * 9, h, w)
    dep_b = sd.get(p + 'dep_conv.bias')
    out_conv = F.conv2d(f, sd[p + 'dep_conv.weight'], dep_b, padding=1, groups=d)
    out_conv = out_conv.permute(0, 2, 3, 1)
    # windows
    win = qkv.view(b, h // ws, ws, w // ws, ws, 3 * c).permute(0, 1, 3, 2, 4, 5)
    win = win.reshape(-1, ws * ws, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = win[0] * d ** -0.5, win[1], win[2]
    attn = q @ k.transpose(-2, -1)
    table = sd[p + 'relative_position_bias_table']
    attn = attn + table[spec_relative_index(ws).view(-1)].view(ws * ws, ws * ws, -1).permute(
        2, 0, 1)[None]
    if mask is not None:
        nw = mask.shape[0]
        attn = (attn.view(-1, nw, heads, ws * ws, ws * ws) + mask[None, :, None]).view(
            -1, heads, ws * ws, ws * ws)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, ws * ws, c)
    out = F.linear(out, sd[p + 'proj.weight'], sd[p + 'proj.bias'])
    out = out.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
    return sd[p + 'rate1'] * out + sd[p + 'rate2'] * out_conv


def spec_acmix_swin_classifier(sd, x, depths, heads, window=7, patch=4):
    """The reference ACmix-Swin classifier's logits (eval mode)."""
    ln = lambda t, k: F.layer_norm(t, t.shape[-1:], sd[k + '.weight'], sd[k + '.bias'])  # noqa
    x = F.conv2d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], stride=patch)
    b, c, h, w = x.shape
    x = ln(x.flatten(2).transpose(1, 2), 'patch_embed.norm')
    for i, depth in enumerate(depths):
        for j in range(depth):
            p = f'layers.{i}.blocks.{j}.'
            ws, shift = window, (window // 2 if j % 2 else 0)
            if min(h, w) <= ws:
                ws, shift = min(h, w), 0
            shortcut = x
            y = ln(x, p + 'norm1').view(b, h, w, c)
            y = torch.roll(y, (-shift, -shift), (1, 2))
            mask = spec_window_mask(h, w, ws, shift) if shift else None
            y = spec_acmix_swin_attention(y, sd, p + 'attn.', heads[i], ws, mask)
            y = torch.roll(y, (shift, shift), (1, 2)).reshape(b, h * w, c)
            x = shortcut + y
            z = F.gelu(F.linear(ln(x, p + 'norm2'), sd[p + 'mlp.fc1.weight'], sd[p + 'mlp.fc1.bias']))
            x = x + F.linear(z, sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'])
        if i < len(depths) - 1:
            g = x.view(b, h, w, c)
            g = torch.cat([g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2], g[:, 1::2, 1::2]], -1)
            h, w = h // 2, w // 2
            g = ln(g.reshape(b, h * w, 4 * c), f'layers.{i}.downsample.norm')
            x = F.linear(g, sd[f'layers.{i}.downsample.reduction.weight'])
            c *= 2
    x = ln(x, 'norm').mean(1)
    return F.linear(x, sd['head.weight'], sd['head.bias'])


def reference_swin_state_dict(embed=24, depths=(2, 2, 2, 2), heads=(1, 2, 3, 4), window=7,
                              mlp_ratio=4, patch=4, resolution=224, classes=10, seed=0):
    """Random weights under the reference ACmix-Swin key names and shapes, with the stored
    buffers (``relative_position_index``, ``attn_mask``) and no ``dep_conv.bias``."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa
    sd = {'patch_embed.proj.weight': r(embed, 3, patch, patch), 'patch_embed.proj.bias': r(embed)}

    def norm(name, n):
        sd[name + '.weight'] = 1 + r(n)
        sd[name + '.bias'] = r(n)
    norm('patch_embed.norm', embed)
    c, res = embed, resolution // patch
    for i, depth in enumerate(depths):
        d = c // heads[i]
        for j in range(depth):
            p = f'layers.{i}.blocks.{j}.'
            ws = min(window, res)
            norm(p + 'norm1', c)
            sd[p + 'attn.relative_position_bias_table'] = r((2 * ws - 1) ** 2, heads[i])
            sd[p + 'attn.relative_position_index'] = spec_relative_index(ws)
            sd[p + 'attn.qkv.weight'], sd[p + 'attn.qkv.bias'] = r(3 * c, c), r(3 * c)
            sd[p + 'attn.proj.weight'], sd[p + 'attn.proj.bias'] = r(c, c), r(c)
            sd[p + 'attn.fc.weight'], sd[p + 'attn.fc.bias'] = r(9, 3 * heads[i], 1, 1), r(9)
            sd[p + 'attn.dep_conv.weight'] = r(c, 9, 3, 3)
            sd[p + 'attn.rate1'], sd[p + 'attn.rate2'] = 0.5 + r(1), 0.5 + r(1)
            norm(p + 'norm2', c)
            sd[p + 'mlp.fc1.weight'], sd[p + 'mlp.fc1.bias'] = r(mlp_ratio * c, c), r(mlp_ratio * c)
            sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'] = r(c, mlp_ratio * c), r(c)
            if j % 2 and res > window:
                sd[p + 'attn_mask'] = spec_window_mask(res, res, window, window // 2)
        if i < len(depths) - 1:
            norm(f'layers.{i}.downsample.norm', 4 * c)
            sd[f'layers.{i}.downsample.reduction.weight'] = r(2 * c, 4 * c)
            c, res = 2 * c, res // 2
    norm('norm', c)
    sd['head.weight'], sd['head.bias'] = r(classes, c), r(classes)
    return sd

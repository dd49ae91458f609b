"""IsotropicNet: known answers for each inductive bias, the masked-modelling API, errors."""

from __future__ import annotations

import pytest
import torch

from ssl_biases.backbones import IsotropicNet
from ssl_biases.backbones.mixers import AttentionMixer, ConvMixer, LocalAttentionMixer

TINY = dict(image_size=32, patch_size=4, width=32, depth=2, num_heads=2)


def net(**kwargs) -> IsotropicNet:
    torch.manual_seed(0)
    return IsotropicNet(**{**TINY, **kwargs}).eval()


def permute_patches(x: torch.Tensor, perm: torch.Tensor, p: int) -> torch.Tensor:
    b, c, h, w = x.shape
    gh, gw = h // p, w // p
    patches = x.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c, p, p)
    patches = patches[:, perm].reshape(b, gh, gw, c, p, p)
    return patches.permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def test_attention_without_pos_embed_is_patch_permutation_invariant():
    model = net(pos_embed="none", token_mixer="attention", pool="gap")
    x = torch.randn(2, 3, 32, 32)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(permute_patches(x, perm, 4)), model(x))


def test_learned_pos_embed_breaks_permutation_invariance():
    model = net(pos_embed="learned", token_mixer="attention", pool="gap")
    with torch.no_grad():
        model.pos_embed.weight.normal_()
    x = torch.randn(2, 3, 32, 32)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    assert (model(permute_patches(x, perm, 4)) - model(x)).abs().max() > 1e-3


def test_conv_mixer_is_translation_equivariant_away_from_borders():
    model = net(pos_embed="none", token_mixer=ConvMixer(kernel_size=3), pool="gap", image_size=48)
    x = torch.randn(1, 3, 48, 48)
    shifted = torch.roll(x, shifts=4, dims=3)  # one patch to the right
    f = model.forward_features(x).transpose(1, 2).reshape(1, 32, 12, 12)
    g = model.forward_features(shifted).transpose(1, 2).reshape(1, 32, 12, 12)
    # receptive field: depth 2 x radius 1 = 2 tokens; keep away from both borders
    torch.testing.assert_close(g[..., 2:10, 3:10], f[..., 2:10, 2:9])
    assert (g[..., 2:10, 2:9] - f[..., 2:10, 2:9]).abs().max() > 1e-3


def test_mlp_mixer_one_patch_changes_every_token_after_one_block():
    model = net(pos_embed="none", token_mixer="mlp", pool="gap", depth=1)
    x = torch.randn(1, 3, 32, 32)
    y = x.clone()
    y[..., :4, :4] += 1.0  # patch 0 only
    diff = (model.forward_intermediates(x)[0] - model.forward_intermediates(y)[0]).abs()
    assert diff.amax(dim=-1).min() > 0  # every one of the 64 tokens moved


@pytest.mark.parametrize("pool", ["cls", "gap"])
def test_local_attention_weights_outside_window_are_exactly_zero(pool):
    r = 1
    model = net(token_mixer=LocalAttentionMixer(window_radius=r), pool=pool)
    maps = model.attention_maps(torch.randn(2, 3, 32, 32))
    p = model.num_prefix_tokens
    rows = torch.arange(8).repeat_interleave(8)
    cols = torch.arange(8).repeat(8)
    cheb = torch.maximum((rows[:, None] - rows).abs(), (cols[:, None] - cols).abs())
    for a in maps:
        patch = a[..., p:, p:]
        assert torch.all(patch[..., cheb > r] == 0)
        assert torch.all(patch[..., cheb <= r] > 0)
        if p:
            assert torch.all(a[..., 0, :] > 0) and torch.all(a[..., :, 0] > 0)


def test_attention_maps_match_fused_forward():
    model = net(token_mixer="attention", pool="cls", depth=1)
    x = torch.randn(2, 3, 32, 32)
    blk = model.blocks[0]
    tokens, grid = model._prepare(model.embed_patches(x), None, (8, 8))
    a = model.attention_maps(x)[0]  # [B, H, T, T]
    _, _, v = blk.mixer._qkv(blk.norm1(tokens))
    explicit = blk.mixer.proj((a @ v).transpose(1, 2).reshape(2, 65, 32))
    torch.testing.assert_close(explicit, blk.mixer(blk.norm1(tokens), grid))


@pytest.mark.parametrize("last_dim", [16, 32, 96])
@pytest.mark.parametrize("pool", ["gap", "map", "cls"])
def test_last_dim_sets_output_width(last_dim, pool):
    model = net(last_dim=last_dim, pool=pool)
    x = torch.randn(2, 3, 32, 32)
    assert model.num_features == last_dim
    assert model(x).shape == (2, last_dim)
    assert model.forward_features(x).shape[-1] == last_dim
    widths = [t.shape[-1] for t in model.forward_intermediates(x)]
    assert widths == [32, last_dim]
    assert model.blocks[-1].mlp.fc1.out_features == 4 * 32  # hidden width unchanged


def test_last_dim_equal_to_width_changes_nothing_but_the_final_relu():
    a, b = net(last_dim=32), net()
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    x = torch.randn(2, 3, 32, 32)
    old = net(last_dim=32, last_block_act="none")  # the block before issue 29
    torch.testing.assert_close(old(x), b(x))
    assert isinstance(a.blocks[-1].out_act, torch.nn.ReLU)
    assert isinstance(b.blocks[-1].out_act, torch.nn.Identity)  # no last_dim: plain net
    assert not torch.allclose(a(x), b(x))


def pooled_rank(last_dim: int, last_block_act: str) -> int:
    """float32 rank of the pooled features of 1,536 random images (issue 29's setting)."""
    torch.manual_seed(0)
    model = IsotropicNet(
        width=64, depth=4, patch_size=8, num_heads=4, mlp_ratio=4.0, pool="gap",
        last_dim=last_dim, last_block_act=last_block_act,
    ).eval()  # fmt: skip
    x = torch.randn(1536, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = torch.cat([model(x[i : i + 512]) for i in range(0, 1536, 512)])  # [1536, D]
    return int(torch.linalg.matrix_rank(features))


def test_last_block_relu_lifts_the_rank_cap_of_wide_last_dims():
    # Without an activation after the sum, the last block is linear in [x, hidden], so the
    # pooled features have rank <= 64 + 4 * 64 = 320 at any D (Bordes et al. 2304.05369 need
    # D to matter); the ReLU gives rank D - 1 (the final LayerNorm removes the mean direction).
    assert pooled_rank(1024, "none") == 320
    assert pooled_rank(1024, "relu") >= 1000
    assert pooled_rank(256, "relu") >= 250


def test_last_block_act_is_checked():
    with pytest.raises(ValueError, match="out_act"):
        net(last_dim=48, last_block_act="tanh")


def last_block_scales(last_dim: int) -> tuple[float, float]:
    """(RMS(R x) / RMS(x), output std of the last block) at width 64 for one ``last_dim``."""
    model = net(width=64, last_dim=last_dim)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        tokens, grid = model._prepare(model.embed_patches(x), None, model.grid_size)
        tokens = model.blocks[0](tokens, grid)  # [B, N, 64], the last block's input
        last = model.blocks[-1]
        skip = last.residual_proj(tokens)  # [B, N, last_dim]
        out = last(tokens, grid)  # [B, N, last_dim]
    rms = lambda t: t.pow(2).mean().sqrt().item()  # noqa: E731
    return rms(skip) / rms(tokens), out.std().item()


def test_last_dim_keeps_the_skip_path_scale():
    # trunc_normal(0.02) projections give a skip gain of sqrt(64) * 0.02 = 0.16 (sixfold
    # shrink) and a last-block output std ~6x below last_dim=64's; the scaled orthogonal
    # start keeps both within 15 % of the identity's.
    gain_ref, std_ref = last_block_scales(64)
    assert gain_ref == pytest.approx(1.0)
    for last_dim in (16, 256):
        gain, std = last_block_scales(last_dim)
        assert gain == pytest.approx(1.0, rel=0.15), last_dim
        assert std == pytest.approx(std_ref, rel=0.15), last_dim


@pytest.mark.parametrize("pos_embed", ["none", "learned"])
def test_forward_tokens_keep_equals_running_on_subset(pos_embed):
    model = net(pos_embed=pos_embed, pool="cls")
    x = torch.randn(2, 3, 32, 32)
    tokens = model.embed_patches(x)  # [2, 64, 32]
    keep = torch.stack([torch.randperm(64)[:16] for _ in range(2)])  # [2, 16]
    out = model.forward_tokens(tokens, keep)
    assert out.shape == (2, 1 + 16, 32)
    # reference: position-embed all, take the subset, run blocks on it alone
    sub = torch.gather(model.pos_embed(tokens, (8, 8)), 1, keep[..., None].expand(-1, -1, 32))
    ref = torch.cat([model.cls_token.expand(2, -1, -1), sub], 1)
    for blk in model.blocks:
        ref = blk(ref, (8, 8))
    torch.testing.assert_close(out, model.norm(ref))
    # dropped tokens have no influence
    garbage = tokens.clone()
    mask = torch.ones(2, 64, dtype=torch.bool).scatter_(1, keep, False)
    garbage[mask] = 100.0
    torch.testing.assert_close(model.forward_tokens(garbage, keep), out)
    if pos_embed == "none":
        subset = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, 32))
        torch.testing.assert_close(model.forward_tokens(subset, grid_size=(4, 4)), out)


@pytest.mark.parametrize("mixer", ["local_attention", "mlp", "conv", "pool"])
def test_token_dropping_rejected_without_global_attention(mixer):
    model = net(token_mixer=mixer, pool="gap")
    assert model.supports_token_dropping is False
    with pytest.raises(ValueError, match="cannot drop tokens"):
        model.forward_tokens(torch.randn(1, 64, 32), torch.zeros(1, 8, dtype=torch.long))


@pytest.mark.parametrize("pos_embed", ["learned", "sincos2d", "none"])
@pytest.mark.parametrize("mixer", ["attention", "local_attention", "conv", "pool"])
def test_smaller_crops_work(pos_embed, mixer):
    pool = "cls" if "attention" in mixer else "gap"
    model = net(pos_embed=pos_embed, token_mixer=mixer, pool=pool)
    p = model.num_prefix_tokens
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 32)
    assert model.forward_features(torch.randn(2, 3, 16, 24)).shape == (2, p + 4 * 6, 32)
    if model.has_attention:
        assert model.attention_maps(torch.randn(1, 3, 16, 16))[0].shape == (1, 2, p + 16, p + 16)


def test_learned_pos_embed_is_interpolated_for_other_grids():
    model = net(pos_embed="learned", pool="gap")
    x = torch.zeros(1, 16, 32)
    out = model.pos_embed(x, (4, 4))
    assert out.shape == (1, 16, 32)
    assert not torch.equal(out, torch.zeros_like(out))
    torch.testing.assert_close(
        model.pos_embed(torch.zeros(1, 64, 32), (8, 8)), model.pos_embed.weight
    )


def test_mlp_mixer_needs_configured_image_size():
    model = net(token_mixer="mlp", pool="gap")
    with pytest.raises(ValueError, match="configured image size"):
        model(torch.randn(1, 3, 16, 16))


def test_patch_size_must_divide_image_size():
    with pytest.raises(ValueError, match=r"30 is not divisible by patch_size 4.*28 or 32"):
        IsotropicNet(image_size=30, patch_size=4, width=32, depth=1, num_heads=2)


def test_input_not_divisible_by_patch_is_an_error():
    with pytest.raises(ValueError, match="not divisible by patch_size 4"):
        net()(torch.randn(1, 3, 18, 16))


@pytest.mark.parametrize("mixer", ["mlp", "conv", "pool", "identity"])
def test_cls_pool_needs_attention(mixer):
    with pytest.raises(ValueError, match="pool='gap' or 'map'"):
        net(token_mixer=mixer, pool="cls")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(token_mixer="conv", pool="gap", kernel_size=4), "odd"),  # legacy flat knob
        (dict(pos_embed="sincos2d", width=30), "divisible by 4"),
        (dict(num_heads=3), "not divisible by num_heads"),
        (dict(stem="conv", patch_size=6, image_size=24), "power of two"),
        (dict(last_dim=0), "last_dim"),
        (dict(drop_path=1.0), "drop_path"),
        (dict(token_mixer="transformer"), "unknown token_mixer"),
    ],
)
def test_invalid_knobs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        net(**kwargs)


KNOBS = [
    {"stem": "patch"},
    {"stem": "conv"},
    {"stem": "overlap"},
    {"pos_embed": "none"},
    {"pos_embed": "learned"},
    {"pos_embed": "sincos2d"},
    {"token_mixer": "attention"},
    {"token_mixer": "local_attention"},
    {"token_mixer": "mlp", "pool": "gap"},
    {"token_mixer": "conv", "pool": "gap"},
    {"token_mixer": "pool", "pool": "gap"},
    {"pool": "cls"},
    {"pool": "gap"},
    {"pool": "map"},
    {"last_dim": 48},
    {"drop_path": 0.2},
    {"token_mixer": AttentionMixer(qkv_bias=False)},
    {"token_mixer": "identity", "pool": "gap"},
    {"token_mixer": "mlp", "pool": "map", "stem": "conv", "pos_embed": "sincos2d"},
]


@pytest.mark.parametrize("knobs", KNOBS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
def test_every_knob_builds_and_trains_a_step(knobs):
    model = net(**knobs).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 3, 32, 32)
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(x).square().mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    opt.step()
    assert torch.isfinite(loss)
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
    assert sum(changed) > 0.9 * len(changed)

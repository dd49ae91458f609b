"""Token mixers: layers against naive references and locality patterns; the typed factories."""

from __future__ import annotations

import typing

import pytest
import torch

from ssl_biases.backbones import IsotropicNet
from ssl_biases.backbones.mixers import (
    TOKEN_MIXERS,
    AttentionMixer,
    AvgPoolMinusInput,
    ConvMixer,
    DepthwiseConv,
    IdentityMixer,
    LocalAttentionMixer,
    LocalSelfAttention,
    NoTokenMixing,
    PoolMixer,
    SelfAttention,
    TokenMixerName,
    TokenMlp,
    TokenMlpMixer,
    resolve_token_mixer,
)


def naive_attention(m: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    b, t, d = x.shape
    out = torch.zeros(b, t, d)
    qkv = m.qkv(x)
    for h in range(m.num_heads):
        sl = slice(h * m.head_dim, (h + 1) * m.head_dim)
        q, k, v = qkv[..., sl], qkv[..., d:][..., sl], qkv[..., 2 * d :][..., sl]
        w = torch.softmax(q @ k.transpose(1, 2) / m.head_dim**0.5, dim=-1)
        out[..., sl] = w @ v
    return m.proj(out)


def test_attention_matches_naive_reference():
    torch.manual_seed(0)
    m = SelfAttention(16, 4)
    x = torch.randn(2, 9, 16)
    torch.testing.assert_close(m(x, (3, 3)), naive_attention(m, x))
    assert m.attention(x, (3, 3)).shape == (2, 4, 9, 9)


def test_local_attention_with_radius_covering_grid_equals_global():
    torch.manual_seed(0)
    glob = SelfAttention(16, 2, num_prefix_tokens=1)
    loc = LocalSelfAttention(16, 2, window_radius=3, num_prefix_tokens=1)
    loc.load_state_dict(glob.state_dict())
    x = torch.randn(2, 17, 16)
    torch.testing.assert_close(loc(x, (4, 4)), glob(x, (4, 4)))


def test_local_attention_mask_counts():
    m = LocalSelfAttention(8, 1, window_radius=1, num_prefix_tokens=1)
    mask = m.attention_mask(1 + 16, (4, 4), torch.device("cpu"))
    assert mask[0].all() and mask[:, 0].all()
    per_patch = mask[1:, 1:].sum(-1).reshape(4, 4)
    # corner 2x2=4, edge 2x3=6, interior 3x3=9
    assert per_patch.tolist() == [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]]


def test_local_attention_radius_zero_sees_only_itself():
    torch.manual_seed(0)
    m = LocalSelfAttention(8, 2, window_radius=0)
    a = m.attention(torch.randn(1, 9, 8), (3, 3))
    torch.testing.assert_close(a, torch.eye(9).expand(1, 2, 9, 9))


def test_conv_mixer_is_local():
    torch.manual_seed(0)
    m = DepthwiseConv(8, kernel_size=3)
    x = torch.randn(1, 25, 8)
    y = x.clone()
    y[:, 0] += 1.0  # token (0, 0)
    changed = (m(x, (5, 5)) - m(y, (5, 5))).abs().amax(-1).reshape(5, 5) > 0
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(changed, expected)


def test_pool_mixer_is_avg_minus_identity():
    m = AvgPoolMinusInput(3)
    x = torch.arange(9.0).reshape(1, 9, 1)  # grid [[0,1,2],[3,4,5],[6,7,8]]
    out = m(x, (3, 3)).reshape(3, 3)
    assert out[1, 1] == 0.0  # mean of 0..8 is 4
    assert out[0, 0] == pytest.approx((0 + 1 + 3 + 4) / 4 - 0)  # borders: valid tokens only


def test_token_mlp_mixer_mixes_all_tokens_and_needs_its_size():
    torch.manual_seed(0)
    m = TokenMlp(num_patches=16, hidden=8)
    x = torch.randn(2, 16, 4)
    y = x.clone()
    y[:, 5] += 1.0
    assert ((m(x, (4, 4)) - m(y, (4, 4))).abs().amax(-1) > 0).all()
    assert m.mlp.fc1.out_features == 8
    with pytest.raises(ValueError, match="exactly 16 patches"):
        m(torch.randn(1, 9, 4), (3, 3))


def test_token_dropping_flags():
    assert AttentionMixer.supports_token_dropping is True
    assert IdentityMixer.supports_token_dropping is True
    for cls in (LocalAttentionMixer, TokenMlpMixer, ConvMixer, PoolMixer):
        assert cls.supports_token_dropping is False


def test_every_mixer_has_its_name_in_the_config_literal():
    assert set(typing.get_args(TokenMixerName)) == set(TOKEN_MIXERS)
    assert len(TOKEN_MIXERS) == 6


@pytest.mark.parametrize(
    ("mixer", "layer", "params"),
    [
        (AttentionMixer(), SelfAttention, 8 * 24 + 24 + 8 * 8 + 8),
        (AttentionMixer(qkv_bias=False), SelfAttention, 8 * 24 + 8 * 8 + 8),
        (LocalAttentionMixer(window_radius=2), LocalSelfAttention, 8 * 24 + 24 + 8 * 8 + 8),
        (TokenMlpMixer(token_mlp_ratio=0.5), TokenMlp, 16 * 8 + 8 + 8 * 16 + 16),
        (ConvMixer(kernel_size=5), DepthwiseConv, 8 * 25 + 8),
        (PoolMixer(kernel_size=3), AvgPoolMinusInput, 0),
        (IdentityMixer(), NoTokenMixing, 0),
    ],
)
def test_factory_builds_its_layer_from_what_the_net_supplies(mixer, layer, params):
    built = mixer.build(dim=8, grid_size=(4, 4), num_prefix_tokens=0, num_heads=2)
    assert type(built) is layer
    assert sum(p.numel() for p in built.parameters()) == params
    assert built(torch.randn(2, 16, 8), (4, 4)).shape == (2, 16, 8)


def test_names_mean_the_mixer_with_its_defaults():
    assert resolve_token_mixer("conv") == ConvMixer(kernel_size=3)
    assert resolve_token_mixer("local_attention") == LocalAttentionMixer(window_radius=1)
    assert resolve_token_mixer("mlp") == TokenMlpMixer(token_mlp_ratio=2.0)
    stored = {"class_path": f"{ConvMixer.__module__}.ConvMixer", "init_args": {"kernel_size": 7}}
    assert resolve_token_mixer(stored) == ConvMixer(7)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("transformer", "unknown token_mixer 'transformer'"),
        ({"class_path": "ssl_biases.backbones.mixers.ConvMixer", "init_args": {"k": 3}}, "'k'"),
        ({"class_path": "torch.nn.Linear"}, "not a ssl_biases"),
        ({"class_path": "ssl_biases.backbones.mixers.Nope"}, "cannot import"),
        (3, "must be a name"),
    ],
)
def test_bad_mixer_values_raise(value, match):
    with pytest.raises(ValueError, match=match):
        resolve_token_mixer(value)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ConvMixer(kernel_size=4), "odd"),
        (lambda: PoolMixer(kernel_size=0), "odd"),
        (lambda: LocalAttentionMixer(window_radius=-1), "window_radius"),
        (lambda: TokenMlpMixer(token_mlp_ratio=0.0), "token_mlp_ratio"),
    ],
)
def test_bad_knobs_raise_when_the_config_is_built(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def _changed_tokens(model: IsotropicNet, token: int) -> int:
    """How many output tokens move when input patch token ``token`` is perturbed."""
    tokens = torch.randn(1, model.num_patches, model.width)
    moved = tokens.clone()
    moved[:, token] += torch.randn(model.width)  # not a constant: LayerNorm ignores those
    diff = (model.forward_tokens(moved) - model.forward_tokens(tokens)).abs().amax(-1)  # [1, N]
    return int((diff > 1e-6).sum())


@pytest.mark.parametrize("depth", [1, 3])
def test_identity_mixer_leaves_tokens_unmixed(depth):
    torch.manual_seed(0)
    kw = dict(image_size=16, width=16, depth=depth, num_heads=2, pool="gap")
    model = IsotropicNet(token_mixer="identity", **kw).eval()
    assert _changed_tokens(model, token=5) == 1  # only token 5 itself
    # the Jacobian of the output tokens wrt the input tokens is block-diagonal
    tokens = torch.randn(1, 16, 16, requires_grad=True)
    (model.forward_tokens(tokens)[0, 5] * torch.randn(16)).sum().backward()  # a random read-out
    grad = tokens.grad[0].abs().sum(-1)  # [N]
    assert grad[5] > 0 and grad.sum() == grad[5]
    # the same probe sees mixing in the other mixers (conv: 3x3 patches per block)
    conv = IsotropicNet(token_mixer="conv", **kw).eval()
    assert _changed_tokens(conv, token=5) == (9 if depth == 1 else 16)
    assert _changed_tokens(IsotropicNet(token_mixer="attention", **kw).eval(), token=5) == 16


def test_identity_mixer_has_no_weights_and_drops_tokens():
    torch.manual_seed(0)
    kw = dict(image_size=16, width=16, depth=2, num_heads=2, pool="gap")
    model = IsotropicNet(token_mixer=IdentityMixer(), **kw)
    assert not any(".mixer." in key for key in model.state_dict())
    assert model.supports_token_dropping and not model.has_attention
    keep = torch.tensor([[0, 3, 7]])
    out = model.forward_tokens(model.embed_patches(torch.randn(1, 3, 16, 16)), keep=keep)
    assert out.shape == (1, 3, 16)
    with pytest.raises(ValueError, match="pool='gap' or 'map'"):
        IsotropicNet(token_mixer="identity", image_size=16, width=16, depth=1, num_heads=2)

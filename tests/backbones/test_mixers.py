"""Token mixers against naive references and known locality patterns."""

from __future__ import annotations

import pytest
import torch

from ssl_biases.backbones.mixers import (
    AttentionMixer,
    ConvMixer,
    LocalAttentionMixer,
    PoolMixer,
    TokenMlpMixer,
)


def naive_attention(m: AttentionMixer, x: torch.Tensor) -> torch.Tensor:
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
    m = AttentionMixer(16, 4)
    x = torch.randn(2, 9, 16)
    torch.testing.assert_close(m(x, (3, 3)), naive_attention(m, x))
    assert m.attention(x, (3, 3)).shape == (2, 4, 9, 9)


def test_local_attention_with_radius_covering_grid_equals_global():
    torch.manual_seed(0)
    glob = AttentionMixer(16, 2, num_prefix_tokens=1)
    loc = LocalAttentionMixer(16, 2, window_radius=3, num_prefix_tokens=1)
    loc.load_state_dict(glob.state_dict())
    x = torch.randn(2, 17, 16)
    torch.testing.assert_close(loc(x, (4, 4)), glob(x, (4, 4)))


def test_local_attention_mask_counts():
    m = LocalAttentionMixer(8, 1, window_radius=1, num_prefix_tokens=1)
    mask = m.attention_mask(1 + 16, (4, 4), torch.device("cpu"))
    assert mask[0].all() and mask[:, 0].all()
    per_patch = mask[1:, 1:].sum(-1).reshape(4, 4)
    # corner 2x2=4, edge 2x3=6, interior 3x3=9
    assert per_patch.tolist() == [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]]


def test_local_attention_radius_zero_sees_only_itself():
    torch.manual_seed(0)
    m = LocalAttentionMixer(8, 2, window_radius=0)
    a = m.attention(torch.randn(1, 9, 8), (3, 3))
    torch.testing.assert_close(a, torch.eye(9).expand(1, 2, 9, 9))


def test_conv_mixer_is_local():
    torch.manual_seed(0)
    m = ConvMixer(8, kernel_size=3)
    x = torch.randn(1, 25, 8)
    y = x.clone()
    y[:, 0] += 1.0  # token (0, 0)
    changed = (m(x, (5, 5)) - m(y, (5, 5))).abs().amax(-1).reshape(5, 5) > 0
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(changed, expected)


def test_pool_mixer_is_avg_minus_identity():
    m = PoolMixer(3)
    x = torch.arange(9.0).reshape(1, 9, 1)  # grid [[0,1,2],[3,4,5],[6,7,8]]
    out = m(x, (3, 3)).reshape(3, 3)
    assert out[1, 1] == 0.0  # mean of 0..8 is 4
    assert out[0, 0] == pytest.approx((0 + 1 + 3 + 4) / 4 - 0)  # borders: valid tokens only


def test_token_mlp_mixer_mixes_all_tokens_and_needs_its_size():
    torch.manual_seed(0)
    m = TokenMlpMixer(num_patches=16, hidden=8)
    x = torch.randn(2, 16, 4)
    y = x.clone()
    y[:, 5] += 1.0
    assert ((m(x, (4, 4)) - m(y, (4, 4))).abs().amax(-1) > 0).all()
    assert m.mlp.fc1.out_features == 8
    with pytest.raises(ValueError, match="exactly 16 patches"):
        m(torch.randn(1, 9, 4), (3, 3))


def test_token_dropping_flags():
    assert AttentionMixer.supports_token_dropping is True
    for cls in (LocalAttentionMixer, TokenMlpMixer, ConvMixer, PoolMixer):
        assert cls.supports_token_dropping is False

"""The isotropic block, including the widened/narrowed last block."""

from __future__ import annotations

import torch
from torch import nn

from ssl_biases.backbones.block import IsotropicBlock


class ZeroMixer(nn.Module):
    def forward(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        return torch.zeros_like(x)


def test_block_with_zero_branches_is_identity():
    blk = IsotropicBlock(8, ZeroMixer(), mlp_ratio=2.0)
    nn.init.zeros_(blk.mlp.fc2.weight)
    nn.init.zeros_(blk.mlp.fc2.bias)
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(blk(x, (2, 2)), x)


def test_out_dim_projects_the_residual():
    blk = IsotropicBlock(8, ZeroMixer(), mlp_ratio=2.0, out_dim=12)
    nn.init.zeros_(blk.mlp.fc2.weight)
    nn.init.zeros_(blk.mlp.fc2.bias)
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(blk(x, (2, 2)), blk.residual_proj(x))
    assert blk.mlp.fc1.out_features == 16 and blk.mlp.fc2.out_features == 12

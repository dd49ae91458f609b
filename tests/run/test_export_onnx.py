"""`ssl-biases export --format onnx`: the graph gives PyTorch's embedding under onnxruntime."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ort = pytest.importorskip(
    "onnxruntime", reason="onnxruntime is not installed: pip install 'ssl-biases[onnx]'"
)
onnx = pytest.importorskip("onnx", reason="onnx is not installed: pip install 'ssl-biases[onnx]'")

from ssl_biases.backbones import IsotropicNet, ResNet, TimmBackbone  # noqa: E402
from ssl_biases.backbones.mixers import TOKEN_MIXERS, TokenMixer  # noqa: E402
from ssl_biases.cli import main  # noqa: E402
from ssl_biases.run.checkpoint import BACKBONE_CONFIG_KEY  # noqa: E402
from ssl_biases.run.export import META_FILE  # noqa: E402
from ssl_biases.run.onnx_export import (  # noqa: E402
    DEFAULT_OPSET,
    INPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAME,
    TOLERANCE,
    check_onnx,
    export_onnx,
)

TINY = dict(image_size=16, patch_size=4, width=32, depth=1, num_heads=2, mlp_ratio=2.0)


def tiny_net(mixer: str) -> nn.Module:
    """A one-block IsotropicNet with ``mixer`` (a class token where the mixer can fill it)."""
    pool = "cls" if TOKEN_MIXERS[mixer].has_attention else "gap"
    return IsotropicNet(**TINY, token_mixer=mixer, pool=pool)


def max_diff(path: Path, backbone: nn.Module, batch_size: int, image_size: int) -> float:
    """Max |onnxruntime - PyTorch| on random images of ``batch_size``."""
    images = torch.randn(batch_size, 3, image_size, image_size)  # [B, 3, H, W]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})  # [B, F]
    with torch.no_grad():
        expected = backbone.eval()(images)  # [B, F]
    assert out.shape == tuple(expected.shape)
    return float((torch.from_numpy(out) - expected).abs().max())


BACKBONES = {
    **{f"mixer={name}": (lambda name=name: tiny_net(name), 16) for name in TOKEN_MIXERS},
    "resnet18": (lambda: ResNet("resnet18", image_size=32), 32),  # stem conv + max-pool
    "timm:test_vit": (lambda: TimmBackbone("test_vit", image_size=32), 32),
}


def test_every_token_mixer_is_in_the_matrix():
    assert set(TOKEN_MIXERS) == {"attention", "local_attention", "mlp", "conv", "pool", "identity"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BACKBONES))
def test_onnx_matches_pytorch_at_other_batch_sizes(name, tmp_path):
    torch.manual_seed(0)
    build, image_size = BACKBONES[name]
    backbone = build().eval()
    path = export_onnx(backbone, tmp_path / ONNX_FILE, image_size)  # example batch: 2
    graph_input = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert graph_input[0].dim_param and not graph_input[0].dim_value  # a symbolic batch axis
    assert [d.dim_value for d in graph_input[1:]] == [3, image_size, image_size]
    for batch_size in (1, 5):
        assert max_diff(path, backbone, batch_size, image_size) <= TOLERANCE


class SvdLayer(nn.Module):
    """Adds each sample's largest singular value: ``torch.linalg.svdvals`` has no ONNX op."""

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        return x + torch.linalg.svdvals(x)[:, :1, None]  # [B, T, D]


class SvdMixer(TokenMixer):
    """A test mixer (no ``name``, so it stays out of the registry) that ONNX cannot express."""

    def build(
        self, dim: int, grid_size: tuple[int, int], num_prefix_tokens: int, num_heads: int
    ) -> nn.Module:
        return SvdLayer()


@pytest.mark.slow
def test_a_mixer_that_cannot_export_says_which_and_what_to_use(tmp_path):
    backbone = IsotropicNet(**TINY, token_mixer=SvdMixer(), pool="gap")
    with pytest.raises(ValueError) as raised:
        export_onnx(backbone, tmp_path / ONNX_FILE, 16)
    message = str(raised.value)
    assert "token mixer SvdMixer" in message and "--format safetensors" in message
    assert all(name in message for name in TOKEN_MIXERS)  # the mixers that do export
    assert not (tmp_path / ONNX_FILE).exists()


@pytest.mark.parametrize("opset", [DEFAULT_OPSET - 1, 99])
def test_an_opset_the_exporter_cannot_write_is_a_value_error(opset, tmp_path):
    with pytest.raises(ValueError, match=f"--opset {opset} is not supported"):
        export_onnx(tiny_net("identity"), tmp_path / ONNX_FILE, 16, opset=opset)


def test_without_the_onnx_extra_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript -> ImportError
    with pytest.raises(ValueError, match=r"pip install 'ssl-biases\[onnx\]'"):
        export_onnx(tiny_net("identity"), tmp_path / ONNX_FILE, 16)


def test_export_writes_a_checked_onnx_graph_and_the_check_catches_a_difference(tmp_path, capsys):
    torch.manual_seed(0)
    backbone = tiny_net("conv")
    config = {"class_path": "ssl_biases.backbones.IsotropicNet", "init_args": backbone_args()}
    ckpt = tmp_path / "last.ckpt"
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    torch.save({"state_dict": state, BACKBONE_CONFIG_KEY: config, "global_step": 3}, ckpt)
    out = tmp_path / "export"
    main(["export", "--ckpt", str(ckpt), "--output", str(out), "--format", "onnx"])
    assert "onnxruntime vs PyTorch" in capsys.readouterr().out
    meta = json.loads((out / META_FILE).read_text())
    assert meta["onnx"]["file"] == ONNX_FILE and meta["onnx"]["opset"] == DEFAULT_OPSET
    assert meta["onnx"]["input"]["shape"] == ["batch", 3, 16, 16]
    assert meta["onnx"]["output"]["shape"] == ["batch", 32]
    assert meta["onnx"]["max_abs_diff_vs_pytorch"] <= TOLERANCE
    assert (out / "backbone.safetensors").is_file()  # the safetensors export stays
    assert max_diff(out / ONNX_FILE, backbone, 4, 16) <= TOLERANCE
    with torch.no_grad():
        backbone.norm.bias += 1e-3  # PyTorch moves, the exported graph does not
    with pytest.raises(ValueError, match="differs from PyTorch's by 1.0.e-03"):
        check_onnx(out / ONNX_FILE, backbone, 16)


def backbone_args() -> dict:
    """``tiny_net('conv')``'s constructor arguments."""
    return {**TINY, "token_mixer": "conv", "pool": "gap"}

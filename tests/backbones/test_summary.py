"""Backbone table: params and FLOPs against hand counts."""

from __future__ import annotations

import pytest
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

from ssl_biases.backbones import create_backbone
from ssl_biases.backbones.summary import backbones, count_flops, summarize
from ssl_biases.cli import cli_main


def main(argv: list[str]) -> None:
    """`ssl-biases backbones ARGV`, through the one parser (user errors raise)."""
    cli_main(["backbones", *argv])


def test_flops_of_a_one_block_attention_net_match_hand_count():
    d, n, t = 32, 64, 65  # width, patches, tokens (with class token)
    model = create_backbone("vit_tiny", width=d, depth=1, num_heads=2)
    stem = 2 * n * d * 3 * 4 * 4
    qkv_proj = 2 * t * d * 4 * d
    attn = 2 * 2 * t * t * d  # q k^T and a v over all heads
    mlp = 2 * t * d * 4 * d * 2
    assert count_flops(model, 32) == stem + qkv_proj + attn + mlp


def test_summarize_rows():
    (row,) = summarize(["mixer_tiny"], image_size=32)
    model = create_backbone("mixer_tiny")
    assert row["params_M"] * 1e6 == sum(p.numel() for p in model.parameters())
    assert (row["tokens"], row["num_features"], row["class"]) == (64, 192, "IsotropicNet")
    assert row["gflops"] > 0


def test_main_prints_markdown_table(capsys):
    main(["--image-size", "32", "--names", "vit_tiny", "resnet18_cifar"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| name | class |")
    assert len(lines) == 4 and lines[2].startswith("| vit_tiny | IsotropicNet | 32 | 65 | 192 |")


def test_backbones_runs_from_a_yaml_config_and_refuses_typos(tmp_path, capsys):
    parser = ArgumentParser(exit_on_error=False)  # how a subcommand parser is built
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(backbones)
    (tmp_path / "b.yaml").write_text("names: [mixer_tiny]\nimage_size: 16\n")
    parsed = parser.parse_args(["--config", str(tmp_path / "b.yaml")])
    backbones(parsed.names, parsed.image_size)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[2].startswith("| mixer_tiny | IsotropicNet | 16 | 16 | 192 |")
    (tmp_path / "typo.yaml").write_text("names: [mixer_tiny]\nimage_siz: 16\n")
    with pytest.raises(ArgumentError, match="image_siz"):
        parser.parse_args(["--config", str(tmp_path / "typo.yaml")])
    main(["--config", str(tmp_path / "b.yaml"), "--image_size", "32"])  # the command line wins
    row = capsys.readouterr().out.strip().splitlines()[2]
    assert row.startswith("| mixer_tiny | IsotropicNet | 32 | 64 |")

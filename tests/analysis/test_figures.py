"""The figures of a report, drawn from a hand-written report dict (no model, no data)."""

from __future__ import annotations

import pytest
import torch

from ssl_biases.analysis.figures import FIGURES, figure_offset_heads, make_figures


def model_entry(attention: bool, offsets: list[list[float]] | None = None) -> dict:
    """One model's report entry with 2 blocks (of 2 heads when ``attention``)."""
    offsets = offsets or [[0.1, 0.2], [0.3, 0.4]]
    keyed = lambda rows, col: {  # noqa: E731
        f"block{i}": {f"{col}{j}": v for j, v in enumerate(r)} for i, r in enumerate(rows)
    }
    return {
        "knn_top1": 0.5,
        "layerwise_knn_top1": {"block0": 0.3, "block1": 0.4},
        "layerwise_best_block": 1,
        "fewshot": {
            "fewshot_1shot": 0.2,
            "fewshot_1shot_std": 0.01,
            "fewshot_5shot": 0.3,
            "fewshot_5shot_std": 0.02,
        },  # fmt: skip
        "shuffle": {"patch": {"knn_top1": 0.4}, "pixel": {"knn_top1": 0.3}},
        "cka": keyed([[1.0, 0.5], [0.5, 1.0]], "block"),
        "attention": None
        if not attention
        else {
            "mean_distance": keyed([[0.2, None], [0.4, 0.9]], "head"),  # null: NaN
            "offset": keyed(offsets, "head"),
            "offset_local_heads": [],
        },
    }


def test_make_figures_names_one_file_per_figure_and_label():
    report = {
        "models": {"vit": model_entry(True), "mix er": model_entry(False)},
        "cka_between": {"vit vs mix er": model_entry(False)["cka"]},
    }
    arrays = {"vit/aligned_maps": torch.rand(2, 2, 3, 3)}  # [L, H, 2K-1, 2K-1]
    figures = make_figures(report, arrays)
    # No offset-head figure for the model without attention; labels slugged into file names.
    assert set(figures) == {
        "attention_distance.png", "layerwise_knn.png", "fewshot.png", "shuffle.png",
        "offset_heads_vit.png", "cka_vit.png", "cka_mix_er.png", "cka_vit_vs_mix_er.png",
    }  # fmt: skip
    assert len(FIGURES) == 7  # the seven kinds, some once per model or pair
    distance_ax = figures["attention_distance.png"].axes[0]
    assert distance_ax.get_ylim()[1] == pytest.approx(1.1 * 0.9)  # 10% above the largest
    fewshot_ax = figures["fewshot.png"].axes[0]
    assert list(fewshot_ax.lines[0].get_xdata()) == [1, 5]  # shots from the keys


def test_attention_distance_is_left_out_without_attention_models():
    report = {"models": {"mlp": model_entry(False)}, "cka_between": {}}
    assert set(make_figures(report, {})) == {
        "layerwise_knn.png",
        "fewshot.png",
        "shuffle.png",
        "cka_mlp.png",
    }


def test_offset_heads_fall_back_to_the_four_largest_offsets():
    entry = model_entry(True, offsets=[[0.9, 0.1], [0.5, 0.7]])
    figure = figure_offset_heads("vit", entry, torch.rand(2, 2, 3, 3))
    assert "no offset local head" in figure._suptitle.get_text()
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles[0] == "block 0 head 0\noffset 0.90" and len(titles) == 4  # largest first
    entry["attention"]["offset_local_heads"] = [{"block": 1, "head": 0}]
    figure = figure_offset_heads("vit", entry, torch.rand(2, 2, 3, 3))
    assert [ax.get_title() for ax in figure.axes if ax.get_title()] == [
        "block 1 head 0\noffset 0.50"
    ]

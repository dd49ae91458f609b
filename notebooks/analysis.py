# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Analysis of trained backbones
#
# Reads a `report.json` written by `ssl-biases analyze --ckpt RUN/checkpoints/last.ckpt
# [--ckpt OTHER.ckpt] --config DATA.yaml --output DIR` and one checkpoint, both through the
# package (`ssl_biases.analysis.report`, figures from `ssl_biases.analysis.figures`).
# Set `SSL_BIASES_REPORT` (the report or its folder) and `SSL_BIASES_CKPT` (a checkpoint) in the
# environment, or edit the two paths below. Definitions: `docs/analysis.md`.

# %%
import io
import os

import torch
from IPython.display import Image, display
from matplotlib.figure import Figure

from ssl_biases.analysis.attention import mean_attention_distance
from ssl_biases.analysis.figures import (
    figure_attention_distance,
    figure_cka,
    figure_fewshot,
    figure_layerwise,
    figure_shuffle,
)
from ssl_biases.analysis.report import block_matrix, load_checkpoint_backbone, load_report
from ssl_biases.analysis.tensorboard import attention_heatmaps
from ssl_biases.data.datamodule import SSLDataModule

REPORT = os.environ.get("SSL_BIASES_REPORT", "analysis/report.json")
CKPT = os.environ.get("SSL_BIASES_CKPT", "runs/ssl/version_0/checkpoints/last.ckpt")


def show(figure: Figure) -> None:
    """Display a matplotlib figure as a PNG (the package's figures do not use pyplot)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    display(Image(buffer.getvalue()))


# %% [markdown]
# ## The numbers of the report

# %%
report = load_report(REPORT)
print(
    f"data: {report['data']['dataset']}, bank {report['data']['bank_size']}, "
    f"queries {report['data']['query_size']}"
)
for label, m in report["models"].items():
    fewshot = {k: round(v, 3) for k, v in m["fewshot"].items() if k.endswith("shot")}
    print(
        f"{label:>10}: kNN {m['knn_top1']:.3f}  linear {m['offline_linear_top1']:.3f}  "
        f"best block {m['layerwise_best_block']}  patch-shuffle drop "
        f"{m['shuffle']['patch']['drop']:+.3f}  pixel-shuffle drop "
        f"{m['shuffle']['pixel']['drop']:+.3f}  few-shot {fewshot}"
    )

# %%
for figure in (figure_layerwise(report), figure_fewshot(report), figure_shuffle(report)):
    show(figure)

# %% [markdown]
# ## Attention distance and offset local heads

# %%
distance_figure = figure_attention_distance(report)
if distance_figure is not None:
    show(distance_figure)
for label, m in report["models"].items():
    if m["attention"] is not None:
        heads = [(h["block"], h["head"]) for h in m["attention"]["offset_local_heads"]]
        print(f"{label}: offset local heads (block, head): {heads or 'none'}")

# %% [markdown]
# ## CKA

# %%
for label, m in report["models"].items():
    show(figure_cka(block_matrix(m["cka"]), f"CKA between blocks: {label}", "block", "block"))
for pair, matrix in report["cka_between"].items():
    first, second = pair.split(" vs ")
    show(figure_cka(block_matrix(matrix), pair, f"{second} block", f"{first} block"))

# %% [markdown]
# ## One checkpoint: attention of its last block on a few test images
#
# The backbone is rebuilt from the checkpoint; the images come from the report's data
# (`report["data"]["init_args"]`). The mean attention distance of this batch is printed next
# to the report's value over all queries.

# %%
backbone, config, step = load_checkpoint_backbone(CKPT)
print(f"{config['class_path']} at step {step}, has_attention={backbone.has_attention}")
data = SSLDataModule(**report["data"]["init_args"])
images = torch.stack([data.probe_dataset("test")[i][0] for i in range(8)])  # [8, 3, H, W]
if backbone.has_attention:
    with torch.no_grad():
        attention = backbone.attention_maps(images)  # L x [8, heads, T, T]
    last = len(attention) - 1
    batch_distance = mean_attention_distance(
        attention[last], tuple(backbone.grid_size), backbone.num_prefix_tokens
    )
    print(
        "batch mean attention distance, last block:", [round(d, 3) for d in batch_distance.tolist()]
    )
    for label, m in report["models"].items():
        if m["checkpoint"] == CKPT and m["attention"] is not None:
            print(f"report ({label}):", m["attention"]["mean_distance"][f"block{last}"])
    heatmaps = attention_heatmaps(attention[last], backbone.num_prefix_tokens)  # [8, heads, K, K]
    figure = Figure(figsize=(1.6 * heatmaps.shape[1], 1.6 * 4), layout="constrained")
    axes = figure.subplots(4, heatmaps.shape[1], squeeze=False)
    for row in range(4):
        for head in range(heatmaps.shape[1]):
            axes[row, head].imshow(heatmaps[row, head].numpy(), cmap="viridis")
            axes[row, head].axis("off")
            axes[row, 0].set_title(f"image {row}", fontsize=8, loc="left")
    show(figure)

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
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # ssl-biases quickstart
#
# Pretrain a tiny ViT-like `IsotropicNet` with SimCLR on the generated `shapes` dataset,
# read its probes, export the backbone, load it back without Lightning, and look at what
# its attention heads attend to. About 5 minutes of CPU time (10 epochs on 1,000 images);
# set `QUICKSTART_TINY=1` for a seconds-long smoke run (the test does).
#
# The same steps on the command line:
#
# ```
# ssl-biases fit --config configs/method/simclr.yaml --config configs/backbone/vit_tiny.yaml \
#     --config configs/data/shapes.yaml
# ssl-biases export --ckpt runs/ssl/version_0/checkpoints/last.ckpt --output exported
# tensorboard --logdir runs
# ```

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import ssl_biases
from ssl_biases.analysis.tensorboard import attention_heatmaps, denormalize
from ssl_biases.backbones import backbone_config
from ssl_biases.cli import cli_main
from ssl_biases.run.export import export_checkpoint

TINY = os.environ.get("QUICKSTART_TINY") == "1"
WORKDIR = Path(os.environ.get("QUICKSTART_DIR", "quickstart"))
CONFIGS = Path(ssl_biases.__file__).resolve().parents[1] / "configs"

# %% [markdown]
# ## 1. Pretrain
#
# The backbone is a registry preset (`vit_tiny`) made smaller; any constructor knob (the
# token mixer, position embedding, pooling, ...) can be changed the same way. Every
# `--key value` below is what you would type after `ssl-biases fit` on the command line.

# %%
backbone = backbone_config("vit_tiny")
backbone["init_args"].update(width=32 if TINY else 64, depth=2 if TINY else 4, num_heads=2)
settings = {
    "model.init_args.backbone": json.dumps(backbone),
    "data.image_size": 16 if TINY else 32,
    "data.shapes_size": 64 if TINY else 1000,
    "data.batch_size": 32 if TINY else 128,
    "data.max_probe_train_samples": 32 if TINY else 500,
    "data.num_workers": 0,
    "trainer.max_epochs": 1 if TINY else 10,
    "trainer.accelerator": "cpu",
    "trainer.enable_progress_bar": "false",
    "trainer.enable_model_summary": "false",
    "trainer.logger.save_dir": WORKDIR / "runs",
}
args = ["fit"]
for config in ("method/simclr.yaml", "data/shapes.yaml"):
    args += ["--config", str(CONFIGS / config)]
for key, value in settings.items():
    args += [f"--{key}", str(value)]
cli = cli_main(args)
run = Path(cli.trainer.log_dir)
print("run directory:", run)

# %% [markdown]
# ## 2. Probe
#
# Every validation ran the weighted kNN probe, the online linear probe and an offline linear
# probe on frozen features; these are the final numbers (TensorBoard shows their curves and,
# in the HPARAMS tab, these values next to the run's knobs).

# %%
probes = {
    name: float(value)
    for name, value in cli.trainer.callback_metrics.items()
    if name.startswith("val/")
}
for name, value in sorted(probes.items()):
    print(f"{name:28s} {value:.3f}")

# %% [markdown]
# ## 3. Export the backbone and load it back
#
# `export_checkpoint` is what `ssl-biases export` runs: `backbone.safetensors` plus
# `backbone.json` (class path and knobs). `ssl_biases.load_backbone` needs neither
# Lightning nor the training code.

# %%
export_dir = export_checkpoint(run / "checkpoints/last.ckpt", WORKDIR / "exported")
print((export_dir / "backbone.json").read_text())
loaded = ssl_biases.load_backbone(export_dir)

datamodule = cli.datamodule
queries = datamodule.probe_dataset("test")
images = torch.stack([queries[i][0] for i in range(4)])  # [4, 3, H, W], normalised
with torch.no_grad():
    embeddings = loaded(images)  # [4, D]
    max_abs_diff = (embeddings - cli.model.backbone.eval()(images)).abs().max().item()
print("embeddings", tuple(embeddings.shape), "| max |loaded - trained| =", max_abs_diff)

# %% [markdown]
# ## 4. Attention maps
#
# For each image: the class token's attention over the patch grid, per head of the last
# block (bright = attended).

# %%
with torch.no_grad():
    attention = loaded.attention_maps(images)  # blocks x [4, heads, T, T]
heatmaps = attention_heatmaps(attention[-1], loaded.num_prefix_tokens)  # [4, heads, K, K]
shown = denormalize(images, datamodule.norm.mean, datamodule.norm.std)  # [4, 3, H, W]
heads = heatmaps.shape[1]
fig, axes = plt.subplots(len(images), heads + 1, figsize=(1.6 * (heads + 1), 1.6 * len(images)))
for row in range(len(images)):
    axes[row, 0].imshow(shown[row].permute(1, 2, 0).numpy())
    for head in range(heads):
        axes[row, head + 1].imshow(heatmaps[row, head].numpy(), cmap="viridis")
        axes[0, head + 1].set_title(f"head {head}")
for ax in axes.flat:
    ax.set_axis_off()
fig.tight_layout()

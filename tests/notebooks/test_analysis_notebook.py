from pathlib import Path

import jupytext
import nbformat
import torch
from nbclient import NotebookClient

from ssl_biases.backbones import IsotropicNet
from ssl_biases.cli import cli_main
from ssl_biases.run.checkpoint import BACKBONE_CONFIG_KEY as CHECKPOINT_KEY


def main(argv: list[str]) -> None:
    """`ssl-biases analyze ARGV`, through the one parser (user errors raise)."""
    cli_main(["analyze", *argv])


ROOT = Path(__file__).parents[2]
NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"


def test_ipynb_is_in_sync_with_its_jupytext_pair():
    paired = jupytext.read(ROOT / "notebooks" / "analysis.py")
    stored = nbformat.read(NOTEBOOK, as_version=4)
    assert [c.source for c in paired.cells] == [c.source for c in stored.cells]


def test_notebook_runs_on_a_tiny_checkpoint_and_its_report(tmp_path, monkeypatch):
    init_args = {"image_size": 32, "patch_size": 8, "width": 32, "depth": 2, "num_heads": 2}
    torch.manual_seed(0)
    state = {f"backbone.{k}": v for k, v in IsotropicNet(**init_args).state_dict().items()}
    ckpt = tmp_path / "tiny.ckpt"
    config = {"class_path": "ssl_biases.backbones.IsotropicNet", "init_args": init_args}
    torch.save({"state_dict": state, CHECKPOINT_KEY: config, "global_step": 3}, ckpt)
    main(["--ckpt", str(ckpt), "--label", "tiny", "--output", str(tmp_path / "report"),
          "--config", str(ROOT / "configs" / "data" / "shapes.yaml"), "--data.shapes_size", "64",
          "--data.num_workers", "0", "--data.max_probe_train_samples", "64",
          "--shots", "1", "--seeds", "0"])  # fmt: skip
    monkeypatch.setenv("SSL_BIASES_REPORT", str(tmp_path / "report"))
    monkeypatch.setenv("SSL_BIASES_CKPT", str(ckpt))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=60, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "tiny: kNN" in text and "step 3" in text
    assert "report (tiny):" in text  # the checkpoint was matched to its report entry
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    # layer-wise, few-shot, shuffle, attention distance, CKA, heatmaps of the checkpoint
    assert len(pngs) == 6

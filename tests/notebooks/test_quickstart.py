"""The quickstart notebook runs end to end (tiny settings) and its .ipynb/.py pair agree."""

from __future__ import annotations

import runpy
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def cells(path: Path) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in jupytext.read(path).cells]


def test_ipynb_and_py_are_in_sync():
    pair = cells(NOTEBOOKS / "quickstart.ipynb")
    assert pair == cells(NOTEBOOKS / "quickstart.py"), (
        "notebooks/quickstart.ipynb and .py differ: run `jupytext --sync notebooks/quickstart.py`"
    )
    assert len(pair) >= 8 and sum(kind == "code" for kind, _ in pair) >= 4


def test_quickstart_pretrains_probes_exports_reloads_and_plots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUICKSTART_TINY", "1")
    monkeypatch.setenv("QUICKSTART_DIR", str(tmp_path / "qs"))
    result = runpy.run_path(str(NOTEBOOKS / "quickstart.py"), run_name="__main__")
    assert result["max_abs_diff"] == 0.0  # the reloaded backbone is the trained one
    assert tuple(result["embeddings"].shape) == (4, 32)
    assert {"val/knn_top1", "val/linear_top1"} <= set(result["probes"])
    assert all(0.0 <= v <= 1.0 for k, v in result["probes"].items() if "top" in k)
    assert (tmp_path / "qs/exported/backbone.safetensors").is_file()
    assert len(result["attention"]) == 2  # one map per block
    assert result["fig"].axes[0].get_images()[0].get_array().shape == (16, 16, 3)
    assert len(result["fig"].axes) == 4 * (1 + 2)  # 4 images x (image + 2 heads)
    pytest.importorskip("matplotlib").pyplot.close(result["fig"])

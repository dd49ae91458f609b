"""`make demo`: pretrain SimCLR on `shapes` on the CPU and compare it with a random backbone.

Both backbones are probed the same way on frozen features: weighted kNN (k=20, T=0.07) and an
offline linear probe (L-BFGS logistic regression), on the `shapes` test split.

Run ``python -m ssl_biases.cli.demo --help`` for the knobs (``make demo`` runs it);
extra arguments after ``--`` go to ``ssl-biases fit``/``validate`` unchanged.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ssl_biases.cli import cli_main
from ssl_biases.metric_names import VAL_KNN_TOP1, VAL_OFFLINE_LINEAR_TOP1

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
METRICS = ((VAL_KNN_TOP1, "kNN top-1"), (VAL_OFFLINE_LINEAR_TOP1, "linear top-1"))


def demo_args(epochs: int, run_name: str, extra: list[str]) -> list[str]:
    """The stacked configs and overrides of the demo run."""
    return [
        "--config", str(CONFIGS / "method/simclr.yaml"),
        "--config", str(CONFIGS / "backbone/vit_tiny.yaml"),
        "--config", str(CONFIGS / "data/shapes.yaml"),
        "--config", str(CONFIGS / "trainer/cpu.yaml"),
        "--config", str(CONFIGS / "demo.yaml"),
        "--trainer.max_epochs", str(epochs),
        "--trainer.logger.init_args.name", run_name,
        *extra,
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=16, help="pretraining epochs")
    parser.add_argument("extra", nargs="*", help="more ssl-biases arguments (after --)")
    options = parser.parse_args(argv)

    start = time.time()
    fit = cli_main(["fit", *demo_args(options.epochs, "demo", options.extra)])
    pretrained = {k: float(fit.trainer.callback_metrics[k]) for k, _ in METRICS}
    random_init = cli_main(["validate", *demo_args(options.epochs, "demo_random", options.extra)])
    baseline = {k: float(random_init.trainer.callback_metrics[k]) for k, _ in METRICS}

    rows = [("random init", baseline), ("SimCLR pretrained", pretrained)]
    print("\nFrozen-feature probes on the shapes test split (small ViT, conv stem, 32 px):")
    print(f"{'':20s}" + "".join(f"{label:>15s}" for _, label in METRICS))
    for name, values in rows:
        print(f"{name:20s}" + "".join(f"{values[k]:15.3f}" for k, _ in METRICS))
    margins = {k: pretrained[k] - baseline[k] for k, _ in METRICS}
    print(f"{'margin':20s}" + "".join(f"{margins[k]:+15.3f}" for k, _ in METRICS))
    print(f"\nDone in {time.time() - start:.0f} s.")
    print(f"Run directory (config, checkpoints, metrics.csv, TensorBoard): {fit.trainer.log_dir}")
    print(f"Random-init baseline: {random_init.trainer.log_dir}")
    print("TensorBoard: `make tensorboard`, then open http://localhost:6006")
    return {"pretrained": pretrained, "random": baseline}


if __name__ == "__main__":
    main()

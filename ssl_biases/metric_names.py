"""The stable names of the metrics the methods and probes log.

Runs, sweeps, result tables, the checkpoint monitor and the demo read these names, so they
never change (earlier runs' ``metrics.csv`` and TensorBoard events use them too). A name is
``<stage>/<name>[_<feature set>]``: the stage (``train``, ``val``, ``test``), the metric, and,
for the extra feature sets a method's hook returns (``features_lensed`` of the adversarial
lens, arXiv 2002.08822), that set's name (``val/knn_top1_lensed``).

The vocabulary is a leaf room of its own (DESIGN.md, "The house"): the methods log the
training names, the online probe's ``val/linear_top1`` and ``val/masked_mse``; probes, run,
analysis, experiments and the CLI read or write the others. Every room may import it and it
imports none of them, so no room reaches into another's for a name.
"""

from __future__ import annotations

TRAIN, VAL, TEST = "train", "val", "test"
STAGES = (TRAIN, VAL, TEST)


def staged(stage: str, name: str, feature_set: str = "") -> str:
    """``<stage>/<name>``, plus ``_<feature_set>`` for an extra feature set (``lensed``)."""
    return f"{stage}/{name}_{feature_set}" if feature_set else f"{stage}/{name}"


# ------------------------------------------------------------------ training (the methods)
TRAIN_LOSS = "train/loss"
TRAIN_ONLINE_PROBE_LOSS = "train/online_probe_loss"
TRAIN_MOMENTUM = "train/momentum"  # EMA teachers (BYOL, DINO, iBOT, I-JEPA, MoCo v3)
TRAIN_TEACHER_TEMP = "train/teacher_temp"  # DINO, iBOT
TRAIN_IMAGE_LOSS = "train/image_loss"  # iBOT
TRAIN_PATCH_LOSS = "train/patch_loss"  # iBOT
TRAIN_LENS_REC_LOSS = "train/lens_rec_loss"  # the lens's mean squared edit
TRAIN_LENS_LOSS = "train/lens_loss"  # lambda_rec * L_rec - L_SSL
TRAIN_ESTIMATED_TOTAL_STEPS = "train/estimated_total_steps"  # a max_time budget (budget.py)
TRAIN_SKIPPED_BATCHES = "train/skipped_batches"  # the non-finite-loss guard
LR_LENS = "lr-lens"  # the lens's LR schedule, as LearningRateMonitor names it

# ------------------------------------------- evaluation names, without the stage (probes)
LINEAR_TOP1 = "linear_top1"  # the method's online linear probe
MASKED_MSE = "masked_mse"  # held-out masked-patch MSE of the reconstruction methods
OFFLINE_LINEAR_TOP1 = "offline_linear_top1"  # probes/linear.py
KNN = "knn"  # the kNN probe's default name (probes/knn.py)
LAYERWISE_BEST_BLOCK = "layerwise_best_block"  # probes/layerwise.py
RANKME = "rankme"  # probes/rankme.py: effective rank of the bank's embeddings (2210.02885)


def knn_top1_name(probe: str = KNN) -> str:
    """``<probe>_top1`` of a kNN probe named ``probe`` (``knn``, ``knn200``)."""
    return f"{probe}_top1"


def knn_top5_name(probe: str = KNN) -> str:
    """``<probe>_top5`` of a kNN probe named ``probe``."""
    return f"{probe}_top5"


def fewshot_name(shots: int) -> str:
    """``fewshot_<K>shot``: mean all-classes K-shot accuracy (probes/fewshot.py)."""
    return f"fewshot_{shots}shot"


def fewshot_std_name(shots: int) -> str:
    """``fewshot_<K>shot_std``: its standard deviation over the support draws."""
    return f"{fewshot_name(shots)}_std"


def layerwise_knn_top1_name(block: int) -> str:
    """``layerwise_knn_top1_block<i>``: kNN top-1 on block ``i``'s features."""
    return f"layerwise_knn_top1_block{block}"


# -------------------------------------------------------- full names that others read
VAL_KNN_TOP1 = staged(VAL, knn_top1_name())  # the checkpoint monitor and the sweeps' metric
VAL_KNN_TOP5 = staged(VAL, knn_top5_name())
VAL_LINEAR_TOP1 = staged(VAL, LINEAR_TOP1)
VAL_OFFLINE_LINEAR_TOP1 = staged(VAL, OFFLINE_LINEAR_TOP1)
VAL_MASKED_MSE = staged(VAL, MASKED_MSE)
VAL_RANKME = staged(VAL, RANKME)  # the collapse monitor: a column of every sweep report


def fewshot_metric(shots: int, stage: str = TEST) -> str:
    """``test/fewshot_<K>shot`` (or another stage's)."""
    return staged(stage, fewshot_name(shots))

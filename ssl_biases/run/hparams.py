"""A run's knobs with its final metrics in TensorBoard's HParams tab, sweep-ready.

:func:`write_hparams` is what :class:`ssl_biases.analysis.tensorboard.TensorBoardSummaries`
calls at the end of a fit (and after the CLI's final validation): it logs ``hp_metric``, the
primary probe's final value (the checkpoint's monitor, ``val/knn_top1`` by default, else
``val/linear_top1``), and the HParams plugin's session start and end summaries (built by
``torch.utils.tensorboard.summary.hparams``, as Lightning's ``log_hyperparams`` does).

It leaves out the per-run *experiment* summary that ``log_hyperparams`` adds: TensorBoard
takes the first experiment summary it finds under ``--logdir`` as the columns of every run, so
the cells of a sweep with different knobs (SimCLR's ``temperature`` beside BYOL's momentum)
would lose theirs. Without one TensorBoard shows the union of all runs' knobs, and every
scalar of the runs (``hp_metric``, ``val/*``, ``train/loss``) as a metric. A sweep's cells all
live under its ``output_dir`` (``<output_dir>/<cell>/version_<n>/``), so
``tensorboard --logdir SWEEP_DIR`` compares every cell in the HParams tab and overlays their
curves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger

from ssl_biases.metric_names import VAL_KNN_TOP1, VAL_LINEAR_TOP1

HP_METRIC = "hp_metric"


def primary_metric(metrics: Mapping[str, float], monitor: str | None = None) -> str | None:
    """The primary probe: ``monitor`` if logged, else ``val/knn_top1``, else the linear probe's
    ``val/linear_top1``; None when none of them was logged."""
    for name in (monitor, VAL_KNN_TOP1, VAL_LINEAR_TOP1):
        if name and name in metrics:
            return name
    return None


def write_hparams(
    logger: TensorBoardLogger,
    params: Mapping[str, bool | int | float | str],
    metrics: Mapping[str, float],
    step: int,
    monitor: str | None = None,
) -> dict[str, float]:
    """Writes a run's HParams session: its knobs, and ``hp_metric`` as a scalar at ``step``.

    The other metrics are not logged again: TensorBoard reads each one's last value from the
    run's own scalars. Call it on rank 0 (``logger.experiment`` is a dummy elsewhere).

    Args:
        logger: The run's TensorBoard logger.
        params: The run's knobs, flat (``{"backbone/width": 192, ...}``).
        metrics: The run's final metrics (``{"val/knn_top1": 0.61, ...}``).
        step: The global step of those metrics.
        monitor: The checkpoint's monitored metric, the first choice of ``hp_metric``.

    Returns:
        ``hp_metric`` (when a primary probe was logged) with ``metrics``.
    """
    from torch.utils.tensorboard.summary import hparams

    primary = primary_metric(metrics, monitor)
    out = {HP_METRIC: float(metrics[primary])} if primary else {}
    out.update(metrics)
    if primary:
        logger.log_metrics({HP_METRIC: out[HP_METRIC]}, step=step)
    _, session_start, session_end = hparams(dict(params), out)  # no experiment: module doc
    writer = logger.experiment._get_file_writer()  # as Lightning's log_hyperparams does
    writer.add_summary(session_start, step)
    writer.add_summary(session_end, step)
    logger.experiment.flush()
    return out


def session_hparams(plugin_content: Mapping[str, bytes]) -> dict[str, Any]:
    """A run's knobs from its HParams plugin data (``EventAccumulator.PluginTagToContent``)."""
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    info = plugin_data_pb2.HParamsPluginData.FromString(
        plugin_content[metadata.SESSION_START_INFO_TAG]
    ).session_start_info
    return {key: getattr(value, value.WhichOneof("kind")) for key, value in info.hparams.items()}

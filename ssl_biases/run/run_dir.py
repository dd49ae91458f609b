"""Where a run directory is: ``<save_dir>/<name>/version_<n>/`` of the first logger.

A TensorBoard/CSV logger whose ``save_dir`` is unset (``""``) writes under
``--trainer.default_root_dir``, as Lightning's own default logger does, else under ``runs``.
"""

from __future__ import annotations

from typing import Any

DEFAULT_SAVE_DIR = "runs"  # the loggers' save_dir without --trainer.default_root_dir


def set_default_save_dir(config: Any) -> None:
    """Sets an unset ``save_dir`` of the parsed ``trainer.logger`` (one or a list) in place."""
    loggers = config.get("trainer.logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init_args = getattr(logger, "init_args", None)
        class_name = str(getattr(logger, "class_path", "")).rpartition(".")[2]
        if class_name in ("TensorBoardLogger", "CSVLogger") and init_args is not None:
            if not init_args.get("save_dir"):
                root_dir = config.get("trainer.default_root_dir")
                init_args.save_dir = str(root_dir) if root_dir else DEFAULT_SAVE_DIR

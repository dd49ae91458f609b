"""How the ``ssl-biases`` command ends on a user error or a pre-emption.

A user error (``ValueError``/``FileNotFoundError``: a bad config, data or checkpoint; an
``OSError`` on a path the user gave: read-only, exists, disk full) prints one line on stderr and
exits with status 2; ``SSL_BIASES_DEBUG=1`` raises it with its
traceback instead. A ``SIGTERM`` after the checkpoint is saved exits with 128 + the signal.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from lightning.pytorch.utilities.exceptions import SIGTERMException

DEBUG_ENV = "SSL_BIASES_DEBUG"  # set to 1: a user error shows its traceback

PATH_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
     errno.ENOSPC, errno.EDQUOT}
)  # fmt: skip
"""Errors about a path the user gave (permission, read-only, exists, full): user errors."""


def path_error_message(error: OSError) -> str:
    """One line for an ``OSError`` on a path: which path, what is wrong, what to do."""
    path = error.filename if error.filename2 is None else error.filename2
    reason = error.strerror or type(error).__name__
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free some space or write elsewhere"
    elif error.errno == errno.EEXIST:
        advice = "name a path that does not exist yet, or remove it"
    else:
        advice = "name a path you can write to, or change its permissions"
    return f"cannot write {path}: {reason}; {advice}."


def user_error_message(error: BaseException) -> str:
    """The message of a user error, without jsonargparse's wrapper around a class's own error.

    A ``ValueError`` raised while jsonargparse builds a class (a width ``num_heads`` does not
    divide) reaches us inside "Does not validate against any of the Union subtypes ...", which
    repeats the whole config; the class's own message is the one that says what to do.
    """
    while isinstance(error.__cause__, (ValueError, FileNotFoundError)):
        frame = error.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        if frame is None or "jsonargparse" not in frame.tb_frame.f_code.co_filename:
            break
        error = error.__cause__
    return str(error)


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turns a user error into its one-line message and exit 2, a SIGTERM into 128 + 15.

    User errors: ``ValueError``, ``FileNotFoundError`` and an ``OSError`` on a path (no
    permission, read-only, exists, disk full: :data:`PATH_ERRNOS`)."""
    try:
        yield
    except SIGTERMException as stop:  # pre-empted after saving; exit 128 + signal
        code = stop.code if isinstance(stop.code, int) and stop.code else 128 + signal.SIGTERM
        sys.exit(code)
    except (ValueError, FileNotFoundError, OSError) as error:
        path_error = isinstance(error, OSError) and not isinstance(error, FileNotFoundError)
        if path_error and (error.errno not in PATH_ERRNOS or error.filename is None):
            raise  # an OSError about no path the user gave: a bug or the machine's
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        message = path_error_message(error) if path_error else user_error_message(error)
        print(
            f"ssl-biases: error: {message}\n(for the traceback, rerun with {DEBUG_ENV}=1)",
            file=sys.stderr,
        )
        sys.exit(2)

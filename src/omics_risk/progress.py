"""Progress bars that stay readable in logs: one helper, :func:`progress_bar`, for every loop of the package.

A tqdm bar redraws itself up to ten times a second. On a terminal that rewrites one line; in a CI log, a
``make demo > log`` file or a Hydra job log each redraw becomes a line of its own, and a long loop buries the
log under thousands of them. So when the bar's stream (stderr by default) is not a terminal, the bar is redrawn at
most every :data:`LOG_INTERVAL` seconds, with ASCII characters: a log gets the first line, one every 30 s and the
final one.

``$OMICS_RISK_PROGRESS`` overrides the detection: ``0`` (or ``false`` / ``no`` / ``off``) hides every bar,
``1`` (``true`` / ``yes`` / ``on``) draws normal terminal bars whatever the stream. It never shows a bar that the
caller disabled (``progress=False`` settings keep their meaning). In Jupyter the ``tqdm.auto`` widget is used as
before: it updates in place, so it needs no throttling.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm
from tqdm.autonotebook import tqdm as _notebook_tqdm
from tqdm.std import tqdm as _std_tqdm

__all__ = ["ENV_VAR", "LOG_INTERVAL", "mlflow_bars_off", "progress_bar", "quiet_mlflow_bars"]

#: Environment variable: ``0`` hides every progress bar, ``1`` forces terminal-style bars.
ENV_VAR = "OMICS_RISK_PROGRESS"
#: Seconds between two redraws of a bar whose stream is not a terminal.
LOG_INTERVAL = 30.0

_OFF = frozenset({"0", "false", "no", "off"})
_ON = frozenset({"1", "true", "yes", "on"})


def _env_setting() -> bool | None:
    """``$OMICS_RISK_PROGRESS`` as False (off), True (forced on) or None (unset: detect the stream)."""
    raw = os.environ.get(ENV_VAR, "").strip().lower()
    if not raw:
        return None
    if raw in _OFF:
        return False
    if raw in _ON:
        return True
    # a typo in a display setting must not stop a training run: say so and detect as if unset
    warnings.warn(f"{ENV_VAR}={raw!r} is not understood (use 0 to hide progress bars or 1 to force them); "
                  "ignoring it", stacklevel=3)
    return None


def _is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, StringIO and closed streams)."""
    isatty = getattr(stream, "isatty", None)
    if isatty is None:
        return False
    try:
        return bool(isatty())
    except (ValueError, OSError):  # closed or detached stream
        return False


def progress_bar(iterable: Iterable[Any] | None = None, *, desc: str, total: float | None = None, unit: str = "it",
                 disable: bool = False, **kw: Any) -> tqdm:
    """A ``tqdm.auto`` bar over ``iterable`` (or a manual one with ``total``), throttled when not on a terminal.

    Args:
        iterable, desc, total, unit, disable: as for tqdm (``disable=True`` hides the bar whatever the environment).
        **kw: any other tqdm argument (``file``, ``leave``, ``position``...). Explicit ``mininterval`` /
            ``maxinterval`` / ``ascii`` win over the log settings.

    Returns:
        The tqdm instance: iterate over it, or call ``update()`` / ``close()`` (a context manager too).
    """
    setting = _env_setting()
    if setting is False:
        disable = True
    in_notebook = _notebook_tqdm is not _std_tqdm  # the Jupyter widget redraws in place: no log to flood
    stream = sys.stderr if kw.get("file") is None else kw["file"]
    if not disable and setting is None and not in_notebook and not _is_terminal(stream):
        kw.setdefault("mininterval", LOG_INTERVAL)
        # the tqdm monitor thread forces a redraw after maxinterval (10 s by default): keep it at the same pace
        kw.setdefault("maxinterval", max(LOG_INTERVAL, float(kw["mininterval"])))
        kw.setdefault("ascii", True)
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, **kw)


#: MLflow's own switch for its artifact upload/download bars (a tqdm that redraws per file).
MLFLOW_BARS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def quiet_mlflow_bars(stream: Any = None) -> bool:
    """Switch MLflow's artifact progress bars off where ours are throttled or hidden; returns whether it did.

    Logging or loading a model makes MLflow draw a "Downloading artifacts" bar per call, which in a log is a few
    hundred characters of redraws each time. Off when ``$OMICS_RISK_PROGRESS`` is 0, or when it is unset and
    ``stream`` (stderr) is not a terminal; a value the user set for MLflow's variable is always kept.
    """
    if MLFLOW_BARS in os.environ:
        return False
    setting = _env_setting()
    terminal = _is_terminal(sys.stderr if stream is None else stream)
    if setting is False or (setting is None and not terminal):
        os.environ[MLFLOW_BARS] = "false"
        return True
    return False


@contextlib.contextmanager
def mlflow_bars_off(when: bool = True) -> Iterator[None]:
    """MLflow's per-file artifact bar off inside the block (when ``when``); the previous setting comes back after."""
    old = os.environ.get(MLFLOW_BARS)
    if when:
        os.environ[MLFLOW_BARS] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(MLFLOW_BARS, None)
        else:
            os.environ[MLFLOW_BARS] = old

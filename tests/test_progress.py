"""omics_risk.progress.progress_bar: terminal bars as before, throttled ASCII bars in logs, $OMICS_RISK_PROGRESS."""

from __future__ import annotations

import io
import os
import time

import pytest
from joblib import Parallel, delayed

from omics_risk.progress import ENV_VAR, LOG_INTERVAL, MLFLOW_BARS, mlflow_bars_off, progress_bar, quiet_mlflow_bars


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)  # CI may set it


def test_log_stream_gets_a_throttled_ascii_bar() -> None:
    log = io.StringIO()
    bar = progress_bar(range(5000), desc="work", unit="item", file=log)
    assert bar.mininterval >= 30 and bar.maxinterval >= 30 and bar.ascii is True and not bar.disable
    assert sum(1 for _ in bar) == 5000
    bar.close()
    text = log.getvalue()
    assert "5000/5000" in text and "work" in text and "item" in text
    assert all(ord(ch) < 128 for ch in text)


def _redraws(stream: io.StringIO, steps: int = 600) -> int:
    """Redraws of a bar updated once per simulated second for ``steps`` seconds (tqdm's clock replaced)."""
    bar = progress_bar(total=steps, desc="work", file=stream)
    clock = [time.time()]
    bar._time = lambda: clock[0]
    for _ in range(steps):
        clock[0] += 1.0
        bar.update()
    bar.close()
    return stream.getvalue().count("\r")


def test_a_ten_minute_loop_writes_a_line_per_30_seconds_to_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _redraws(io.StringIO()) <= 600 / LOG_INTERVAL + 5  # 20 + the first and the final line
    monkeypatch.setenv(ENV_VAR, "1")  # normal bars: one redraw per update
    assert _redraws(io.StringIO()) >= 500


def test_terminal_keeps_the_tqdm_defaults() -> None:
    bar = progress_bar(range(3), desc="work", file=_Terminal())
    assert bar.mininterval == pytest.approx(0.1) and bar.maxinterval == pytest.approx(10.0)
    bar.close()


def test_explicit_settings_win_over_the_log_defaults() -> None:
    bar = progress_bar(total=4, desc="work", file=io.StringIO(), mininterval=60.0, ascii=" #")
    assert bar.mininterval == 60.0 and bar.maxinterval == 60.0 and bar.ascii == " #"
    bar.close()


@pytest.mark.parametrize("value", ["0", "false", "OFF"])
def test_env_off_disables_every_bar(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ENV_VAR, value)
    for stream in (io.StringIO(), _Terminal()):
        with progress_bar(total=3, desc="work", file=stream) as bar:
            bar.update(3)
        assert bar.disable and stream.getvalue() == ""


def test_env_on_forces_normal_bars_on_a_log_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "1")
    log = io.StringIO()
    with progress_bar(total=3, desc="work", file=log) as bar:
        assert bar.mininterval == pytest.approx(0.1) and bar.mininterval < LOG_INTERVAL and not bar.disable
        bar.update(3)
    assert "3/3" in log.getvalue()
    # it never shows a bar that the caller switched off (progress=False settings)
    hidden = progress_bar(total=3, desc="work", file=log, disable=True)
    assert hidden.disable


def test_unknown_env_value_warns_and_detects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "maybe")
    with pytest.warns(UserWarning, match=f"{ENV_VAR}='maybe' is not understood"):
        bar = progress_bar(total=3, desc="work", file=io.StringIO())
    assert bar.mininterval >= LOG_INTERVAL and not bar.disable
    bar.close()


def test_wraps_the_job_generator_of_joblib_parallel() -> None:
    """As in the training and scoring workflows: Parallel(n_jobs)(progress_bar(delayed jobs, total=n))."""
    log = io.StringIO()
    jobs = (delayed(pow)(i, 2) for i in range(6))
    out = Parallel(n_jobs=2, backend="threading")(progress_bar(jobs, total=6, desc="jobs", unit="job", file=log))
    assert out == [i * i for i in range(6)] and "6/6" in log.getvalue()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("env", "stream", "expected"), [
    ({}, io.StringIO(), "false"),  # a log: off
    ({}, _Tty(), None),  # a terminal: MLflow's default
    ({ENV_VAR: "0"}, _Tty(), "false"),  # ours hidden: MLflow's too
    ({ENV_VAR: "1"}, io.StringIO(), None),  # forced on
    ({MLFLOW_BARS: "true"}, io.StringIO(), "true"),  # the user's own MLflow setting wins
])
def test_quiet_mlflow_bars(monkeypatch: pytest.MonkeyPatch, env: dict, stream: io.StringIO,
                           expected: str | None) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv(MLFLOW_BARS, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    quiet_mlflow_bars(stream)
    assert os.environ.get(MLFLOW_BARS) == expected


@pytest.mark.parametrize("before", [None, "true"])
def test_mlflow_bars_off_restores_the_previous_setting(monkeypatch: pytest.MonkeyPatch, before: str | None) -> None:
    monkeypatch.delenv(MLFLOW_BARS, raising=False)
    if before is not None:
        monkeypatch.setenv(MLFLOW_BARS, before)
    with mlflow_bars_off():
        assert os.environ[MLFLOW_BARS] == "false"
    assert os.environ.get(MLFLOW_BARS) == before
    with mlflow_bars_off(when=False):
        assert os.environ.get(MLFLOW_BARS) == before

"""One line, not a traceback, when ``train.py`` or ``evaluate.py`` cannot run because of what the user typed.

Hydra answers a mistyped override with its own advice (``To append to your config use +modle=fused``), and a missing
data root ends in a stack trace from deep inside the cohort loader. :func:`run_hydra_app` runs a Hydra entry point so
that such user errors print one line on stderr naming the key or path and what to type instead ("did you mean"),
and exit with status 2. Real bugs keep their full traceback, and ``HYDRA_FULL_ERROR=1`` shows the traceback of
every error. :func:`keeps_output_only_on_success` removes the run's output folder when the run failed before writing
anything but its log.

A user error is a Hydra composition error (unknown key, group or option; unparsable override), a missing mandatory
value, a file-system error (a path that is not there), or a ``ValueError`` raised by omics-risk's own checks (their
classes, or a ``ValueError`` raised in omics-risk code). A ``ValueError`` raised inside a library stays a bug.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

__all__ = [
    "EXIT_USAGE",
    "UserError",
    "check_data_roots",
    "describe_user_error",
    "keeps_output_only_on_success",
    "run_hydra_app",
]

#: Exit status of a run stopped by a user error (as ``omics-risk``'s usage errors).
EXIT_USAGE = 2
_PACKAGE_DIR = Path(__file__).resolve().parent
_FILE_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
#: The user's HYDRA_FULL_ERROR while :func:`run_hydra_app` runs (it sets the variable itself for Hydra).
_USER_FULL_ERROR: bool | None = None
_COHORT_HINT = "a cohort folder with cohort.yaml, clinical.csv and samples.csv"

T = TypeVar("T")


class UserError(ValueError):
    """A setting the run cannot work with; ``kind`` heads the one-line message (``config``, ``data``)."""

    def __init__(self, message: str, kind: str = "config") -> None:
        super().__init__(message)
        self.kind = kind


# --- what the user typed ------------------------------------------------------------------------------------------
def _did_you_mean(word: str, candidates: Any) -> str | None:
    """The closest candidate to a mistyped ``word`` (None when nothing is close)."""
    close = difflib.get_close_matches(word, sorted({str(c) for c in candidates}), n=1, cutoff=0.6)
    return close[0] if close else None


def _config_groups(config_dir: Path) -> list[str]:
    """The config groups under ``config_dir`` (``model``, ``data``, ``hydra/job_logging`` ...)."""
    return sorted(str(p.relative_to(config_dir)) for p in config_dir.rglob("*") if p.is_dir())


def _unknown_key(key: str, exc: Exception, config_dir: Path | None, plus_hint: str) -> str:
    """``key`` is neither a key of the composed config nor a config group: name the closest of either."""
    parent = getattr(exc.__cause__, "parent_node", None)
    siblings = [str(k) for k in parent] if isinstance(parent, DictConfig) else []
    head, _, last = key.rpartition(".")
    prefix = f"{head}." if head else ""
    groups = _config_groups(config_dir) if config_dir is not None and not head else []
    value = plus_hint.split("=", 1)[1] if "=" in plus_hint else "..."
    guess = _did_you_mean(last, [*siblings, *groups])
    if guess is not None:
        what = "group" if guess in groups else "key"
        return f"unknown config {what} '{key}'; did you mean '{prefix}{guess}'? ({prefix}{guess}={value})"
    where = f" under '{head}'" if head else ""
    known = f" (keys{where}: {', '.join(sorted(siblings))})" if siblings and len(siblings) <= 20 else ""
    return f"unknown config key '{key}'{known}; to add a new key on purpose, write {plus_hint}"


def _missing_option(exc: MissingConfigException) -> str:
    """``model=fusde``: the group exists, the option does not; or the group itself does not exist."""
    missing = str(getattr(exc, "missing_cfg_file", "") or "")
    group, _, option = missing.rpartition("/")
    options = list(getattr(exc, "options", None) or [])
    if not group or not options:
        return str(exc).splitlines()[0]
    guess = _did_you_mean(option, options)
    hint = f"; did you mean '{guess}'?" if guess else ""
    return f"config group '{group}' has no option '{option}'{hint} (options: {', '.join(options)})"


def _composition(exc: ConfigCompositionException, config_dir: Path | None) -> str:
    """Hydra's composition errors, reworded to name the key and the fix."""
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    if first.startswith("Could not override '"):
        key = first.split("'")[1]
        plus = next((ln.split("use ", 1)[1] for ln in text.splitlines() if "use +" in ln), f"+{key}=VALUE")
        return _unknown_key(key, exc, config_dir, plus)
    if first.startswith("Could not append to config. An item is already at '"):
        key = first.split("'")[1]
        return f"'{key}' already exists: drop the '+' ({key}=VALUE)"
    if first.startswith("Could not delete from config. '"):
        key = first.split("'")[1]
        return f"cannot remove '{key}': it is not in the config"
    if "appears more than once in the final defaults list" in first:
        return f"{first} (a config group chosen twice? drop the '+' from a group that is already selected)"
    return first


def describe_user_error(exc: BaseException, config_dir: Path | None = None) -> tuple[str, str] | None:
    """``(kind, one-line message)`` when ``exc`` is the user's mistake, None when it is a bug (keep the traceback)."""
    if isinstance(exc, OverrideParseException):
        override = getattr(exc, "override", "")
        return "config", f"cannot read the override {override!r}: {str(exc).splitlines()[0]} (key=value, no spaces)"
    if isinstance(exc, MissingConfigException):
        return "config", _missing_option(exc)
    if isinstance(exc, ConfigCompositionException):
        return "config", _composition(exc, config_dir)
    if isinstance(exc, MissingMandatoryValue):
        key = getattr(exc, "full_key", None) or "a value"
        return "config", f"{key} is not set: pass {key}=VALUE on the command line"
    if isinstance(exc, InterpolationResolutionError):
        return "config", str(exc).splitlines()[0]
    if isinstance(exc, UserError):
        return exc.kind, str(exc)
    problems = sys.modules.get("omics_risk.data.problems")  # not imported: no CohortError (and no pandas to load)
    if problems is not None and isinstance(exc, problems.CohortError):
        errors = [p for p in exc.problems if p.severity == "error"]
        if len(errors) == 1:  # one problem: one line, with the command for the full report
            return "data", f"{str(errors[0]).split(': ', 1)[1]} (omics-risk validate COHORT shows the full report)"
        return "data", str(exc)
    if isinstance(exc, _FILE_ERRORS):
        return "file", str(exc)
    if isinstance(exc, ValueError) and _raised_by_omics_risk(exc):
        kind = "horizon" if type(exc).__name__ == "HorizonError" else type(exc).__name__
        return kind, str(exc)
    return None


def _raised_by_omics_risk(exc: BaseException) -> bool:
    """A ``ValueError`` of an omics-risk class, or raised by omics-risk's own code (a check, not a library's bug)."""
    if type(exc).__module__.startswith("omics_risk."):
        return True
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return False
    path = Path(last.tb_frame.f_code.co_filename).resolve()
    return path.is_relative_to(_PACKAGE_DIR)


def check_data_roots(cfg: DictConfig, *keys: str) -> None:
    """Each of ``keys`` (``data.root``) that is set must be a folder; raise :class:`UserError` naming the key, the
    path, and a close folder name when there is one, before any work starts."""
    for key in keys:
        node, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, node) if node else cfg
        if isinstance(parent, DictConfig) and OmegaConf.is_missing(parent, leaf):
            raise UserError(f"{key} is not set: pass {key}=/path/to/cohort ({_COHORT_HINT})", "data")
        value = OmegaConf.select(cfg, key, default=None)
        if value is None or str(value) == "":
            continue
        path = Path(str(value)).expanduser()
        if path.is_dir():
            _check_cohort_folder(key, path)
            continue
        what = "is a file, not a folder" if path.exists() else "does not exist"
        guess = None
        if path.parent.is_dir():
            guess = _did_you_mean(path.name, (p.name for p in path.parent.iterdir() if p.is_dir()))
        hint = (f"did you mean {key}={path.parent / guess}?" if guess
                else f"pass {key}=DIR, {_COHORT_HINT} (omics-risk synth --out DIR makes a synthetic one)")
        raise UserError(f"{key}={value} {what}; {hint}", "data")


def _check_cohort_folder(key: str, path: Path) -> None:
    """A folder without cohort.yaml is not a cohort: name a sub-folder that is one, if any (``data`` for
    ``data/demo``)."""
    if (path / "cohort.yaml").is_file():
        return
    inside = sorted(p for p in path.iterdir() if (p / "cohort.yaml").is_file())
    hint = (f"did you mean {key}={inside[0]}?" if len(inside) == 1 else
            f"the cohorts in it: {', '.join(p.name for p in inside)}" if inside else f"pass {key}=DIR, {_COHORT_HINT}")
    raise UserError(f"{key}={path} has no cohort.yaml, so it is not a cohort folder; {hint}", "data")


# --- the run's output folder --------------------------------------------------------------------------------------
def _only_log(folder: Path, log_name: str) -> bool:
    """Whether ``folder`` holds nothing but Hydra's bookkeeping (the job log, ``.hydra/``) and empty folders."""
    if not folder.is_dir():
        return False
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if rel.parts[0] != ".hydra" and str(rel) != log_name and not path.is_dir():
            return False
    return True


def _remove_run_folder(folder: Path, log_name: str, stop_at: Path) -> None:
    """Remove a run folder that holds only the log (closing the log file first), then its parents left empty up to
    ``stop_at`` (``outputs/rfs`` made for this run), never ``stop_at`` itself or anything outside it."""
    if not _only_log(folder, log_name):
        return
    for handler in list(logging.root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == folder:
            handler.close()
            logging.root.removeHandler(handler)
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    while parent != stop_at and parent.is_relative_to(stop_at):
        with contextlib.suppress(OSError):  # not empty: another run's folder is in it
            parent.rmdir()
        if parent.exists():
            break
        parent = parent.parent


def keeps_output_only_on_success(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
    """Decorate a Hydra task: a user error ends the run with one line and exit 2 from inside the job (before Hydra
    adds its "Error executing job" line), and a run failing before it wrote anything but its log leaves no output
    folder. Only single runs: in a sweep, errors reach the sweeper and the folders stay as its launcher made them.
    """

    @functools.wraps(task)  # Hydra names the job (train.log) after the wrapped function's file
    def wrapper(cfg: DictConfig) -> T:
        try:
            return task(cfg)
        except BaseException as exc:
            hc = HydraConfig.get()
            if hc.mode != RunMode.RUN:
                raise
            root = Path(str(OmegaConf.select(cfg, "paths.root_dir", default=hc.runtime.cwd)))
            _remove_run_folder(Path(hc.runtime.output_dir).resolve(), f"{hc.job.name}.log", root.resolve())
            found = describe_user_error(exc) if isinstance(exc, Exception) and not _tracebacks_wanted() else None
            if found is None:
                raise
            _report(f"{hc.job.name}.py", *found)

    return wrapper


# --- the entry point ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _hydra_raises() -> Iterator[None]:
    """Let Hydra raise its errors instead of printing its own report, so that :func:`run_hydra_app` words them.
    (Hydra reads ``HYDRA_FULL_ERROR`` when an error happens; the previous value comes back afterwards.)"""
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def _tracebacks_wanted() -> bool:
    """Whether the user set ``HYDRA_FULL_ERROR`` (before :func:`run_hydra_app` set it for Hydra)."""
    if _USER_FULL_ERROR is not None:
        return _USER_FULL_ERROR
    return os.environ.get("HYDRA_FULL_ERROR", "").strip() not in ("", "0")


def _report(script: str, kind: str, message: str) -> None:
    print(f"{script}: error ({kind}): {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def run_hydra_app(main: Callable[[], Any], *, script: str, config_dir: Path) -> None:
    """Call a ``@hydra.main`` function; a user error prints ``SCRIPT: error (KIND): message`` and exits 2.

    Any other exception keeps its traceback; with ``HYDRA_FULL_ERROR=1`` set by the user, every error does.
    """
    global _USER_FULL_ERROR
    _USER_FULL_ERROR = _tracebacks_wanted()
    try:
        with _hydra_raises():
            main()
    except Exception as exc:
        found = None if _USER_FULL_ERROR else describe_user_error(exc, config_dir)
        if found is None:
            raise
        _report(script, *found)
    finally:
        _USER_FULL_ERROR = None

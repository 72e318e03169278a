"""What keeps two scoring runs apart and a run's warnings readable: the OS lock on a work folder (and on a feature
store outside it) and the warnings collected into notes.

Two runs on one work folder would delete each other's checkpoints and cohort view, so :func:`score_cohort` holds an
OS lock for the whole run and a second run is refused at once (:class:`WorkDirLockedError`). Warnings raised while
scoring become notes of the result (printed by ``omics-risk score``, kept in its report) instead of scrolling past.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

__all__ = ["LIBRARY_NOTICES", "LOCK_FILE", "WorkDirLockedError", "warning_text"]


class WorkDirLockedError(RuntimeError):
    """Another scoring run holds the work folder (or the feature store) this run needs."""

    def __init__(self, what: str, folder: Path, lock: Path, holder: Mapping[str, Any]):
        self.folder, self.lock, self.holder = folder, lock, dict(holder)
        parts = [f"pid {holder['pid']}" if holder.get("pid") else "",
                 f"on host {holder['host']}" if holder.get("host") else "",
                 f"started {holder['started']}" if holder.get("started") else ""]
        who = " ".join(p for p in parts if p) or "holder unknown"
        command = str(holder.get("command") or "")
        if command:
            who += f", command: {command if len(command) <= 160 else command[:157] + '...'}"
        advice = ("wait for it to finish, or give this run another --out or --work-dir" if what == "work folder" else
                  "wait for it to finish, or give this run its own --features folder (default: in its work folder)")
        if _holder_gone(holder):
            advice += (f"; process {holder['pid']} has ended, so a process it started still holds the lock: end it "
                       f"(`fuser -v {lock}` lists it)")
        super().__init__(f"another omics-risk score run is using the {what} {folder} ({who}): {advice}. Its lock "
                         f"{lock} is released by the OS when that process ends, so it never goes stale; do not "
                         "delete it while a run holds it")


def _holder_gone(holder: Mapping[str, Any]) -> bool:
    """Whether the recorded holder was a process of this host that no longer exists (a child may hold the lock)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") != socket.gethostname() or sys.platform == "win32":
        return False  # (on Windows, os.kill(pid, 0) would send Ctrl-C instead of probing)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


#: The lock file of a work folder (and of a feature store outside it) while a scoring run uses it.
LOCK_FILE = ".score.lock"


def _read_holder(lock: Path) -> dict[str, Any]:
    try:
        holder = json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def _folder_lock(folder: Path, what: str, notes: list[str]) -> Iterator[None]:
    """Hold an OS lock (``flock`` through filelock) on ``folder`` for the whole run, or raise
    :class:`WorkDirLockedError` at once: two runs on one work folder would delete each other's checkpoints and
    cohort view. The kernel drops the lock when the process dies, so a killed run never leaves a stale lock.
    The lock file records the holder (pid, host, start time, command) for the message of a run that is refused."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now().astimezone().isoformat(timespec="seconds"), "command": " ".join(sys.argv)}
    record = json.dumps(holder).encode()

    def write_holder(fd: int) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, record)

    lock: Any = FileLock(path, on_acquired=write_holder)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise WorkDirLockedError(what, folder, path, _read_holder(path)) from None
    except OSError as exc:  # a filesystem without flock (some network mounts): run unlocked, and say so
        notes.append(f"could not lock the {what} {folder} ({exc}): do not start another scoring run on it until "
                     "this one ends")
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            with contextlib.suppress(OSError):
                os.truncate(path, 0)  # the holder record goes with the hold
            lock.release()


def _within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


#: Other libraries' API notices (SQLAlchemy, pandas, MLflow ...): nothing a user of the scoring can act on.
LIBRARY_NOTICES: tuple[type[Warning], ...] = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_PACKAGE_DIR = str(Path(__file__).resolve().parents[1]) + os.sep


def warning_text(w: warnings.WarningMessage) -> str:
    """A caught warning as a note: our own as they are, another library's with its category and package."""
    text = str(w.message)
    if str(Path(w.filename).resolve()).startswith(_PACKAGE_DIR):
        return text
    parts = Path(w.filename).parts
    package = parts[parts.index("site-packages") + 1] if "site-packages" in parts[:-1] else Path(w.filename).stem
    return f"{w.category.__name__} from {package}: {text}"


@contextlib.contextmanager
def _collect_warnings(notes: list[str], collected: list[warnings.WarningMessage]) -> Iterator[None]:
    """The warnings raised while scoring become notes of the result (printed with it, kept in the report) instead of
    scrolling past in the progress output; the caller's filters still decide what is raised at all. Other libraries'
    deprecation notices are passed on unchanged, and if the run fails every warning is passed on."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    except BaseException:
        _reemit(caught)
        raise
    for w in caught:
        own = str(Path(w.filename).resolve()).startswith(_PACKAGE_DIR)
        if issubclass(w.category, LIBRARY_NOTICES) and not own:
            _reemit([w])
            continue
        text = warning_text(w)
        if text not in notes:
            notes.append(text)
            collected.append(w)


def _reemit(caught: Sequence[warnings.WarningMessage]) -> None:
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


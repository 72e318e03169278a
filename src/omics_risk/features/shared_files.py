"""Shared data files (one file for many samples) read so that one sample's bad rows fail only that sample.

The readers of :mod:`omics_risk.data.readers` are strict on purpose: a file with one bad cell raises a
:class:`~omics_risk.data.readers.DataFileError` listing every problem with its line (Parquet: row) and column, which
is what ``omics-risk validate`` needs. For a file shared by many samples that would make one sample's bad rows fail
every sample of the modality. :func:`read_isolating` uses the reader's own problem list to find whose rows are bad:
the samples owning the located rows (in a metabolomics matrix, columns) are set aside with their problems, and the
rest is read again, by the same reader, from a filtered copy. The other samples' values therefore come out of
exactly the parsing and checks of a clean file, and a clean file is read once, as before.

Problems that belong to no sample (the header, a missing required column, a row without a sample_id, a bad
feature_id) still fail the whole file with the reader's message, and so does a file in which every sample is bad:
then the file is the problem (say, a text column), not a sample.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd

from omics_risk.data.readers import DataFileError, FileIssue, has_extension
from omics_risk.data.readers.tables import _Table  # the reader's own row numbering, so lines map back exactly

__all__ = ["SharedFile", "display_path", "each_shared_file", "file_failure", "join_reasons", "read_isolating"]

T = TypeVar("T")
_PARQUET = (".parquet", ".pq")
#: How :mod:`omics_risk.data.readers` locates a Parquet row (which has no line): ``"row 5: message"``.
_ROW_PREFIX = re.compile(r"^row (\d+): ")
#: At most this many problems of one sample are spelled out in its reason (the rest are counted).
MAX_REASONS = 3


def display_path(path: Path, root: Path) -> str:
    """``path`` relative to the cohort folder when it lies inside it (how samples.csv names files), else as is."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def file_failure(exc: Exception, display: str) -> str:
    """Reason of every sample of a shared file that is unusable as a whole (the reader's message names the file)."""
    if isinstance(exc, DataFileError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{display} cannot be read ({exc.strerror or exc}); check that it exists and is readable"
    return f"{display}: {type(exc).__name__}: {exc}"


def each_shared_file(
    samples: pd.DataFrame, failures: dict[str, str], read: Callable[[str, pd.DataFrame], T]
) -> Iterator[tuple[str, pd.DataFrame, T]]:
    """``(path, its samples.csv rows, read(path, rows))`` for each shared file of a modality, in path order.

    A file that ``read`` cannot use as a whole (:class:`DataFileError`, ``OSError``) fails only its own samples, with
    the reason, into ``failures``; when every file of the modality is unusable the first error is raised instead,
    since then the files, not some samples, are the problem.
    """
    unusable: list[Exception] = []
    for rel, group in samples.groupby("path", sort=True):
        try:
            value = read(str(rel), group)
        except (DataFileError, OSError) as exc:
            failures.update(dict.fromkeys(group["sample_id"], file_failure(exc, str(rel))))
            unusable.append(exc)
            continue
        yield str(rel), group, value
    if unusable and len(unusable) == samples["path"].nunique():
        raise unusable[0]


def join_reasons(reasons: Sequence[str]) -> str:
    """The first :data:`MAX_REASONS` problems of a sample, and how many more there are."""
    shown = "; ".join(reasons[:MAX_REASONS])
    more = len(reasons) - MAX_REASONS
    return shown + (f" (and {more} more problem(s) of this sample)" if more > 0 else "")


def _owner_of(value: Any) -> str | None:
    """A sample_id cell as the readers normalise it (stripped text), None when empty."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


class SharedFile:
    """One input file of a reader, and how a problem located in it maps to a sample.

    Args:
        path: the file as samples.csv / cohort.yaml name it (resolved).
        what: what the reader calls the file (e.g. "ctDNA variant table"), used when it is re-read raw.
        owned_by: ``"row"``: each row belongs to the sample in its ``sample_id`` column (long tables, the
            metabolomics sample sheet); ``"column"``: each column after the first (``feature_id``) is one injection
            (the metabolomics matrix); None: the file belongs to no sample (an annotation), it is never filtered.
        display: how reasons name the file (default: ``path``).
        columns: the modality's column mapping of cohort.yaml (contract name -> the file's header), as the reader
            gets it, so that rows are located by the same ``sample_id`` column.
    """

    def __init__(self, path: Path, what: str, owned_by: Literal["row", "column"] | None, display: str | None = None,
                 columns: Mapping[str, str] | None = None):
        self.path = Path(path)
        self.columns = dict(columns or {})
        self.what = what
        self.owned_by = owned_by
        self.display = display or str(path)
        self.is_parquet = has_extension(self.path, _PARQUET)
        self.current = self.path
        self._raw: pd.DataFrame | None = None
        self._rows: np.ndarray | None = None  # original 0-based row of each row of the current copy

    def raw(self) -> pd.DataFrame | None:
        """The file as the reader sees it before typing (same rows, same numbering); None if it cannot be read."""
        if self._raw is None:
            try:
                self._raw = _Table(self.path, self.what, self.columns).df
            except (DataFileError, OSError):
                return None
            self._rows = np.arange(len(self._raw))
        return self._raw

    def owners(self) -> list[str]:
        """Every sample (injection) the current copy holds."""
        raw = self.raw()
        if raw is None or self.owned_by is None:
            return []
        if self.owned_by == "column":
            return [str(c) for c in raw.columns[1:]]
        if "sample_id" not in raw.columns:
            return []
        return sorted({o for o in map(_owner_of, raw["sample_id"]) if o is not None})

    def locate(self, issue: FileIssue) -> tuple[str, str] | None:
        """(owning sample, the problem as a reason naming the original file and line), or None for a file-level one."""
        if self.owned_by is None or issue.path != str(self.current):
            return None
        raw = self.raw()
        if raw is None:
            return None
        if self.owned_by == "column":
            if len(raw.columns) == 0 or raw.columns[0] != "feature_id" or issue.column not in raw.columns[1:]:
                return None
            return str(issue.column), self._reason(issue, issue.line, issue.message)
        if "sample_id" not in raw.columns:
            return None
        message = issue.message
        if self.is_parquet:
            m = _ROW_PREFIX.match(message)
            row = int(m.group(1)) - 1 if m else -1
            message = message[m.end() :] if m else message
        else:
            row = issue.line - 2 if issue.line is not None else -1
        if not 0 <= row < len(raw):
            return None
        owner = _owner_of(raw["sample_id"].iloc[row])
        if owner is None:
            return None
        assert self._rows is not None
        original = int(self._rows[row])
        return owner, self._reason(issue, original if self.is_parquet else original + 2, message)

    def _reason(self, issue: FileIssue, where: int | None, message: str) -> str:
        loc = self.display
        if where is not None:
            loc += f" row {where + 1}" if self.is_parquet and self.owned_by == "row" else f":{where}"
        if issue.column is not None:
            loc += f" [{issue.column}]"
        return f"{loc}: {message}"

    def drop(self, owners: set[str]) -> None:
        """Remove the rows (columns) of ``owners`` from the current copy."""
        raw = self.raw()
        if raw is None or self.owned_by is None:
            return
        if self.owned_by == "column":
            self._raw = raw.drop(columns=[c for c in raw.columns[1:] if str(c) in owners])
            return
        keep = ~raw["sample_id"].map(_owner_of).isin(owners).to_numpy()
        assert self._rows is not None
        self._rows = self._rows[keep]
        self._raw = raw[keep].reset_index(drop=True)

    def write(self, folder: Path) -> Path:
        """The current copy as a file of the same format (same name, so the reader treats it alike)."""
        if self.owned_by is None or self._raw is None:
            return self.path
        dest = folder / self.path.name
        if self.is_parquet:
            self._raw.to_parquet(dest, index=False)
        else:
            sep = "\t" if has_extension(self.path, (".tsv", ".tsv.gz")) else ","
            self._raw.to_csv(dest, sep=sep, index=False)
        self.current = dest
        return dest


def read_isolating(read: Callable[..., T], files: Iterable[SharedFile]) -> tuple[T, dict[str, str]]:
    """``read(*paths)`` of a reader of :mod:`omics_risk.data.readers`, and the samples it had to set aside.

    A file the reader accepts is returned as read, with no failure. Otherwise the samples owning the located
    problems are removed from filtered copies and the reader runs again on them, until it accepts them; the
    result is the reader's output for the other samples and ``{sample_id: reason}`` for the removed ones (every
    owner a problem was located on, samples.csv's samples or not: the caller decides what each one is). The
    original :class:`DataFileError` is raised when a problem belongs to no sample or when no sample would be left.
    """
    files = list(files)
    try:
        return read(*[f.path for f in files]), {}
    except DataFileError as exc:
        first = exc
    bad: dict[str, list[str]] = {}
    error = first
    with tempfile.TemporaryDirectory(prefix="omics-risk-shared-") as tmp:
        attempt = 0
        while True:  # each round removes at least one sample, so it ends
            found: dict[str, list[str]] = {}
            for issue in error.issues:
                for f in files:
                    hit = f.locate(issue)
                    if hit is not None:
                        found.setdefault(hit[0], []).append(hit[1])
                        break
            if not found:
                raise first
            for owner, reasons in found.items():
                bad.setdefault(owner, []).extend(reasons)
            for f in files:
                f.drop(set(found))
            if any(f.owned_by is not None and not f.owners() for f in files):
                raise first  # nothing left: the file, not a sample, is the problem
            attempt += 1
            folder = Path(tmp) / str(attempt)
            folder.mkdir()
            try:
                return read(*[f.write(folder) for f in files]), {k: join_reasons(v) for k, v in bad.items()}
            except DataFileError as exc:
                error = exc

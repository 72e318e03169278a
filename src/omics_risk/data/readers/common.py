"""Shared low-level parts of the readers: errors located by file, line and column, extensions, and the byte-level
text parsing (pyarrow fast path, line-by-line rescan to locate bad lines) the text formats share.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from omics_risk.data.registry import get_format

MAX_ISSUES = 20

IMAGE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
FRAGMENT_EXTENSIONS = (".frag.gz", ".frag.tsv.gz", ".bed.gz", ".tsv.gz", ".frag", ".frag.tsv", ".bed", ".tsv")
BAM_EXTENSIONS = (".bam",)
BISMARK_EXTENSIONS = (".cov", ".cov.gz")
TABLE_EXTENSIONS = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet", ".pq")
_GZIP_MAGIC = b"\x1f\x8b"
#: The 28-byte empty block bgzip writes last; its absence means the file was cut at a block boundary.
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


@dataclass(frozen=True)
class FileIssue:
    """One problem inside a data file: ``line`` is 1-based (a CSV header is line 1), ``column`` a column name."""

    path: str
    message: str
    line: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
        if self.column is not None:
            where += f" [{self.column}]"
        return f"{where}: {self.message}"


class DataFileError(ValueError):
    """A data file that cannot be used; ``issues`` lists every problem found (the first is ``line``/``column``)."""

    def __init__(
        self,
        path: str | Path,
        message: str,
        line: int | None = None,
        column: str | None = None,
        *,
        issues: Sequence[FileIssue] = (),
    ):
        self.path = str(path)
        self.line = line
        self.column = column
        self.issues: list[FileIssue] = [FileIssue(self.path, message, line, column)]
        self.issues += [i for i in issues if i != self.issues[0]]
        more = f" (and {len(self.issues) - 1} more problem(s) in this file)" if len(self.issues) > 1 else ""
        self.message = message
        super().__init__(f"{self.issues[0]}{more}")

    @classmethod
    def from_issues(cls, issues: Sequence[FileIssue]) -> DataFileError:
        first = issues[0]
        return cls(first.path, first.message, first.line, first.column, issues=issues[1:])


class _Issues:
    """Collects the problems of one file, capped at MAX_ISSUES with a final 'and N more' count."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        self.items: list[FileIssue] = []
        self.dropped = 0

    def add(self, message: str, line: int | None = None, column: str | None = None, path: str | None = None) -> None:
        if len(self.items) < MAX_ISSUES:
            self.items.append(FileIssue(path or self.path, message, line, column))
        else:
            self.dropped += 1

    def extend(self, other: _Issues) -> None:
        for i in other.items:
            self.add(i.message, i.line, i.column, i.path)
        self.dropped += other.dropped

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        items = sorted(self.items, key=lambda i: (i.path != self.path, i.path, i.line or 0))
        if self.dropped:
            items.append(FileIssue(self.path, f"... and {self.dropped} more problem(s) like these"))
        raise DataFileError.from_issues(items)


def has_extension(path: str | Path, extensions: Iterable[str]) -> bool:
    """Case-insensitive check of a (possibly multi-part, e.g. ``.nii.gz``) extension."""
    name = Path(path).name.lower()
    return any(name.endswith(ext) for ext in extensions)


def format_extension_problem(path: Path, fmt: str) -> str | None:
    """Why ``path`` cannot hold modality format ``fmt`` (judged by name and kind), or None when it can.

    The extensions are the registered format's (:mod:`omics_risk.data.formats`); a format whose samples need a mask
    (an image) may also be a folder (a DICOM series).
    """
    entry = get_format(fmt)
    if entry is None:
        return f"unknown format {fmt!r}"
    exts = entry.extensions
    if path.is_dir():
        if entry.needs_mask:
            return None
        return f"is a folder, but format '{fmt}' needs a file ({', '.join(exts)})"
    if has_extension(path, exts):
        return None
    extra = " or a folder holding one DICOM series" if entry.needs_mask else ""
    return f"has an extension that format '{fmt}' does not read; use {', '.join(exts)}{extra}"


def _file_bytes(path: Path) -> bytes:
    """The decompressed content of a plain, gzip or BGZF (multi-member gzip) file."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic != _GZIP_MAGIC:
        return path.read_bytes()
    try:
        with pa.input_stream(str(path), compression="gzip") as stream:
            data = stream.read()
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataFileError(
            path, f"truncated or corrupt gzip file ({exc}); re-compress it with bgzip or gzip, or copy it again"
        ) from exc
    with open(path, "rb") as fh:
        head = fh.read(18)
        is_bgzf = len(head) >= 18 and head[3] & 4 and head[12:14] == b"BC"
        if is_bgzf:
            fh.seek(-28, io.SEEK_END)
            if fh.read(28) != _BGZF_EOF:
                raise DataFileError(
                    path,
                    "BGZF file lacks its end-of-file marker, so it is probably truncated; "
                    "copy it again or re-compress it with bgzip",
                )
    return data


@dataclass
class _Rows:
    """Data lines of a headerless text file and the original 1-based line number of each."""

    data: bytes
    first_line: int
    line_numbers: np.ndarray | None  # None: row i is on line first_line + i

    def line(self, row: int) -> int:
        return int(self.line_numbers[row]) if self.line_numbers is not None else self.first_line + int(row)


def _data_rows(data: bytes, comment_prefixes: tuple[bytes, ...] = (b"#",)) -> _Rows:
    """Drop comment and blank lines but remember where each data line was, for error messages."""
    lead = 0
    while data.startswith(comment_prefixes):
        nl = data.find(b"\n")
        data = data[nl + 1 :] if nl >= 0 else b""
        lead += 1
    end = len(data)
    while end and data[end - 1] in b"\r\n":
        end -= 1
    irregular = (
        data.startswith((b"\n", b"\r\n"))
        or data.find(b"\n\n", 0, end) >= 0
        or data.find(b"\n\r\n", 0, end) >= 0
        or any(data.find(b"\n" + p, 0, end) >= 0 for p in comment_prefixes)
    )
    if not irregular:
        if not end:
            return _Rows(b"", lead + 1, None)
        # A single trailing newline is what pyarrow expects; copy only when the ending differs.
        body = data if end == len(data) - 1 and data[end] == 10 else data[:end] + b"\n"
        return _Rows(body, lead + 1, None)
    lines = data[:end].split(b"\n")
    keep = [i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith(comment_prefixes)]
    kept = b"\n".join(lines[i] for i in keep)
    return _Rows(kept + b"\n" if kept else b"", lead + 1, np.asarray(keep, dtype=np.int64) + lead + 1)


Validator = Callable[[str], str | None]

#: What pyarrow's int64 and float64 conversions accept (ASCII digits; no '+' or '_' in integers, unlike Python's
#: int() and float()), so that the line re-scan finds, with its line, every value the fast parse refused.
_INT_RE = re.compile(r" *-?[0-9]+ *")
_FLOAT_RE = re.compile(r" *[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)? *|(?i: *[-+]?(?:inf|infinity|nan) *)")


def _int_field(minimum: int | None = None, maximum: int | None = None) -> Validator:
    def check(s: str) -> str | None:
        if not _INT_RE.fullmatch(s):
            return f"must be a whole number, got {s!r}"
        v = int(s)
        if not -(2**63) <= v < 2**63:
            return f"is out of range (a 64-bit whole number), got {s!r}"
        if minimum is not None and v < minimum:
            return f"must be >= {minimum}, got {s!r}"
        if maximum is not None and v > maximum:
            return f"must be <= {maximum}, got {s!r}"
        return None

    return check


def _float_field(minimum: float | None = None, maximum: float | None = None) -> Validator:
    def check(s: str) -> str | None:
        if not _FLOAT_RE.fullmatch(s):
            return f"must be a number, got {s!r}"
        v = float(s)
        if not np.isfinite(v):
            return f"must be a finite number, got {s!r}"
        if minimum is not None and v < minimum:
            return f"must be >= {minimum:g}, got {s!r}"
        if maximum is not None and v > maximum:
            return f"must be <= {maximum:g}, got {s!r}"
        return None

    return check


def _text_field(s: str) -> str | None:
    return None if s.strip() else "must not be empty"


def _choice_field(choices: Sequence[str]) -> Validator:
    def check(s: str) -> str | None:
        return None if s in choices else f"must be {' or '.join(repr(c) for c in choices)}, got {s!r}"

    return check


@dataclass(frozen=True)
class _Column:
    name: str
    type: pa.DataType
    check: Validator


def _scan_lines(
    rows: _Rows,
    columns: Sequence[_Column],
    issues: _Issues,
    what: str,
    row_checks: Sequence[Callable[[list[str]], tuple[str, str] | None]] = (),
) -> None:
    """Line-by-line re-scan used only when the fast parse failed: finds every bad line with its column."""
    for i, raw in enumerate(rows.data.split(b"\n")[:-1] if rows.data else []):
        line = rows.line(i)
        try:
            text = raw.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            issues.add("line is not UTF-8 text; is this really a " + what + " file?", line)
            continue
        fields = text.split("\t")
        if len(fields) != len(columns):
            issues.add(
                f"has {len(fields)} tab-separated column(s), expected {len(columns)} "
                f"({', '.join(c.name for c in columns)})",
                line,
            )
            continue
        bad = False
        for col, value in zip(columns, fields, strict=True):
            msg = col.check(value)
            if msg:
                issues.add(f"{col.name} {msg}", line, col.name)
                bad = True
        if not bad:
            for check in row_checks:
                res = check(fields)
                if res:
                    issues.add(res[1], line, res[0])


def _parse_tsv(
    path: Path,
    rows: _Rows,
    columns: Sequence[_Column],
    what: str,
    row_checks: Sequence[Callable[[list[str]], tuple[str, str] | None]] = (),
) -> pa.Table:
    """Parse headerless TSV rows with pyarrow; on failure re-scan to report the bad lines."""
    names = [c.name for c in columns]
    if not rows.data:
        return pa.table({c.name: pa.array([], type=c.type) for c in columns})
    try:
        return pacsv.read_csv(
            io.BytesIO(rows.data),
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c.name: c.type for c in columns},
                null_values=[],  # by default "", NA, null, nan ... become nulls: NaN floats, garbage once cast to int
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
        issues = _Issues(path)
        _scan_lines(rows, columns, issues, what, row_checks)
        if not issues:
            raise DataFileError(path, f"cannot be parsed as a {what} file: {exc}") from exc
        issues.raise_if_any()
        raise AssertionError("unreachable") from exc


def _report_rows(issues: _Issues, rows: _Rows, bad: np.ndarray, column: str, message: Callable[[int], str]) -> None:
    """Add one issue per offending row (vectorised mask in, capped list out)."""
    for r in np.flatnonzero(bad)[: MAX_ISSUES + 1]:
        issues.add(message(int(r)), rows.line(int(r)), column)
    extra = int(np.count_nonzero(bad)) - (MAX_ISSUES + 1)
    if extra > 0:
        issues.dropped += extra


def _first_line(rows: _Rows) -> bytes:
    nl = rows.data.find(b"\n")
    return rows.data[:nl].rstrip(b"\r") if nl >= 0 else rows.data


_STRING = pa.string()

"""Where a cohort's data may live: inside the cohort folder, or inside a shared data root that cohort.yaml declares.

Every path a cohort names (samples.csv ``path`` / ``mask_path``, cohort.yaml ``references:``, the metabolomics
``sample_sheet`` / ``features``) goes through one :class:`Confinement`: at parse time, where a path leaving the
allowed folders becomes a located error, and again in :meth:`omics_risk.data.contract.Cohort.path` just before a
file is opened. So a ``..``, an absolute path or a symbolic link in a cohort received from another site cannot make
omics-risk read a file it was never meant to (``../../../../etc/passwd``, another study's data on a shared server).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "OUTSIDE_HINT",
    "Confinement",
    "PathOutsideCohortError",
    "printable",
    "rebase_cell",
    "rebase_for_view",
    "refusal",
    "unusable_path",
]

#: Longest file name and path a POSIX file system takes (NAME_MAX, PATH_MAX on Linux): longer is a broken cell.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
#: What to do about a path that leaves the cohort (appended to every such error).
OUTSIDE_HINT = ("omics-risk reads files only inside the cohort folder and the folders listed under data_roots in "
                "cohort.yaml: move the file into the cohort folder, or add the folder that holds it to data_roots")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def printable(value: str) -> str:
    """``value`` with control characters written as ``\\xNN``, so a message shows what the cell really holds."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


def unusable_path(value: str) -> str | None:
    """Why ``value`` cannot name a file at all (a NUL byte, a name or path too long for the file system), or None.

    Checked before resolving, because ``os.path.realpath`` raises on a NUL byte.
    """
    if "\x00" in value:
        return "contains a NUL byte (\\x00)"
    try:
        encoded = os.fsencode(value)
    except UnicodeError:
        return "cannot be encoded as a file name"
    if len(encoded) > MAX_PATH_BYTES:
        return f"is {len(encoded)} bytes long, more than the {MAX_PATH_BYTES} a file system path may have"
    longest = max(len(part) for part in encoded.split(b"/"))
    if longest > MAX_NAME_BYTES:
        return f"has a name of {longest} bytes, more than the {MAX_NAME_BYTES} a file system allows"
    return None


def _what_to_do(value: str) -> str:
    """A name no file can have needs fixing; a real path outside needs moving, or its folder declared."""
    return "fix it" if unusable_path(value) is not None else OUTSIDE_HINT


def refusal(label: str, value: str, why: str) -> str:
    """The message for a path that :meth:`Confinement.check` refused: what it is, why, and what to do."""
    return f"{label} '{printable(value)}' {why}; {_what_to_do(value)}"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


class PathOutsideCohortError(ValueError):
    """A cohort path that resolves outside the cohort folder and its data roots (or cannot name a file at all)."""

    def __init__(self, path: str, reason: str, roots: Sequence[Path]):
        self.path = path
        self.reason = reason
        self.roots = tuple(roots)
        allowed = ", ".join(str(r) for r in self.roots)
        super().__init__(f"refusing to read '{printable(path)}': it {reason} (allowed folders: {allowed}); "
                         f"{_what_to_do(path)}")


@dataclass
class Confinement:
    """The folders a cohort may read from (resolved, the cohort folder first) and the check that keeps paths there.

    Resolution follows symbolic links (``os.path.realpath``), so a link inside the cohort that points elsewhere is
    judged by where it leads. Results are memoised per path, and each parent folder is resolved once, so checking
    100,000 samples.csv rows costs one ``lstat`` per row.
    """

    root: Path
    roots: tuple[Path, ...]
    _seen: dict[str, tuple[str | None, str | None]] = field(default_factory=dict, repr=False, compare=False)
    _dirs: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, root: str | Path, data_roots: Iterable[str | Path] = ()) -> Confinement:
        """The confinement of the cohort at ``root`` with extra allowed folders ``data_roots``."""
        root = Path(root)
        resolved = [Path(os.path.realpath(root))]
        for r in data_roots:
            p = Path(os.path.realpath(Path(r) if Path(r).is_absolute() else root / r))
            if p not in resolved:
                resolved.append(p)
        return cls(root, tuple(resolved))

    @property
    def data_roots(self) -> tuple[Path, ...]:
        return self.roots[1:]

    def _realpath(self, value: str) -> str:
        """``os.path.realpath(root / value)``, resolving each parent folder once for all the files in it."""
        joined = value if os.path.isabs(value) else os.path.join(self.root, value)
        head, tail = os.path.split(joined)
        real_head = self._dirs.get(head)
        if real_head is None:
            real_head = self._dirs[head] = os.path.realpath(head)
        if tail in ("", os.curdir):
            return real_head
        if tail == os.pardir:
            return os.path.dirname(real_head)
        path = os.path.join(real_head, tail)
        try:
            is_link = stat.S_ISLNK(os.lstat(path).st_mode)
        except OSError:  # missing or unusable: realpath (non-strict) keeps the name as it is
            return path
        return os.path.realpath(path) if is_link else path

    def check(self, value: str) -> tuple[str | None, str | None]:
        """``(resolved path, None)`` when ``value`` stays inside an allowed folder, else ``(resolved or None, why)``.

        ``why`` completes a sentence starting with the path: "'../x' leads outside the cohort folder, to /x".
        Memoised: for the checks of a whole table at once.
        """
        hit = self._seen.get(value)
        if hit is None:
            hit = self._seen[value] = self._judge(value, self._realpath)
        return hit

    def _judge(self, value: str, realpath: Callable[[str], str]) -> tuple[str | None, str | None]:
        why = unusable_path(value)
        if why is not None:
            return None, why
        try:
            resolved = realpath(value)
        except (OSError, ValueError, RuntimeError) as exc:  # realpath is non-strict; kept as a safety net
            return None, f"cannot be resolved ({exc})"
        if any(_inside(resolved, str(r)) for r in self.roots):
            return resolved, None
        lexical = os.path.normpath(value if os.path.isabs(value) else os.path.join(self.roots[0], value))
        to = printable(resolved)
        if _inside(lexical, str(self.roots[0])):
            why = f"is a symbolic link (or lies under one) that leads outside the cohort folder, to {to}"
        elif os.path.isabs(value):
            why = f"is an absolute path outside the cohort folder{self._and_roots()}"
        else:
            why = f"leads outside the cohort folder{self._and_roots()}, to {to}"
        return resolved, why

    def _and_roots(self) -> str:
        return " and its data_roots" if self.data_roots else ""

    def resolve(self, value: str) -> Path:
        """The resolved file ``value`` names; raises :class:`PathOutsideCohortError` when it leaves the folders.

        Not memoised: called just before a file is opened, it judges the file system as it is then (a link swapped
        after validation is caught).
        """
        resolved, why = self._judge(str(value), lambda v: os.path.realpath(v if os.path.isabs(v) else self.root / v))
        if why is not None or resolved is None:
            raise PathOutsideCohortError(str(value), why or "cannot be resolved", self.roots)
        return Path(resolved)

    def in_data_root(self, value: str) -> bool:
        """True when ``value`` resolves inside a declared data root (an absolute path there is expected)."""
        resolved, why = self.check(value)
        return why is None and resolved is not None and any(_inside(resolved, str(r)) for r in self.data_roots)


def _escapes(value: str) -> bool:
    """A relative path whose ``..`` climbs above the folder it is relative to."""
    return not os.path.isabs(value) and os.path.normpath(value).split(os.sep)[0] == os.pardir


def rebase_for_view(spec_raw: Mapping[str, Any], source: Path) -> dict[str, Any]:
    """A cohort.yaml mapping for a copy of the cohort that lives elsewhere (the repaired view of ``omics-risk score``).

    The view links to the source cohort's entries, which resolve inside the source folder: the source folder and its
    data roots (made absolute) become the view's data roots, and relative paths climbing out with ``..`` (valid only
    when they land in a data root) are made absolute against the source folder, so they name the same files.
    """
    source = Path(os.path.realpath(source))
    out = dict(spec_raw)
    roots = out.get("data_roots") or []
    roots = [roots] if isinstance(roots, str) else list(roots) if isinstance(roots, list) else []
    out["data_roots"] = [str(source)] + [r if os.path.isabs(r) else os.path.realpath(source / r)
                                         for r in roots if isinstance(r, str)]
    if isinstance(out.get("references"), Mapping):
        out["references"] = {k: str(source / v) if isinstance(v, str) and _escapes(v) else v
                             for k, v in out["references"].items()}
    if isinstance(out.get("modalities"), Mapping):
        mods: dict[Any, Any] = {}
        for name, opts in out["modalities"].items():
            if isinstance(opts, Mapping):
                opts = {k: str(source / v) if k in ("sample_sheet", "features") and isinstance(v, str) and _escapes(v)
                        else v for k, v in opts.items()}
            mods[name] = opts
        out["modalities"] = mods
    return out


def rebase_cell(value: object, source: Path) -> object:
    """A samples.csv ``path`` / ``mask_path`` cell for the view: a ``..`` path made absolute against ``source``."""
    if isinstance(value, str) and _escapes(value.strip()):
        return str(Path(os.path.realpath(source)) / value.strip())
    return value

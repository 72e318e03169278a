"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half of one.

Every store omics-risk writes (feature store, extraction cache, CT tensor cache, scoring checkpoints and outputs)
is read by later runs, possibly while another process writes. So each file is written to a temporary name beside
it, unique to the writing process and thread, and moved over the target with ``os.replace`` (atomic on POSIX and
Windows within one file system); a write that fails leaves no temporary file behind.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write instead of ``path``; it replaces ``path`` when the block ends without error."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")

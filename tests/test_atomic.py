"""omics_risk.atomic: a target is replaced whole or not at all, and no temporary file is left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from omics_risk.atomic import atomic_path, atomic_write_text


def test_a_finished_write_replaces_the_target(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    atomic_write_text(target, '{"n": 1}')
    assert target.read_text() == '{"n": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "scores.parquet"
    target.write_bytes(b"complete")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        assert tmp.parent == target.parent and tmp.name.startswith(".scores.parquet.")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]

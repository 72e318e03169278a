"""``extract`` reads nothing outside the cohort: a samples.csv path that climbs out is refused before any file opens."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from toy_extractors import TOY_CONFIG

from omics_risk.cli import main
from omics_risk.data.contract import CohortError
from omics_risk.features.extract import extract_cohort

#: Paths opened while the audit hook is armed (the hook cannot be removed, so it is installed once and gated).
_OPENED: list[str] = []
_ARMED: list[bool] = [False]


def _audit(event: str, args: tuple) -> None:
    if _ARMED[0] and event == "open" and args and isinstance(args[0], str | bytes | Path):
        _OPENED.append(str(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def escaping_cohort(make_valid_cohort: Callable[..., Path], tmp_path: Path) -> tuple[Path, Path, int]:
    """A cohort four folders below ``tmp_path`` whose P02 cfDNA row points at ``tmp_path/etc/passwd``."""
    root = make_valid_cohort(tmp_path / "w" / "x" / "y" / "cohort")
    secret = tmp_path / "etc" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with open(root / "samples.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    line = next(k for k, r in enumerate(rows, start=1) if r[1] == "P02-cfdna-postop1")
    rows[line - 1][rows[0].index("path")] = "../../../../etc/passwd"
    with open(root / "samples.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    return root, secret, line


def test_extract_refuses_a_path_leaving_the_cohort(escaping_cohort: tuple[Path, Path, int], tmp_path: Path) -> None:
    root, secret, line = escaping_cohort
    out = tmp_path / "features"
    _OPENED.clear()
    _ARMED[0] = True
    try:
        with pytest.raises(CohortError) as exc:
            extract_cohort(root, out, config=TOY_CONFIG, modalities=["cfdna"], workers=1, progress=False)
    finally:
        _ARMED[0] = False
    assert f"ERROR: samples.csv:{line} [path]: path '../../../../etc/passwd' leads outside the cohort folder, to " \
           f"{secret}; omics-risk reads files only inside the cohort folder" in str(exc.value)
    assert [e.column for e in exc.value.problems] == ["path"]
    assert any(p.endswith("samples.csv") for p in _OPENED)  # the hook sees the files that were read ...
    assert not any(Path(p).resolve() == secret for p in _OPENED), _OPENED  # ... and the secret is not one of them
    assert not out.exists()  # refused before anything was written


def test_extract_cli_reports_it_without_a_traceback(escaping_cohort: tuple[Path, Path, int],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root, _, line = escaping_cohort
    code = main(["extract", str(root), "--modality", "cfdna", "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code != 0
    assert f"samples.csv:{line} [path]: path '../../../../etc/passwd' leads outside the cohort folder" in err
    assert "Traceback" not in err


def test_extract_reads_data_roots(make_valid_cohort: Callable[..., Path], tmp_path: Path) -> None:
    """Files in a declared data root are read like the cohort's own: a shared table and a CT scan by absolute path."""
    root = make_valid_cohort(tmp_path / "cohort")
    archive = tmp_path / "archive"
    archive.mkdir()
    (root / "rppa" / "rppa.csv").rename(archive / "rppa.csv")
    (root / "ct" / "P01_preop.nii.gz").rename(archive / "P01_preop.nii.gz")
    with open(root / "samples.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    k = rows[0].index("path")
    for r in rows[1:]:
        r[k] = {"rppa/rppa.csv": str(archive / "rppa.csv"),
                "ct/P01_preop.nii.gz": str(archive / "P01_preop.nii.gz")}.get(r[k], r[k])
    with open(root / "samples.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    (root / "cohort.yaml").write_text((root / "cohort.yaml").read_text() + f"data_roots: [{archive}]\n")
    summary = extract_cohort(root, config=TOY_CONFIG, modalities=["ct", "rppa"], workers=1, progress=False)
    assert summary.modalities["ct"]["ok"] == 4 and summary.modalities["rppa"]["ok"] == 4
    manifest = json.loads((root / "features" / "manifest.json").read_text())
    assert list(manifest["modalities"]["rppa"]["inputs"]) == [str(archive / "rppa.csv")]

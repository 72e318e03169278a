"""End-to-end checks of the ``omics-risk`` command line, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from omics_risk.cli import main

SMALL = ["--n", "12", "--fragments", "4000", "--metabolites", "40", "--ct-shape", "24", "24", "12", "--workers", "1",
         "--quiet"]


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "omics-risk" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["nsclc-postop", "sclc", "nsclc-advanced"])
def test_synth_then_validate_passes(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / kind
    assert main(["synth", "--kind", kind, "--seed", "3", "--out", str(out), *SMALL]) == 0
    assert (out / "cohort.yaml").is_file() and (out / "truth" / "summary.json").is_file()
    capsys.readouterr()
    assert main(["validate", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "0 error(s)" in text


def test_synth_refuses_non_empty_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("user data")
    assert main(["synth", "--out", str(tmp_path), *SMALL]) == 2
    assert "omics-risk synth: error" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_validate_reports_errors_with_exit_code_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    assert main(["synth", "--seed", "1", "--out", str(out), *SMALL]) == 0
    clinical = (out / "clinical.csv").read_text().splitlines()
    header = clinical[0].split(",")
    row = clinical[1].split(",")
    row[header.index("rfs_event")] = "2"
    clinical[1] = ",".join(row)
    (out / "clinical.csv").write_text("\n".join(clinical) + "\n")
    capsys.readouterr()
    assert main(["validate", str(out), "--quiet"]) == 1
    text = capsys.readouterr().out
    assert "clinical.csv:2 [rfs_event]" in text


def test_console_script_installed() -> None:
    exe = Path(sys.executable).parent / "omics-risk"
    if not exe.exists():
        pytest.skip("console script not installed in this interpreter's environment")
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert res.returncode == 0
    assert "synth" in res.stdout and "validate" in res.stdout

"""End-to-end checks of the ``omics-risk`` command line, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from omics_risk.cli import build_parser, main

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
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, encoding="utf-8", check=False)
    assert res.returncode == 0
    assert "synth" in res.stdout and "validate" in res.stdout


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m omics_risk.cli`` of this checkout, run from ``cwd``, with no MLflow tracking URI set."""
    import omics_risk

    src = str(Path(omics_risk.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "omics_risk.cli", *args], capture_output=True,
                          text=True, encoding="utf-8", env=env,
                          cwd=cwd, timeout=300, check=False)


def test_score_with_a_missing_cohort_exits_2_with_one_line(tmp_path: Path) -> None:
    res = _run_cli("score", "--model", "models:/omics-risk-rfs@challenger", "--cohort", "no_such_cohort", "--out",
                   "scores.parquet", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr == ("omics-risk score: error: --cohort no_such_cohort does not exist: a cohort is a folder with "
                          "cohort.yaml, clinical.csv and (unless it is clinical-only) samples.csv "
                          "(docs/data_format.md)\n")
    assert list(tmp_path.iterdir()) == []  # nothing created: no work folder, no mlflow.db


def test_score_outside_a_project_names_the_registry_it_looked_for(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    assert main(["synth", "--seed", "2", "--out", str(cohort), *SMALL]) == 0
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    res = _run_cli("score", "--model", "models:/omics-risk-rfs@challenger", "--cohort", str(cohort), "--out",
                   "scores.parquet", cwd=run_dir)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert lines[0] == (f"omics-risk score: error: cannot resolve model 'models:/omics-risk-rfs@challenger': there is "
                        f"no MLflow registry at {run_dir / 'mlflow.db'} (tracking URI sqlite:///{run_dir / 'mlflow.db'}"
                        "); nothing was created there")
    assert "came from the default, mlflow.db in the current folder" in lines[1]
    assert "--tracking-uri sqlite:////path/to/mlflow.db" in lines[1] and "Traceback" not in res.stderr
    assert list(run_dir.iterdir()) == []  # no empty mlflow.db left behind


def test_convert_tcga_takes_a_project_and_tcga_lusc_is_its_alias() -> None:
    args = build_parser().parse_args(["convert", "tcga", "--project", "luad"])
    assert (args.project, args.src, args.out) == ("luad", None, None)  # defaults: ../shared/data/tcga_luad, data/...
    alias = build_parser().parse_args(["convert", "tcga-lusc", "--out", "x"])
    assert (alias.project, alias.out, alias.func) == ("LUSC", Path("x"), args.func)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["convert", "tcga"])  # --project is required

"""train.py and evaluate.py as a newcomer types them: a mistake ends in one line that names the key or path and the
fix ("did you mean"), exit status 2, no traceback and no output folder. Every run here fails before any training
(the entry points import torch and MLflow only once the config composed and the cohort exists), so each takes a
second or two.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI")}
    base.update({"OMICS_RISK_ROOT": str(cwd), "PYTHONPATH": str(ROOT / "src"), **(env or {})})
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=base, capture_output=True,
                          text=True, encoding="utf-8", timeout=300)


def _one_line_error(proc: subprocess.CompletedProcess, script: str) -> str:
    """The single stderr line of a user error, after checking the exit status and that nothing else was said."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error ("), proc.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "expected"), [
    (["modle=fused"], "unknown config group 'modle'; did you mean 'model'? (model=fused)"),
    (["data.rooot=/x"], "unknown config key 'data.rooot'; did you mean 'data.root'? (data.root=/x)"),
    (["model=fusde"], "config group 'model' has no option 'fusde'; did you mean 'fused'?"),
    (["data=cohort"], "data.root is not set: pass data.root=/path/to/cohort"),
    (["data.root=/nonexistent/cohort"], "data.root=/nonexistent/cohort does not exist; pass data.root=DIR"),
])
def test_train_py_user_errors_are_one_line_without_a_folder(tmp_path: Path, args: list[str], expected: str) -> None:
    line = _one_line_error(_run("train.py", *args, cwd=tmp_path), "train.py")
    assert expected in line
    assert not (tmp_path / "outputs").exists()  # a run that failed before producing anything leaves no folder


def test_a_mistyped_data_root_names_the_folder_meant(tmp_path: Path) -> None:
    (tmp_path / "cohorts" / "demo").mkdir(parents=True)
    line = _one_line_error(_run("train.py", f"data.root={tmp_path / 'cohorts' / 'dmeo'}", cwd=tmp_path), "train.py")
    assert line.endswith(f"did you mean data.root={tmp_path / 'cohorts' / 'demo'}?")


def test_a_folder_without_cohort_yaml_names_the_cohort_inside(tmp_path: Path) -> None:
    (tmp_path / "data" / "demo").mkdir(parents=True)
    (tmp_path / "data" / "demo" / "cohort.yaml").write_text("name: demo\n")
    line = _one_line_error(_run("train.py", f"data.root={tmp_path / 'data'}", cwd=tmp_path), "train.py")
    assert line.endswith(f"has no cohort.yaml, so it is not a cohort folder; did you mean "
                         f"data.root={tmp_path / 'data' / 'demo'}?")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow  # imports the training stack (torch, MLflow) before the cohort loader refuses the cohort
def test_a_broken_cohort_fails_without_a_traceback_or_a_folder(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    (cohort / "cohort.yaml").write_text("name: broken\n")
    proc = _run("train.py", f"data.root={cohort}", "extract.workers=1", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.startswith("train.py: error (data): ") and "clinical.csv" in proc.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["mdoe=compare"], "unknown config key 'mdoe'; did you mean 'mode'? (mode=compare)"),
    (["mode=external", "data.root=/nonexistent/cohort"], "data.root=/nonexistent/cohort does not exist"),
    (["mode=surveillance", "surveillance.windw_days=60"], "did you mean 'surveillance.window_days'?"),
    (["mode=surveillance"], "mode=surveillance needs the cohort: data.root=DIR"),
])
def test_evaluate_py_user_errors_are_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    line = _one_line_error(_run("evaluate.py", *args, cwd=tmp_path), "evaluate.py")
    assert expected in line
    assert not (tmp_path / "outputs").exists()


def test_hydra_full_error_shows_the_traceback(tmp_path: Path) -> None:
    proc = _run("train.py", "data.root=/nonexistent/cohort", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "UserError" in proc.stderr


def test_the_sweep_objective_of_a_run_without_that_metric_is_nan_with_a_note(capsys: pytest.CaptureFixture) -> None:
    # a dynamic run reports dynamic/<model>/<landmark>d/<metric>, not the default fused/cindex: no traceback after it
    import importlib.util  # train.py is a script, not a module of the package

    spec = importlib.util.spec_from_file_location("train_script", ROOT / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    assert train.objective({"fused/cindex": 0.71}, "fused/cindex") == 0.71
    value = train.objective({"dynamic/landmark_cox/0d/cindex": 0.66}, "fused/cindex")
    assert value != value  # NaN
    assert "optimized_metric=fused/cindex is not a metric of this run" in capsys.readouterr().out

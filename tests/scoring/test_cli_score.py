"""``omics-risk score``: the command line over the batch scorer, its output and its exit codes (0 scored, 1 the
cohort or model does not fit, 2 a usage error such as a wrong extension, a horizon without unit or an unknown URI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from omics_risk.cli import build_parser, main


def test_score_is_a_subcommand_with_its_options() -> None:
    args = build_parser().parse_args(["score", "--model", "models:/m@champion", "--cohort", "c", "--out", "s.csv",
                                      "--horizons", "1y", "730", "--risk-groups", "median", "--chunk-size", "8"])
    assert args.command == "score" and args.model == "models:/m@champion" and args.horizons == ["1y", "730"]
    assert args.risk_groups == "median" and args.chunk_size == 8 and args.cohort == Path("c")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["score", "--cohort", "c", "--out", "s.csv"])  # --model is required


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "scores.xlsx"], "must end in .parquet or .csv"),
        (["--out", "scores.csv", "--horizons", "3"], "would be 3 days"),
        (["--out", "missing_dir/scores.csv"], "does not exist"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                           message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["score", "--model", "models:/none@x", "--cohort", str(tmp_path), "--tracking-uri",
                 str(tmp_path / "mlflow.db"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("omics-risk score: error:") and message in err


@pytest.mark.slow
def test_cli_scores_the_demo_cohort_to_csv(demo: SimpleNamespace, problem_cohort: SimpleNamespace, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scores.csv"
    code = main(["score", "--model", demo.uri, "--cohort", str(problem_cohort.root), "--out", str(out),
                 "--tracking-uri", demo.tracking_uri, "--features", str(problem_cohort.features),
                 "--horizons", "1y", "2y", "--risk-groups", "median", "--workers", "2", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    df = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert df["patient_id"].tolist() == [*problem_cohort.patients, "PO9999"]
    assert list(df.columns[:7]) == ["patient_id", "status", "reason", "risk_score", "risk_group", "surv_365d",
                                    "surv_730d"]
    assert set(df.loc[df["status"] != "failed", "risk_group"]) <= {"low", "high"}
    counts = df["status"].value_counts()
    assert f"ok {counts.get('ok', 0)}, partial {counts.get('partial', 0)}, failed {counts.get('failed', 0)}" \
        in printed
    report = json.loads((tmp_path / "scores.csv.report.json").read_text())
    assert report["horizons"] == [365.0, 730.0] and report["risk_groups"] == "median"
    assert report["model"]["uri"] == demo.uri and report["model"]["wrapper_ok"] is True


@pytest.mark.slow
def test_cli_exit_codes_for_a_cohort_that_does_not_fit_and_an_unknown_model(
        demo: SimpleNamespace, problem_cohort: SimpleNamespace, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # the same data with the clinical column 'stage' removed: the model needs it
    bad = tmp_path / "no_stage"
    bad.mkdir()
    for entry in problem_cohort.root.iterdir():
        if entry.name not in ("clinical.csv", "cohort.yaml"):
            (bad / entry.name).symlink_to(entry)
    pd.read_csv(problem_cohort.root / "clinical.csv", dtype=str).drop(columns=["stage"]).to_csv(
        bad / "clinical.csv", index=False)
    spec = yaml.safe_load((problem_cohort.root / "cohort.yaml").read_text())
    del spec["clinical"]["stage"]
    spec["data_roots"] = [str(problem_cohort.root)]  # the links lead there: declared, or they are refused
    (bad / "cohort.yaml").write_text(yaml.safe_dump(spec))
    base = ["--tracking-uri", demo.tracking_uri, "--out", str(tmp_path / "s.parquet"), "--quiet"]
    assert main(["score", "--model", demo.uri, "--cohort", str(bad), *base]) == 1
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "stage" in err
    assert main(["score", "--model", "models:/omics-risk-rfs@nope", "--cohort", str(bad), *base]) == 2
    assert "cannot resolve model 'models:/omics-risk-rfs@nope'" in capsys.readouterr().err
    assert not (tmp_path / "s.parquet").exists()


@pytest.mark.slow
def test_console_script_reads_the_tracking_uri_from_the_environment(demo: SimpleNamespace,
                                                                    problem_cohort: SimpleNamespace,
                                                                    tmp_path: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": demo.tracking_uri}
    exe = Path(sys.executable).with_name("omics-risk")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "omics_risk.cli"])]
    run = subprocess.run([*cmd, "score", "--model", demo.uri, "--cohort", str(problem_cohort.root), "--out",
                          str(tmp_path / "s.parquet"), "--features", str(problem_cohort.features), "--quiet"],
                         env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "scored 15 patients" in run.stdout
    assert len(pd.read_parquet(tmp_path / "s.parquet")) == 15

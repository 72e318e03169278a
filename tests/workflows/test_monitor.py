"""``omics-risk monitor`` end to end on a hand-written 6-patient cohort: outputs, completeness, errors, MLflow."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from omics_risk.cli import main

COHORT_YAML = """\
contract_version: 1
name: monitor-test
time_unit: days
endpoints:
  pfs: {type: survival, time: pfs_time, event: pfs_event}
clinical:
  age: numeric
modalities:
  ctdna: {format: variant_table}
"""
# patient: (days, pooled VAF); a draw is positive when its VAF reaches the 5e-4 LOD (no alt counts given)
DRAWS = {
    "P1": ([0, 21, 42, 63, 84], [0.01, 0.004, 0.002, 0.005, 0.01]),
    "P2": ([0, 21, 42, 63], [0.02, 0.01, 0.012, 0.015]),
    "P3": ([0, 21, 42, 63, 84, 105], [1e-4] * 6),
    "P4": ([0, 21, 42, 63], [0.003, 0.0008, 0.0002, 0.003]),
    "P6": ([0, 21, 42, 63, 84, 105], [0.004, 0.005, 0.006, 0.006, 0.007, 0.0075]),
}
OUTCOMES = {"P1": (100, 1), "P2": (70, 1), "P3": (120, 0), "P4": (200, 0), "P5": (50, 1), "P6": (150, 1),
            "P7": (90, 0)}


def write_cohort(root: Path, *, depth: bool = False) -> Path:
    """Two variants per draw at the draw's VAF; P5 has no draw, P7's draw is listed but has no rows."""
    root.mkdir(parents=True)
    (root / "cohort.yaml").write_text(COHORT_YAML)
    (root / "clinical.csv").write_text("patient_id,age,pfs_time,pfs_event\n" + "".join(
        f"{p},60,{t},{e}\n" for p, (t, e) in OUTCOMES.items()))
    samples = ["patient_id,sample_id,modality,timepoint,day,path"]
    rows = ["patient_id,sample_id,day,gene,variant,vaf" + (",depth" if depth else "")]
    for p, (days, vafs) in DRAWS.items():
        for k, (d, v) in enumerate(zip(days, vafs, strict=True)):
            sid = f"{p}_c{k + 1}"
            samples.append(f"{p},{sid},ctdna,c{k + 1},{d},ctdna/variants.csv")
            rows += [f"{p},{sid},{d},TP53,p.R175H,{v}" + (",10000" if depth else ""),
                     f"{p},{sid},{d},KRAS,p.G12C,{v}" + (",10000" if depth else "")]
    samples.append("P7,P7_c1,ctdna,c1,0,ctdna/variants.csv")
    (root / "ctdna").mkdir()
    (root / "samples.csv").write_text("\n".join(samples) + "\n")
    (root / "ctdna" / "variants.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    tmp = tmp_path_factory.mktemp("monitor")
    cohort = write_cohort(tmp / "cohort")
    out = tmp / "out"
    code = main(["monitor", "--cohort", str(cohort), "--out", str(out), "--quiet", "--level", "mean_vaf",
                 "--set", "bootstrap=100", "--set", "grid.folds=2"])
    return cohort, out, code


def test_outputs_every_patient_and_every_draw(run) -> None:
    _, out, code = run
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["patients.csv", "report.html", "samples.csv", "summary.json"]
    patients = pd.read_csv(out / "patients.csv", dtype={"patient_id": str})
    assert patients["patient_id"].tolist() == list(OUTCOMES)
    status = dict(zip(patients["patient_id"], patients["status"], strict=True))
    assert status["P5"] == "no_draws" and status["P7"] == "no_usable_draws"
    reason = patients.set_index("patient_id").loc["P7", "reason"]
    assert "no rows for this draw in ctdna/variants.csv" in reason
    samples = pd.read_csv(out / "samples.csv")
    assert len(samples) == sum(len(d) for d, _ in DRAWS.values()) + 1
    assert samples.loc[samples["sample_id"] == "P7_c1", "state"].item() == "unusable"
    p = patients.set_index("patient_id")
    assert p.loc["P1", "alert_day"] == 63 and p.loc["P1", "lead_time_days"] == 37
    assert p.loc["P6", "alert_before_progression"] == 0  # rises to 1.9x its nadir (0.004): no alert


def test_summary_and_report(run) -> None:
    _, out, _ = run
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    lt = s["lucagen"]
    assert (lt["preceded_k"], lt["preceded_n"]) == (1, 3)  # P1 of P1, P2, P6 (P5 has no draw)
    assert lt["median_lead_days"] == 37
    assert s["patients"] == {"total": 7, "ok": 5, "no_draws": 1, "no_usable_draws": 1}
    km = s["molecular_response_vs_pfs"]
    assert km["groups"] == {"non-responder": {"patients": 1, "events": 1},
                            "responder": {"patients": 3, "events": 2}}
    assert 0 < km["logrank_p"] <= 1
    assert s["grid"]["curve"] and set(s["grid"]["out_of_fold"]) == {"sensitivity", "median_lead_days",
                                                                     "false_alerts_per_patient_year"}
    html = (out / "report.html").read_text(encoding="utf-8")
    for heading in ("LUCAGEN table", "Swimmer plot", "Molecular response vs PFS", "Operating characteristics"):
        assert heading in html
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", html)
    assert not any(p in text for p in OUTCOMES)  # no patient identifier in the report (it goes to MLflow)
    assert "censored at their last draw" in html


def test_rerun_replaces_and_errors_are_one_line(run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cohort, out, _ = run
    assert main(["monitor", "--cohort", str(cohort), "--out", str(out), "--quiet", "--no-grid",
                 "--rule", "lucagen_confirmed", "--set", "bootstrap=50", "--level", "mean_vaf"]) == 0
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["rule"]["name"] == "lucagen_confirmed"
    capsys.readouterr()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    assert main(["monitor", "--cohort", str(cohort), "--out", str(tmp_path / "other"), "--quiet"]) == 2
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"
    assert "does not hold a previous monitor output" in capsys.readouterr().err
    for args, words in ((["--rule", "nope"], "unknown rule 'nope'"),
                        (["--set", "rule.nope=1"], "rule.nope"),
                        (["--level", "ctdna_level"], "no column 'ctdna_level'")):
        assert main(["monitor", "--cohort", str(cohort), "--out", str(tmp_path / "x"), "--quiet", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_mlflow_logging(run, tmp_path: Path, mlflow_template_db: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    cohort, _, _ = run
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["monitor", "--cohort", str(cohort), "--out", str(tmp_path / "o"), "--quiet", "--no-grid",
                 "--set", "bootstrap=50", "--level", "mean_vaf", "--tracking-uri", uri,
                 "--experiment", "monitor-test"]) == 0
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("monitor-test")
    (r,) = client.search_runs([exp.experiment_id])
    assert r.data.metrics["monitor/preceded_k"] == 1 and r.data.params["rule.name"] == "lucagen"
    names = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"report.html", "summary.json", "figures"} <= names
    figs = {a.path for a in client.list_artifacts(r.info.run_id, "figures")}
    assert {"figures/swimmer.png", "figures/km_molecular_response.png"} <= figs


def test_model_risk_rule_reads_the_latest_risk_at_or_before_each_draw(run, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cohort, _, _ = run
    risk = tmp_path / "risk.csv"
    risk.write_text("patient_id,day,risk\nP1,0,0.1\nP1,50,0.7\nP2,0,0.2\nP2,100,0.9\n")
    out = tmp_path / "model"
    args = ["monitor", "--cohort", str(cohort), "--out", str(out), "--quiet", "--level", "mean_vaf",
            "--rule", "model_risk", "--set", "bootstrap=50", "--set", "grid.folds=2"]
    assert main(args) == 2
    assert "pass --risk FILE" in capsys.readouterr().err
    assert main([*args, "--risk", str(risk)]) == 0
    s = pd.read_csv(out / "samples.csv", dtype={"patient_id": str}).set_index("sample_id")
    assert s.loc["P1_c3", "risk"] == 0.1 and s.loc["P1_c4", "risk"] == 0.7  # days 42 and 63: never a later risk
    assert s.loc["P1_c4", "rule_fired"] == "model_risk" and pd.isna(s.loc["P3_c1", "risk"])
    p = pd.read_csv(out / "patients.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert p.loc["P1", "alert_day"] == 63 and pd.isna(p.loc["P2", "alert_day"])  # P2's 0.9 comes after its draws


def test_as_of_reads_nothing_later_and_censors_there(run, tmp_path: Path) -> None:
    cohort, _, _ = run
    out = tmp_path / "asof"
    assert main(["monitor", "--cohort", str(cohort), "--out", str(out), "--quiet", "--level", "mean_vaf",
                 "--no-grid", "--set", "bootstrap=50", "--as-of", "50"]) == 0
    p = pd.read_csv(out / "patients.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert pd.isna(p.loc["P1", "alert_day"])  # its rise at day 63 is not known on day 50
    assert p.loc["P1", "endpoint_event"] == 0 and p.loc["P1", "endpoint_time"] == 50  # progression at 100: later
    assert p.loc["P1", "n_usable_draws"] == 3
    s = pd.read_csv(out / "samples.csv").set_index("sample_id")
    assert len(s) == sum(len(d) for d, _ in DRAWS.values()) + 1  # every listed draw still has its row
    assert s.loc["P1_c4", "state"] == "after as-of" and "--as-of" in s.loc["P1_c4", "reason"]


def test_a_per_draw_level_column_of_the_table(tmp_path: Path) -> None:
    """A report giving its own per-draw level (here 'tf', twice the VAF) is followed by name."""
    cohort = write_cohort(tmp_path / "c")
    table = pd.read_csv(cohort / "ctdna" / "variants.csv")
    table.assign(tf=2 * table["vaf"]).to_csv(cohort / "ctdna" / "variants.csv", index=False)
    out = tmp_path / "o"
    assert main(["monitor", "--cohort", str(cohort), "--out", str(out), "--quiet", "--no-grid", "--level", "tf",
                 "--set", "bootstrap=50"]) == 0
    s = pd.read_csv(out / "samples.csv").set_index("sample_id")
    assert s.loc["P1_c1", "level"] == pytest.approx(0.02)
    p = pd.read_csv(out / "patients.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert p.loc["P1", "alert_day"] == 63

"""``omics-risk surveil`` and ``evaluate.py mode=surveillance`` end to end on a tiny hand-made cohort: every patient
under every schedule gets a row, the numbers of a patient match a hand computation, real cohorts get imputed
onsets (said so in the report), and errors are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from omics_risk.cli import main
from omics_risk.surveillance.schedules import DAYS_PER_MONTH
from omics_risk.surveillance.settings import SurveillanceSettings
from omics_risk.workflows.surveil import run_surveillance

N = 40
SPEC = """\
contract_version: 1
name: tiny-surveil
time_unit: days
endpoints:
  rfs: {type: survival, time: rfs_time, event: rfs_event}
  os: {type: survival, time: os_time, event: os_event}
clinical:
  stage: {type: ordinal, levels: [IB, IIA, IIB, IIIA]}
  histology: categorical
"""


def _cohort(root: Path, truth: bool = True) -> Path:
    rng = np.random.default_rng(3)
    risk = rng.normal(0, 1, N)
    onset = np.round(800 * rng.exponential(1, N) * np.exp(-risk), 1)
    onset[0] = 400.0  # patient P00: the hand-computed one
    death = np.round(rng.uniform(1500, 6000, N), 1)
    death[1] = 300.0  # P01 dies of other causes before any recurrence
    found = np.minimum(np.ceil(onset / 182.625) * 182.625, death)
    event = (onset < death) & (found <= 1826)
    rfs = np.where(event, found, np.minimum(death, 1826)).round()
    root.mkdir(parents=True)
    (root / "cohort.yaml").write_text(SPEC)
    pd.DataFrame({"patient_id": [f"P{i:02d}" for i in range(N)],
                  "stage": np.array(["IB", "IIA", "IIB", "IIIA"])[np.clip((risk + 2).astype(int), 0, 3)],
                  "histology": np.where(rng.random(N) < 0.5, "adenocarcinoma", "squamous"),
                  "rfs_time": rfs.astype(int), "rfs_event": event.astype(int),
                  "os_time": np.minimum(death, 1826).round().astype(int),
                  "os_event": (death <= 1826).astype(int)}).to_csv(root / "clinical.csv", index=False)
    if truth:
        (root / "truth").mkdir()
        pd.DataFrame({"patient_id": [f"P{i:02d}" for i in range(N - 1)],  # P39 is missing from the truth
                      "true_risk_rfs": risk[:-1], "radiological_onset_day_uncensored": onset[:-1],
                      "molecular_relapse_day": np.maximum(onset[:-1] - 150, 0),
                      "other_cause_death_day": death[:-1]}).to_csv(root / "truth" / "patients.csv", index=False)
    return root


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "surveil.yaml"
    cfg.write_text(yaml.safe_dump({"symptoms": {"distribution": "none"}, "bootstrap": 20,
                                   "trial": {"n_sim": 200, "margins": [0.1, 0.2]}}))
    return cfg


def test_surveil_cli_on_a_synthetic_cohort(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, out = _cohort(tmp_path / "c"), tmp_path / "out"
    assert main(["surveil", "--cohort", str(root), "--out", str(out), "--config", str(_config(tmp_path)),
                 "--quiet"]) == 0
    assert "risk_adapted_0.05" in capsys.readouterr().out
    for name in ("schedules.csv", "patients.csv", "strata.csv", "trial.csv", "power.csv", "summary.json",
                 "tradeoff.png", "power.png", "report.html"):
        assert (out / name).is_file(), name
    sched = pd.read_csv(out / "schedules.csv")
    pats = pd.read_csv(out / "patients.csv", keep_default_na=False, na_values=[""])
    assert len(pats) == N * len(sched)  # every patient under every schedule
    p = pats[(pats["schedule"] == "ct_6m")].set_index("patient_id")
    # P00: onset day 400, CT every 6 months: scans at 182.6, 365.25, 547.9 -> found on the third, 147.9 days late
    assert p.loc["P00", "scans"] == 3 and p.loc["P00", "detection_day"] == pytest.approx(3 * 6 * DAYS_PER_MONTH)
    assert p.loc["P00", "delay_days"] == pytest.approx(3 * 6 * DAYS_PER_MONTH - 400)
    assert p.loc["P00", "within_window"] == 0
    # P01 died on day 300: one negative scan, no recurrence
    assert p.loc["P01", "scans"] == 1 and p.loc["P01", "recurred"] == 0
    assert p.loc["P39", "status"] == "excluded" and "truth" in p.loc["P39", "reason"]
    ct6 = sched.set_index("schedule").loc["ct_6m"]
    ok = p[p["status"] == "ok"]
    assert ct6["scans_per_patient"] == pytest.approx(ok["scans"].mean())
    assert ct6["median_delay_days"] == pytest.approx(ok["delay_days"].median())
    assert ct6["scans_per_patient_ci_low"] <= ct6["scans_per_patient"] <= ct6["scans_per_patient_ci_high"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["onset_source"] == "truth" and summary["n_simulated"] == N - 1
    assert summary["trial"]["experimental"] == "ctdna_triggered"
    assert "Trade-off" in (out / "report.html").read_text(encoding="utf-8")


def test_a_real_cohort_gets_imputed_onsets_before_its_detections(tmp_path: Path) -> None:
    root, out = _cohort(tmp_path / "c", truth=False), tmp_path / "out"
    s = SurveillanceSettings(risk_from="marginal", bootstrap=10,
                             trial=SurveillanceSettings().trial.__class__(n_sim=200, margins=(0.2,)))
    r = run_surveillance(root, out, settings=s, progress=False)
    assert r.onset_source == "sojourn"
    clin = pd.read_csv(root / "clinical.csv")
    pats = pd.read_csv(out / "patients.csv")
    ons = pats[pats["schedule"] == "ct_6m"].set_index("patient_id")["onset_day"]
    rec = clin[clin["rfs_event"] == 1].set_index("patient_id")["rfs_time"]
    gap = rec - ons.reindex(rec.index)
    assert (gap >= 0).all() and (gap <= 182 + 1e-6).all()  # within the look-back before the observed detection
    assert ons.reindex(clin.loc[clin["rfs_event"] == 0, "patient_id"]).isna().all()
    assert "IMPUTED" in (out / "report.html").read_text(encoding="utf-8")


def test_surveil_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _cohort(tmp_path / "c")
    bad = tmp_path / "bad.yaml"
    bad.write_text("windw_days: 60\n")
    assert main(["surveil", "--cohort", str(root), "--out", str(tmp_path / "o"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["omics-risk surveil: error: unknown setting surveillance.windw_days; did you mean "
                   "surveillance.window_days?"]
    assert main(["surveil", "--cohort", str(root), "--out", str(tmp_path / "o"), "--risk-from", "model"]) == 2
    assert "give --model URI" in capsys.readouterr().err


def test_surveillance_run_is_logged_to_mlflow(tmp_path: Path) -> None:
    # lazy: mlflow only for this test
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = _cohort(tmp_path / "c")
    s = SurveillanceSettings(risk_from="truth", bootstrap=10,
                             trial=SurveillanceSettings().trial.__class__(n_sim=200, margins=(0.2,)))
    r = run_surveillance(root, tmp_path / "out", settings=s, progress=False, log_to_mlflow=True, tracking_uri=uri,
                         experiment="surveil-test")
    run = mlflow.MlflowClient(uri).get_run(r.run_id)
    assert run.data.metrics["ct_6m.scans_per_patient"] == pytest.approx(
        float(r.schedules.set_index("schedule").loc["ct_6m", "scans_per_patient"]))
    names = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(r.run_id)}
    assert {"report.html", "schedules.csv", "summary.json"} <= names and "patients.csv" not in names


def test_a_curve_predicted_from_a_later_day_starts_there() -> None:
    # lazy: a private helper, tested on its own
    from omics_risk.workflows.surveil import _from_index_date

    times = np.array([30.0, 60.0, 90.0, 120.0])
    pred = np.array([[0.9, 0.8, 0.7, 0.6], [0.9, 0.8, 0.7, 0.6]])  # S at 30..120 days after the prediction day
    out = _from_index_date(pred, times, np.array([30.0, np.nan]))
    assert out[0] == pytest.approx([1.0, 0.9, 0.8, 0.7])  # day 30 + 30 = day 60 -> 0.9
    assert out[1] == pytest.approx(pred[1])  # no prediction day: read from the index date

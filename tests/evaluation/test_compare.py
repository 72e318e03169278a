"""Model comparison across training runs: the table equals direct computations on the logged out-of-fold risks
(Harrell's and Uno's C, td-AUC, paired bootstrap of the C difference), patients are matched by their keyed pseudonym
(the artifacts hold no raw id), the comparison is logged as its own MLflow run, and runs without out-of-fold artifacts
fall back to what train() logged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from omics_risk.evaluation.compare import (
    COMPARISON_LEVEL,
    OOF_ARTIFACT,
    ModelRun,
    compare_experiment,
    compare_runs,
    log_oof_risks,
    oof_table,
)
from omics_risk.evaluation.metrics import (
    HorizonError,
    default_tau,
    harrell_c,
    paired_bootstrap_difference,
    time_dependent_auc,
    uno_c,
)
from omics_risk.evaluation.run_report import within_fold_ranks
from omics_risk.privacy import Pseudonymiser
from omics_risk.tracking import mlflow_utils as mu
from omics_risk.workflows.external import EvaluationError

N_BOOT = 60
HORIZONS = [365.0, 730.0]
SHUFFLE_SEED = 0  # the row order of the shuffled model's artifact (_job(shuffle_model=...))


def _simulate(n: int = 160, seed: int = 4) -> SimpleNamespace:
    """Weibull PH outcome; out-of-fold risks of three models whose scale differs per fold (as separate fits do)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = 1000 * (-np.log(rng.uniform(size=n)) / np.exp(x)) ** (1 / 1.5)
    c = rng.uniform(0, 2500, n)
    time, event = np.minimum(t, c).round(1), (t <= c).astype(int)
    folds = np.arange(n) % 5
    rng.shuffle(folds)
    scale = np.array([1.0, 3.0, 0.5, 2.0, 10.0])[folds]
    shift = np.array([0.0, -2.0, 1.0, 5.0, -1.0])[folds]
    risks = {"fused": (x + rng.normal(0, 0.3, n)) * scale + shift,
             "clinical_cox": (x + rng.normal(0, 2.0, n)) * scale + shift,
             "noise": rng.normal(size=n) * scale}
    patients = [f"PT{i:04d}" for i in range(n)]
    return SimpleNamespace(time=time, event=event, folds=folds, risks=risks, patients=patients)


def _job(sim: SimpleNamespace, experiment: str, uri: str, *, oof: bool = True, name: str = "demo-rfs",
         shuffle_model: str | None = None) -> str:
    """A train.py-like job run: one nested model run per model with oof_risk.parquet (or only train()'s metrics)."""
    summary_metrics = {}
    with mu.start_run_tree(experiment, uri=uri, run_name=name, parent_run_id=None, patient_ids=sim.patients,
                           tags={"task": "rfs", "cohort": "sim"}) as job:
        mu.safe_log_params({"evaluation.horizons": json.dumps(HORIZONS), "task.endpoint": "rfs"})
        for model, risk in sim.risks.items():
            ranks = within_fold_ranks(risk, sim.folds)
            with mu.start_model_run(model):
                c = harrell_c(sim.time, sim.event, ranks)
                mu.safe_log_metrics({"cindex_pooled": c, "cindex_ci_low": c - 0.05, "cindex_ci_high": c + 0.05})
                if oof:
                    table = oof_table(sim.patients, sim.time, sim.event, risk, sim.folds)
                    if model == shuffle_model:
                        table = table.sample(frac=1.0, random_state=SHUFFLE_SEED)
                    log_oof_risks(table)
            if model != "clinical_cox":
                summary_metrics[f"{model}/delta_vs_clinical_cox"] = 0.1
                summary_metrics[f"{model}/delta_vs_clinical_cox_ci_low"] = 0.0
                summary_metrics[f"{model}/delta_vs_clinical_cox_ci_high"] = 0.2
                summary_metrics[f"{model}/delta_vs_clinical_cox_p"] = 0.04
        with mu.start_model_run("fused_final"):
            pass
        mlflow.log_dict({"n_patients": len(sim.time), "n_events": int(sim.event.sum()), "metrics": summary_metrics},
                        "summary.json")
    return job.info.run_id


@pytest.fixture
def store(tmp_path: Path, mlflow_template_db: Path) -> str:
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    mu.clear_protected_identifiers()
    yield f"sqlite:///{tmp_path / 'mlflow.db'}"
    mu.clear_protected_identifiers()


def test_oof_table_keeps_repeats_folds_and_drops_unscored() -> None:
    risk = np.array([[0.1, 0.2, np.nan], [0.3, 0.4, 0.5]])
    folds = np.array([[0, 1, -1], [1, 0, 0]])
    t = oof_table(["a", "b", "c"], [10.0, 20.0, 30.0], [1, 0, 1], risk, folds, response=np.full((2, 3), np.nan))
    assert list(t.columns) == ["patient_id", "repeat", "fold", "time", "event", "risk"]
    assert t.groupby("repeat").size().to_dict() == {0: 2, 1: 3}
    assert t.loc[t["repeat"] == 1, "fold"].tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="n_repeats"):
        oof_table(["a", "b"], [1.0, 2.0], [1, 0], risk, folds)


@pytest.mark.slow
def test_compare_equals_direct_computations_and_logs_a_comparison_run(store: str, tmp_path: Path) -> None:
    sim = _simulate()
    job_id = _job(sim, "cmp", store, shuffle_model="noise")
    res = compare_experiment("cmp", output_dir=tmp_path / "out", reference="clinical_cox", n_boot=N_BOOT, seed=3,
                             tracking_uri=store)
    table = res.table.set_index("model")
    assert sorted(table.index) == ["clinical_cox", "fused", "noise"]  # fused_final is not compared
    assert (table["source"] == OOF_ARTIFACT).all()
    assert table.attrs["horizons"] == HORIZONS
    ranks = {m: within_fold_ranks(r, sim.folds) for m, r in sim.risks.items()}
    t, e = sim.time.astype(float), sim.event.astype(bool)
    for model, r in ranks.items():
        row = table.loc[model]
        assert row["harrell_c"] == pytest.approx(harrell_c(t, e, r), abs=1e-12)
        assert row["uno_c"] == pytest.approx(uno_c(t, e, r, train_time=t, train_event=e, tau=default_tau(t, t)),
                                             abs=1e-12)
        auc, mean = time_dependent_auc(t, e, r, HORIZONS, train_time=t, train_event=e)
        assert row["auc_365d"] == pytest.approx(auc[0], abs=1e-12)
        assert row["auc_730d"] == pytest.approx(auc[1], abs=1e-12)
        assert row["mean_auc"] == pytest.approx(mean, abs=1e-12)
        assert row["harrell_c_ci_low"] < row["harrell_c"] < row["harrell_c_ci_high"]
        if model not in ("clinical_cox", "noise"):  # noise: its artifact is shuffled (below)
            diff, p = paired_bootstrap_difference(t, e, r, ranks["clinical_cox"], n_boot=N_BOOT, seed=3)
            assert row["delta_c"] == pytest.approx(diff.value, abs=1e-12)
            assert (row["delta_c_ci_low"], row["delta_c_ci_high"]) == pytest.approx((diff.low, diff.high))
            assert row["p_value"] == pytest.approx(p)
    assert np.isnan(table.loc["clinical_cox", "p_value"])
    # a shuffled artifact pairs its patients with the reference's by pseudonym, and is resampled in its own row order
    perm = oof_table(sim.patients, t, e, sim.risks["noise"], sim.folds).sample(frac=1.0, random_state=SHUFFLE_SEED)
    idx = perm.index.to_numpy()
    assert not np.array_equal(idx, np.arange(len(idx)))
    diff, p = paired_bootstrap_difference(t[idx], e[idx], ranks["noise"][idx], ranks["clinical_cox"][idx],
                                          n_boot=N_BOOT, seed=3)
    row = table.loc["noise"]
    assert (row["delta_c"], row["delta_c_ci_low"], row["delta_c_ci_high"], row["p_value"]) == pytest.approx(
        (diff.value, diff.low, diff.high, p))
    # the signal: fused beats the noisier reference, pure noise is worse than it
    assert table.loc["fused", "delta_c"] > 0.05 and table.loc["fused", "p_value"] < 0.05
    assert table.loc["noise", "delta_c"] < 0 and table.loc["noise", "p_value"] < 0.05
    # the raw risks (different scale per fold) would give another C: ranking within folds matters
    assert harrell_c(t, e, sim.risks["fused"]) != pytest.approx(table.loc["fused", "harrell_c"], abs=1e-3)

    out = tmp_path / "out"
    for f in ("comparison.csv", "comparison_table.csv", "report.html", "summary.json", "plots/comparison.png"):
        assert (out / f).is_file(), f
    assert (out / "plots" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert pd.read_csv(out / "comparison.csv").shape[0] == 3
    text = res.to_text()
    assert "fused" in text and "ΔC vs clinical_cox (95% CI)" in text and "reference" in text
    assert max(len(line) for line in text.splitlines()) <= 120  # fits a 120-column terminal
    assert "0.000 (0.000" not in text

    client = MlflowClient(store)
    run = client.get_run(res.run_id)
    assert run.data.tags[mu.LEVEL_TAG] == COMPARISON_LEVEL
    assert run.data.tags["reference"] == "clinical_cox"
    assert run.data.tags["compared_job_runs"] == job_id
    # the names the training job run logs (<model>/harrell_c, <model>/p_vs_<reference>; docs/evaluation.md)
    assert run.data.metrics["fused/harrell_c"] == pytest.approx(table.loc["fused", "harrell_c"])
    assert run.data.metrics["fused/p_vs_clinical_cox"] == pytest.approx(table.loc["fused", "p_value"])
    assert not [k for k in run.data.metrics if k.startswith("compare/") or "p_vs_clinical_cox_ci" in k]
    arts = {a.path for a in client.list_artifacts(res.run_id)} | {
        a.path for a in client.list_artifacts(res.run_id, "plots")}
    assert {"comparison.csv", "report.html", "summary.json", "plots/comparison.png"} <= arts
    names = [*run.data.metrics, *run.data.params, *run.data.params.values(), *run.data.tags.values()]
    mu.assert_no_identifiers(names, sim.patients)
    # the logged out-of-fold tables hold the store's pseudonyms, not the patients' ids
    fused_run = table.loc["fused", "run_id"]
    oof = pd.read_parquet(client.download_artifacts(fused_run, OOF_ARTIFACT, str(tmp_path / "dl")))
    key_store = Pseudonymiser.for_store(store)
    assert oof["patient_id"].tolist() == key_store(sim.patients)
    assert not set(oof["patient_id"]) & set(sim.patients)
    # a second comparison never compares the comparison run: still the one job
    again = compare_experiment("cmp", output_dir=tmp_path / "again", n_boot=10, tracking_uri=store,
                               log_to_mlflow=False)
    assert len(again.table) == 3 and again.run_id is None


def test_compare_all_runs_labels_jobs_and_falls_back_to_training_metrics(store: str, tmp_path: Path) -> None:
    sim = _simulate(n=120, seed=9)
    old = _job(sim, "cmp", store, oof=False, name="old-run")
    new = _job(sim, "cmp", store, name="new-run")
    res = compare_experiment("cmp", output_dir=tmp_path / "out", runs="all", n_boot=20, tracking_uri=store,
                             log_to_mlflow=False)
    table = res.table
    assert len(table) == 6
    assert table["label"].str.contains(r"@ (?:old|new)-run \(", regex=True).all()
    legacy = table[table["job_run_id"] == old].set_index("model")
    assert (legacy["source"] == "training metrics").all()
    ranks = within_fold_ranks(sim.risks["fused"], sim.folds)
    assert legacy.loc["fused", "harrell_c"] == pytest.approx(harrell_c(sim.time, sim.event, ranks))
    assert legacy.loc["fused", "p_value"] == pytest.approx(0.04)  # from the job's summary.json
    assert legacy.loc["fused", "n"] == 120
    assert np.isnan(legacy.loc["fused"].get("uno_c", np.nan))
    assert any("no oof_risk.parquet" in n for n in res.notes)
    fresh = table[table["job_run_id"] == new].set_index("model")
    assert (fresh["source"] == OOF_ARTIFACT).all()
    # runs given by id prefix
    only = compare_experiment("cmp", output_dir=tmp_path / "one", runs=new[:10], n_boot=10, tracking_uri=store,
                              log_to_mlflow=False)
    assert set(only.table["job_run_id"]) == {new}


def test_compare_errors_name_what_to_change(store: str, tmp_path: Path) -> None:
    sim = _simulate(n=60, seed=2)
    _job(sim, "cmp", store)
    with pytest.raises(EvaluationError, match="experiment 'nope' does not exist"):
        compare_experiment("nope", output_dir=tmp_path, tracking_uri=store, log_to_mlflow=False)
    with pytest.raises(EvaluationError, match="reference model 'rsf' is not among"):
        compare_experiment("cmp", output_dir=tmp_path, reference="rsf", n_boot=5, tracking_uri=store,
                           log_to_mlflow=False)
    with pytest.raises(HorizonError, match="horizon 9000 days is not inside the follow-up"):
        compare_experiment("cmp", output_dir=tmp_path, horizons=[365, 9000], n_boot=5, tracking_uri=store,
                           log_to_mlflow=False)


def test_compare_progress_names_the_model_and_counts_overall(capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """One bar over the model runs, labelled with the model and the overall count (not one bar per model)."""
    monkeypatch.setenv("OMICS_RISK_PROGRESS", "1")
    sim = _simulate(n=60)
    runs = [ModelRun(run_id=f"r{i}", model=m, job_run_id="job", job_name="demo", start_time=0, metrics={},
                     oof=oof_table(sim.patients, sim.time, sim.event, r, sim.folds))
            for i, (m, r) in enumerate(sim.risks.items())]
    compare_runs(runs, reference="clinical_cox", n_boot=5, progress=True)
    err = capsys.readouterr().err
    assert "bootstrap fused (1/3)" in err and "bootstrap noise (3/3)" in err and "3/3" in err
    assert "bootstrap metrics" not in err
    compare_runs(runs, reference="clinical_cox", n_boot=5, progress=False)
    assert capsys.readouterr().err == ""  # quiet when progress is off


def test_compare_pools_every_repeat_or_the_one_asked_for() -> None:
    """Two CV repeats in the out-of-fold tables: by default C, ΔC and p are paired_comparison's over both repeats
    (what train() reports), with the corrected t-test beside; repeat=1 uses that repeat alone."""
    from omics_risk.evaluation.bootstrap import paired_comparison

    sim = _simulate(n=80)
    rng = np.random.default_rng(2)
    folds = np.vstack([sim.folds, rng.permutation(sim.folds)])
    risks = {m: np.vstack([r, r + rng.normal(0, 0.5, len(r))]) for m, r in sim.risks.items()}
    runs = [ModelRun(run_id=f"r{i}", model=m, job_run_id="job", job_name="demo", start_time=0, metrics={},
                     oof=oof_table(sim.patients, sim.time, sim.event, r, folds))
            for i, (m, r) in enumerate(risks.items())]
    both, _ = compare_runs(runs, reference="clinical_cox", n_boot=30, seed=4)
    one, _ = compare_runs(runs, reference="clinical_cox", n_boot=30, seed=4, repeat=1)
    for table, sel, reps in ((both, slice(None), 2), (one, slice(1, 2), 1)):
        want = paired_comparison(sim.time, sim.event, risks["fused"][sel], risks["clinical_cox"][sel], folds[sel],
                                 n_boot=30, seed=4)
        row = table.set_index("model").loc["fused"]
        assert row["repeats_pooled"] == reps
        assert (row["harrell_c"], row["harrell_c_ci_low"], row["delta_c"], row["p_value"]) == (
            want.cindex.value, want.cindex.low, want.difference.value, want.p_bootstrap)
        assert row["p_corrected_t"] == pytest.approx(want.p_corrected_t) and np.isfinite(row["p_corrected_t"])
    with pytest.raises(EvaluationError, match="no repeat 5"):
        compare_runs(runs, reference="clinical_cox", n_boot=5, repeat=5)

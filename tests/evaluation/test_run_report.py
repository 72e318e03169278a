"""The training-run report and the model card: metrics equal evaluate_survival / paired_bootstrap_difference on the
within-fold ranks train() pools, plots and report.html are written and logged to the run (each model's metrics,
difference from the reference with CI and p, headline tags and plots to its model run; the comparison to the job
run), and the model card is logged to the registered version's run with the version's description set."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from omics_risk.data.multimodal import MultimodalData
from omics_risk.evaluation.metrics import (
    Estimate,
    HorizonError,
    evaluate_survival,
    paired_bootstrap_difference,
)
from omics_risk.evaluation.modelcard import REQUIRED_SECTIONS
from omics_risk.evaluation.riskgroups import RiskGroups
from omics_risk.evaluation.run_report import (
    CHEAP_EXCLUDE,
    build_run_report,
    card_metrics,
    describe_metric,
    format_metrics,
    metrics_long,
    metrics_wide,
    register_model_card,
    usable_horizons,
    within_fold_ranks,
)
from omics_risk.tracking import mlflow_utils as mu
from omics_risk.tracking.ui_view import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, HEADLINE_TAGS, VIEW_TAG

N_BOOT = 30


def _data(n: int = 150, seed: int = 0) -> tuple[MultimodalData, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Weibull PH patients; out-of-fold risks of three models whose scale differs per fold, the true survival."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = 1000 * (-np.log(rng.uniform(size=n)) / np.exp(x)) ** (1 / 1.5)
    c = rng.uniform(0, 2500, n)
    time, event = np.minimum(t, c), (t <= c).astype(float)
    patients = pd.Index([f"RR{i:04d}" for i in range(n)])
    ct = pd.DataFrame(rng.normal(size=(n, 2)), index=patients, columns=["pre__a", "pre__b"])
    ct.iloc[: n // 4] = np.nan
    data = MultimodalData(patients=patients, clinical=pd.DataFrame({"age": rng.normal(60, 5, n)}, index=patients),
                          modalities={"ct": ct},
                          present=pd.DataFrame({"clinical": True, "ct": ct.notna().any(axis=1)}, index=patients),
                          time=time, event=event, endpoint="rfs")
    folds = np.arange(n) % 5
    rng.shuffle(folds)
    scale = np.array([1.0, 4.0, 0.3, 2.0, 7.0])[folds]
    risks = {"fused": (x + rng.normal(0, 0.4, n)) * scale, "clinical_cox": (x + rng.normal(0, 1.5, n)) * scale,
             "coxnet_ct": rng.normal(size=n)}
    grid = np.linspace(50, 1800, 30)
    surv = np.exp(-((grid[None, :] / 1000) ** 1.5) * np.exp(x)[:, None])
    return data, risks, folds, (grid, surv)


def _store(tmp_path: Path, template: Path) -> str:
    """A fresh MLflow store (a copy of the empty template database), no identifiers protected yet."""
    shutil.copy(template, tmp_path / "mlflow.db")
    mu.clear_protected_identifiers()
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_tables_and_helpers() -> None:
    ests = {"m1": {"harrell_c": Estimate(0.7, 0.6, 0.8, 100), "auc_365d": Estimate(0.72, 0.61, 0.83, 99)},
            "m2": {"harrell_c": Estimate(0.6, 0.5, 0.7, 100)}}
    long = metrics_long(ests)
    assert long.shape == (3, 7) and long["description"].str.len().gt(0).all()
    wide = metrics_wide(long)
    assert wide.loc[wide["model"] == "m1", "auc_365d"].item() == "0.720 (0.610–0.830)"
    assert wide.loc[wide["model"] == "m2", "auc_365d"].item() == "–"
    assert "m2" in format_metrics(long, title="T")
    assert describe_metric("auc_730d").startswith("Cumulative/dynamic AUC at 2 years")
    assert "high-risk group vs the low-risk" in describe_metric("hr_high_vs_low")
    assert describe_metric("response_brier").startswith("Brier score")
    t, e = np.array([100.0, 200, 300, 400]), np.array([1, 0, 1, 0])
    kept, notes = usable_horizons([150, 350, 900], t, e)
    assert kept.tolist() == [150.0, 350.0] and "900" in notes[0]
    with pytest.raises(HorizonError):
        usable_horizons([900], t, e, strict=True)
    np.testing.assert_allclose(within_fold_ranks(np.array([5.0, 1, 3, 100]), np.array([0, 0, 1, 1])),
                               [1.0, 0.5, 0.5, 1.0])
    flat = {"fused/cindex_pooled": 0.7, "fused/cindex_ci_low": 0.6, "fused/cindex_ci_high": 0.8,
            "fused/cindex": 0.69, "external/fused/cindex": 0.65}
    card = card_metrics(flat, "fused", n_boot=500)
    assert card["harrell_c (pooled out-of-fold)"] == Estimate(0.7, 0.6, 0.8, 500)
    assert np.isnan(card["harrell_c (external)"].low) and card["harrell_c (external)"].value == 0.65
    assert card["harrell_c (mean over folds)"] == 0.69


@pytest.mark.slow
def test_run_report_equals_direct_metrics_and_logs_to_the_run(tmp_path: Path, mlflow_template_db: Path) -> None:
    data, risks, folds, (grid, surv) = _data()
    uri = _store(tmp_path, mlflow_template_db)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mu.start_run_tree("train", uri=uri, run_name="job", parent_run_id=None,
                               patient_ids=list(data.patients)) as run:
            rep = build_run_report(risks, data, output_dir=tmp_path / "eval", horizons=[365, 730, 20000],
                                   folds=folds, survival={"fused": surv}, times=grid, n_boot=N_BOOT, seed=1,
                                   mlflow_run=True, meta={"run": "test"})
    mu.clear_protected_identifiers()
    t, e = data.time, data.event.astype(bool)
    ranks = {m: within_fold_ranks(r, folds) for m, r in risks.items()}
    assert rep.horizons == [365.0, 730.0] and any("20000" in n for n in rep.notes)
    direct = evaluate_survival(t, e, ranks["fused"], surv=surv[:, (grid >= t.min()) & (grid < t.max())],
                               times=grid[(grid >= t.min()) & (grid < t.max())], horizons=[365, 730], train_time=t,
                               train_event=e, groups=RiskGroups("median").fit(ranks["fused"]), n_boot=N_BOOT, seed=1,
                               exclude=[*CHEAP_EXCLUDE, "calibration_slope"])
    assert set(rep.metrics["fused"]) == set(direct)
    assert "ibs" in direct and "calibration_slope" not in direct and "logrank_p" in direct
    for k, est in direct.items():
        assert rep.metrics["fused"][k] == est, k
    assert "ibs" not in rep.metrics["coxnet_ct"]  # no survival curves for that model
    comp = rep.comparison.set_index("model")
    for m in ("fused", "coxnet_ct"):
        diff, p = paired_bootstrap_difference(t, e, ranks[m], ranks["clinical_cox"], n_boot=N_BOOT, seed=1)
        assert (comp.loc[m, "delta_c"], comp.loc[m, "delta_c_ci_low"], comp.loc[m, "p_value"]) == pytest.approx(
            (diff.value, diff.low, p))
    assert np.isnan(comp.loc["clinical_cox", "p_value"])
    assert comp.loc["fused", "delta_c"] > 0

    for key in ("report", "metrics", "comparison", "km_fused", "km_clinical_cox", "td_auc", "model_comparison",
                "calibration", "risk_groups_fused", "calibration_365d"):
        assert rep.paths[key].is_file(), key
    for key in ("km_fused", "td_auc", "model_comparison", "calibration"):
        assert rep.paths[key].read_bytes()[:4] == b"\x89PNG"
    html = rep.report.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 5 and "coxnet_ct" in html and "within-fold" in html
    client = MlflowClient(uri)
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")} | {
        a.path for a in client.list_artifacts(run.info.run_id, "evaluation/plots")}
    assert {"evaluation/report.html", "evaluation/metrics.csv", "evaluation/plots/km_fused.png",
            "evaluation/plots/calibration.png"} <= arts
    logged = client.get_run(run.info.run_id).data.metrics
    # no model runs under this job run: every model's metrics go to it as <model>/<metric> (docs/evaluation.md)
    assert logged["fused/harrell_c"] == pytest.approx(direct["harrell_c"].value)
    assert logged["fused/auc_730d_ci_low"] == pytest.approx(direct["auc_730d"].low)
    assert logged["coxnet_ct/delta_c_vs_clinical_cox"] == pytest.approx(comp.loc["coxnet_ct", "delta_c"])
    assert logged["coxnet_ct/p_vs_clinical_cox"] == pytest.approx(comp.loc["coxnet_ct", "p_value"])
    assert "fused/logrank_p" in logged and not [k for k in logged if "_p_ci_" in k]  # p-values never with a CI
    assert not [k for k in logged if k.startswith("eval/")]
    # the report shows p-values as values and the difference from the reference as a column
    assert "0.000 (0.000" not in html and "ΔC vs clinical_cox (95% CI)" in html


@pytest.mark.slow
def test_each_model_run_gets_its_metrics_difference_tags_and_plots(tmp_path: Path, mlflow_template_db: Path) -> None:
    data, risks, folds, _ = _data(n=120, seed=2)
    uri = _store(tmp_path, mlflow_template_db)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mu.start_run_tree("train", uri=uri, run_name="job", parent_run_id=None,
                               patient_ids=list(data.patients)) as job:
            runs = {}
            for name in risks:
                with mu.start_model_run(name) as r:
                    runs[name] = r.info.run_id
            rep = build_run_report(risks, data, output_dir=tmp_path / "eval", horizons=[365, 730], folds=folds,
                                   n_boot=25, seed=1, mlflow_run=True)
    mu.clear_protected_identifiers()
    assert rep.model_runs == runs
    client = MlflowClient(uri)
    t, e = data.time, data.event.astype(bool)
    ranks = {m: within_fold_ranks(r, folds) for m, r in risks.items()}
    diff, p = paired_bootstrap_difference(t, e, ranks["fused"], ranks["clinical_cox"], n_boot=25, seed=1)

    fused = client.get_run(runs["fused"]).data
    assert fused.metrics["harrell_c"] == pytest.approx(rep.metrics["fused"]["harrell_c"].value)
    assert fused.metrics["harrell_c_ci_low"] == pytest.approx(rep.metrics["fused"]["harrell_c"].low)
    assert fused.metrics["auc_730d"] == pytest.approx(rep.metrics["fused"]["auc_730d"].value)
    assert (fused.metrics["delta_c_vs_clinical_cox"], fused.metrics["delta_c_vs_clinical_cox_ci_high"],
            fused.metrics["p_vs_clinical_cox"]) == pytest.approx((diff.value, diff.high, p))
    assert "logrank_p" in fused.metrics and not [k for k in fused.metrics if k.startswith("logrank_p_ci")]
    assert not [k for k in fused.metrics if "/" in k]  # a model run's names carry no model prefix
    c = rep.metrics["fused"]["harrell_c"]
    assert fused.tags[HEADLINE_TAGS[0]] == f"{c.value:.3f} ({c.low:.3f}–{c.high:.3f})"
    assert fused.tags[HEADLINE_TAGS[1]].startswith(f"{diff.value:+.3f} (") and fused.tags[HEADLINE_TAGS[1]].endswith(
        f" to {diff.high:+.3f})")
    assert fused.tags["mlflow.note.content"].startswith(f"**C-index** {fused.tags[HEADLINE_TAGS[0]]} · **ΔC vs "
                                                        "clinical_cox**")
    ref = client.get_run(runs["clinical_cox"]).data
    assert ref.tags[HEADLINE_TAGS[1]] == "reference" and "delta_c_vs_clinical_cox" not in ref.metrics
    for run_id in runs.values():  # every model's own KM and td-AUC plots
        arts = {a.path for a in client.list_artifacts(run_id, "plots")}
        assert any(a.startswith("plots/km_") for a in arts) and any(a.startswith("plots/td_auc") for a in arts), arts

    logged = client.get_run(job.info.run_id).data
    assert logged.metrics["fused/harrell_c"] == fused.metrics["harrell_c"]
    assert logged.metrics["coxnet_ct/p_vs_clinical_cox"] == client.get_run(runs["coxnet_ct"]).data.metrics[
        "p_vs_clinical_cox"]
    assert "fused/uno_c" not in logged.metrics  # the full metric set lives on the model runs
    assert logged.tags["best model"].startswith("fused: C ")
    note = logged.tags["mlflow.note.content"].splitlines()  # the description: the headline table, best C first
    assert note[2].startswith("| model | C-index (95% CI) | ΔC vs clinical_cox (95% CI) | p |")
    assert note[4].startswith("| fused | ")
    arts = {a.path for a in client.list_artifacts(job.info.run_id, "evaluation")}
    assert {"evaluation/comparison.csv", "evaluation/comparison.html", "evaluation/report.html"} <= arts
    html = (tmp_path / "eval" / "comparison.html").read_text(encoding="utf-8")
    assert "ΔC vs clinical_cox (95% CI)" in html and "0.000 (0.000" not in html
    exp = client.get_experiment(client.get_run(job.info.run_id).info.experiment_id)
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND and "p_vs_clinical_cox" in exp.tags[VIEW_TAG]


def test_run_report_without_folds_or_mlflow_and_errors(tmp_path: Path) -> None:
    data, risks, _, _ = _data(n=80, seed=3)
    rep = build_run_report({"fused": risks["fused"]}, data, output_dir=tmp_path, horizons=None, n_boot=10,
                           slow_metrics=True, reference="clinical_cox")
    assert "calibration_slope" in rep.metrics["fused"] and "hr_high_vs_low" in rep.metrics["fused"]
    assert "td_auc" not in rep.paths and "model_comparison" not in rep.paths
    assert rep.comparison["p_value"].isna().all()
    with pytest.raises(ValueError, match="one finite score per patient"):
        build_run_report({"fused": np.r_[risks["fused"][:-1], np.nan]}, data, output_dir=tmp_path, n_boot=5)
    with pytest.raises(ValueError, match="fused model 'x'"):
        build_run_report(risks, data, output_dir=tmp_path, fused="x", n_boot=5)


@pytest.mark.slow
def test_model_card_is_logged_to_the_version_run_and_describes_the_version(tmp_path: Path,
                                                                            mlflow_template_db: Path) -> None:
    from omics_risk.scoring.frames import to_frame
    from omics_risk.scoring.pyfunc import log_model
    from omics_risk.scoring.reference_model import LinearRiskModel

    data, risks, folds, _ = _data(n=90, seed=5)
    model = LinearRiskModel(["clinical/age", "ct/pre__a"]).fit(data)
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mu.setup_experiment("cards", uri)
    with warnings.catch_warnings(), mlflow.start_run() as run:
        warnings.simplefilter("ignore")
        info = log_model(model, input_example_frame=to_frame(data), registered_model_name="omics-risk-rfs",
                         alias="challenger")
    rep = build_run_report(risks, data, output_dir=tmp_path / "eval", horizons=[365], folds=folds, n_boot=10)
    path = register_model_card(registered_model_name="omics-risk-rfs", version=info.registered_model_version,
                               data=data, metrics=rep.metrics["fused"], cohort="sim-cohort", cv="5-fold CV x 1",
                               endpoint="rfs", horizons=[365, 730], training={"model": "LinearRiskModel", "seed": 0},
                               alias="challenger", output_dir=tmp_path / "card", tracking_uri=uri)
    card = path.read_text(encoding="utf-8")
    for section in REQUIRED_SECTIONS:
        assert f"## {section}" in card, section
    assert "sim\\-cohort" in card or "sim-cohort" in card
    assert "90" in card and f"{rep.metrics['fused']['harrell_c'].value:.3f}" in card
    assert f"| ct | {int(data.present['ct'].sum())} | {100 * data.present['ct'].mean():.0f}% |" in card
    client = MlflowClient(uri)
    assert "model_card.md" in {a.path for a in client.list_artifacts(run.info.run_id)}
    mv = client.get_model_version("omics-risk-rfs", info.registered_model_version)
    assert mv.description.startswith("# ") and "Full model card" in mv.description
    assert len(mv.description) <= 5000


def test_run_report_pools_repeats_with_the_shared_comparison_and_labels_its_progress(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """With (n_repeats, n) risks the report's C, difference and p are paired_comparison's over every repeat (the
    numbers of summary.json); its one progress bar names the model and the overall count, and is quiet when off."""
    from omics_risk.evaluation.bootstrap import paired_comparison

    data, risks, folds, _ = _data(n=90, seed=4)
    rng = np.random.default_rng(1)
    folds2 = np.vstack([folds, rng.permutation(folds)])
    two = {m: np.vstack([r, r * np.where(folds2[1] % 2, 3.0, 0.5) + rng.normal(0, 0.3, len(r))])
           for m, r in risks.items() if m != "coxnet_ct"}
    monkeypatch.setenv("OMICS_RISK_PROGRESS", "1")
    rep = build_run_report(two, data, output_dir=tmp_path / "r", horizons=[365], folds=folds2, n_boot=12, seed=2,
                           progress=True)
    err = capsys.readouterr().err
    assert "bootstrap fused (1/2)" in err and "bootstrap clinical_cox (2/2)" in err and "bootstrap metrics" not in err
    want = paired_comparison(data.time, data.event, two["fused"], two["clinical_cox"], folds2, n_boot=12, seed=2)
    row = rep.comparison.set_index("model").loc["fused"]
    assert (row["harrell_c"], row["harrell_c_ci_low"], row["harrell_c_ci_high"]) == (
        want.cindex.value, want.cindex.low, want.cindex.high)
    assert (row["delta_c"], row["p_value"], row["p_corrected_t"], row["repeats_pooled"]) == (
        want.difference.value, want.p_bootstrap, want.p_corrected_t, 2)
    assert rep.metrics["fused"]["harrell_c"] == want.cindex  # the metrics table shows the pooled C too
    assert any("2 CV repeats" in n for n in rep.notes)
    build_run_report(two, data, output_dir=tmp_path / "q", horizons=None, folds=folds2, n_boot=5, progress=False)
    assert capsys.readouterr().err == ""

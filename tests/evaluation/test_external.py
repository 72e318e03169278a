"""External validation of a registered model: the metrics equal direct computations (and the library reference
functions) on the same scores, the risk groups use the training cut-offs stored with the model, the validation run
is logged and linked both ways to the model version, the plots and report are written, and horizons beyond the
follow-up end ``evaluate.py`` with a clear message instead of a traceback.

The model is a transparent Cox model (``LinearRiskModel``) on a tiny two-table cohort (extraction takes
milliseconds), logged and registered like train() does: a job run with the training config, a nested final-model
run with the pyfunc, alias ``challenger``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index
from mlflow.tracking import MlflowClient
from sksurv.metrics import concordance_index_censored

from omics_risk.data.multimodal import MultimodalData, load_multimodal
from omics_risk.evaluation.metrics import HorizonError, evaluate_survival, time_grid
from omics_risk.evaluation.riskgroups import RiskGroups
from omics_risk.features.extract import extract_cohort
from omics_risk.privacy import ID_MODE_TAG, KEY_ID_TAG, Pseudonymiser
from omics_risk.scoring.frames import FeatureManifest, to_frame
from omics_risk.scoring.pyfunc import load_scoring_model, log_model
from omics_risk.scoring.reference_model import LinearRiskModel
from omics_risk.tracking import mlflow_utils as mu
from omics_risk.tracking.audit import audit_store
from omics_risk.workflows.external import (
    EvaluationError,
    model_view,
    resolve_model,
    validate_external,
)

ROOT = Path(__file__).resolve().parents[2]
TYPES = {"age": "numeric", "stage": {"type": "ordinal", "levels": ["I", "II", "III"]}}
COLUMNS = ["clinical/age", "clinical/stage", "rppa/baseline__AKT", "rppa/baseline__EGFR", "mirna/baseline__m1"]
N_BOOT = 40
COHORT_YAML = """contract_version: 1
name: {name}
time_unit: days
endpoints:
  rfs: {{type: survival, time: rfs_time, event: rfs_event}}
clinical:
  age: numeric
  stage: {{type: ordinal, levels: [I, II, III]}}
modalities:
  rppa: {{format: table}}
  mirna: {{format: table}}
"""


def write_cohort(root: Path, n: int, seed: int, *, name: str, censor: float = 1800.0) -> Path:
    """A contract cohort: age, stage, RPPA (85% of patients) and miRNA (70%) tables; risk rises with age, stage
    and AKT; uniform censoring up to ``censor`` days."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    (root / "cohort.yaml").write_text(COHORT_YAML.format(name=name))
    pats = [f"{name[:2].upper()}{i:04d}" for i in range(n)]
    age, stage = rng.normal(65, 8, n).round(), rng.choice(["I", "II", "III"], n)
    akt, egfr, m1, m2 = (rng.normal(size=n) for _ in range(4))
    lp = 0.04 * (age - 65) + 0.5 * pd.Series(stage).map({"I": 0, "II": 1, "III": 2}).to_numpy() + 0.8 * akt
    t = rng.exponential(1000 * np.exp(-lp))
    c = rng.uniform(200, censor, n)
    pd.DataFrame({"patient_id": pats, "age": age, "stage": stage, "rfs_time": np.minimum(t, c).round(1),
                  "rfs_event": (t <= c).astype(int)}).to_csv(root / "clinical.csv", index=False)
    has_r, has_m = rng.random(n) < 0.85, rng.random(n) < 0.7
    rows = []
    for i, p in enumerate(pats):
        for mod, has, suffix in (("rppa", has_r, "R"), ("mirna", has_m, "M")):
            if has[i]:
                rows.append({"patient_id": p, "sample_id": f"{p}-{suffix}", "modality": mod, "timepoint": "baseline",
                             "day": -7, "path": f"{mod}/{mod}.csv", "mask_path": ""})
    pd.DataFrame(rows).to_csv(root / "samples.csv", index=False)
    for mod, cols in (("rppa", {"AKT": akt, "EGFR": egfr}), ("mirna", {"m1": m1, "m2": m2})):
        (root / mod).mkdir()
        suffix = "R" if mod == "rppa" else "M"
        pd.DataFrame({"sample_id": [f"{p}-{suffix}" for p in pats], **cols}).round(5).to_csv(
            root / mod / f"{mod}.csv", index=False)
    return root


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path) -> SimpleNamespace:
    """A Cox model trained on one cohort and registered as omics-risk-rfs@challenger from a train()-like run tree;
    plus a second cohort (other seed, shorter follow-up) to validate on."""
    base = tmp_path_factory.mktemp("external")
    train_root = write_cohort(base / "train", 160, 1, name="tiny-train")
    val_root = write_cohort(base / "val", 220, 2, name="tiny-val", censor=1500.0)
    for root in (train_root, val_root):
        extract_cohort(root, root / "features", workers=1, progress=False)
    data = load_multimodal(train_root, train_root / "features", endpoint="rfs")
    model = LinearRiskModel(COLUMNS, clinical_types=TYPES, alpha=0.01).fit(data)
    shutil.copy(mlflow_template_db, base / "mlflow.db")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    mu.clear_protected_identifiers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mu.start_run_tree("omics-risk", uri=uri, run_name="rfs-linear", parent_run_id=None,
                               patient_ids=list(data.patients), tags={"task": "rfs", "cohort": "tiny-train"}) as job:
            mu.safe_log_params({"data.root": str(train_root), "data.features_dir": "None", "task.endpoint": "rfs",
                                "task.response": "None", "evaluation.horizons": "[365,730]",
                                "training.cv.folds": "5", "training.cv.repeats": "1"})
            with mu.start_model_run("linear_final") as final:
                log_model(model, horizons=[365.0, 730.0], input_example_frame=to_frame(data),
                          registered_model_name="omics-risk-rfs", alias="challenger",
                          feature_store=train_root / "features", training_cohort=train_root)
    mu.clear_protected_identifiers()
    out = base / "validation"
    res = validate_external("models:/omics-risk-rfs@challenger", val_root, output_dir=out, n_boot=N_BOOT, seed=5,
                            contribution_n_boot=20, top_repeats=2, tracking_uri=uri)
    mu.clear_protected_identifiers()
    return SimpleNamespace(base=base, uri=uri, model=model, train=data, train_root=train_root, val_root=val_root,
                           job_id=job.info.run_id, final_id=final.info.run_id, res=res, out=out)


@pytest.fixture
def at_store(registered: SimpleNamespace) -> SimpleNamespace:
    mlflow.set_tracking_uri(registered.uri)
    return registered


@pytest.mark.slow  # builds the registered model (module fixture, ~10 s)
def test_metrics_equal_direct_computations_on_the_same_scores(at_store: SimpleNamespace) -> None:
    reg, res = at_store, at_store.res
    val = load_multimodal(reg.val_root, reg.val_root / "features", endpoint="rfs")
    risk = reg.model.predict_risk(val)
    # the scores are the registered pyfunc's, patient by patient
    served = load_scoring_model("models:/omics-risk-rfs@challenger").predict(to_frame(val))
    np.testing.assert_allclose(res.scores["risk_score"], served["risk_score"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.scores["risk_score"], risk, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.scores["surv_730d"], served["surv_730d"], rtol=0, atol=1e-12)
    assert res.scores["patient_id"].tolist() == [str(p) for p in val.patients]

    t, e = val.time, val.event.astype(bool)
    # risk groups: the training tertiles stored with the model (in-sample training risks)
    cut = RiskGroups("tertiles").fit(reg.model.predict_risk(reg.train))
    assert res.cutoff_source == "model"
    assert res.scores["risk_group"].tolist() == cut.assign(risk).tolist()
    # every metric is evaluate_survival on the same inputs: training censoring, horizons, grid, own-time survival
    h = np.array([365.0, 730.0])
    grid = np.unique(np.concatenate([time_grid(t, train_time=reg.train.time), h]))
    surv = reg.model.predict_survival(val, grid)
    own = np.array([reg.model.predict_survival(val.subset([i]), [t[i]])[0, 0] for i in range(len(t))])
    direct = evaluate_survival(t, e, risk, surv=surv, times=grid, horizons=h, train_time=reg.train.time,
                               train_event=reg.train.event, groups=cut, n_boot=N_BOOT, seed=5, surv_at_own_time=own)
    assert set(res.metrics) == set(direct)
    for k, est in direct.items():
        got = res.metrics[k]
        assert (got.value, got.low, got.high, got.n_boot) == pytest.approx(
            (est.value, est.low, est.high, est.n_boot), rel=1e-9, abs=1e-12, nan_ok=True), k
    # and the point values agree with the libraries' own functions
    assert res.metrics["harrell_c"].value == pytest.approx(concordance_index_censored(e, t, risk)[0], abs=1e-12)
    assert res.metrics["harrell_c"].value == pytest.approx(concordance_index(t, -risk, e), abs=1e-9)
    slope = CoxPHFitter().fit(pd.DataFrame({"t": t, "e": e, "s": risk}), "t", "e").params_["s"]
    assert res.metrics["calibration_slope"].value == pytest.approx(slope, rel=1e-6)
    assert 0.6 < res.metrics["harrell_c"].value < 0.9  # the simulated signal is recovered on the new cohort
    assert res.horizons == [365.0, 730.0] and res.n_patients == 220 and res.n_events == int(e.sum())
    metrics_csv = pd.read_csv(res.paths["metrics"]).set_index("metric")
    assert metrics_csv.loc["uno_c", "estimate"] == pytest.approx(res.metrics["uno_c"].value)


@pytest.mark.slow  # builds the registered model (module fixture, ~10 s)
def test_validation_run_is_logged_and_linked_to_the_model_version(at_store: SimpleNamespace) -> None:
    reg, res = at_store, at_store.res
    client = MlflowClient(reg.uri)
    run = client.get_run(res.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "omics-risk-validation"
    tags = run.data.tags
    assert tags["model_name"] == "omics-risk-rfs" and tags["model_version"] == "1"
    assert tags["model_uri"] == "models:/omics-risk-rfs@challenger"
    assert tags["source_run_id"] == reg.final_id and tags["training_run_id"] == reg.job_id
    assert tags[mu.LEVEL_TAG] == "validation" and tags["cutoff_source"] == "model"
    # the names of a training model run (docs/evaluation.md, "Metric names"); p-values without a CI
    assert run.data.metrics["harrell_c"] == pytest.approx(res.metrics["harrell_c"].value)
    assert run.data.metrics["auc_730d_ci_high"] == pytest.approx(res.metrics["auc_730d"].high)
    assert not [k for k in run.data.metrics if k.startswith("external/") or k.startswith("logrank_p_ci")]
    mv = client.get_model_version("omics-risk-rfs", "1")
    assert mv.tags["validation.tiny-val.run_id"] == res.run_id
    assert mv.tags["last_validation_run_id"] == res.run_id
    assert mv.tags["validation.tiny-val.harrell_c"] == str(res.metrics["harrell_c"])
    arts = {a.path for a in client.list_artifacts(res.run_id)} | {a.path for a in
                                                                   client.list_artifacts(res.run_id, "plots")}
    for f in ("report.html", "summary.json", "scores.csv", "metrics.csv", "risk_groups.csv", "plots/km_risk_groups.png",
              "plots/calibration.png", "plots/td_auc.png", "plots/contribution.png", "plots/top_features.png"):
        assert f in arts, f
    # patient ids only inside artifacts: never in metric or param names, param values or tags
    val_ids = pd.read_csv(reg.val_root / "clinical.csv")["patient_id"].tolist()
    mu.assert_no_identifiers([*run.data.metrics, *run.data.params, *run.data.tags],
                             val_ids, values=[*run.data.params.values(), *tags.values(), *mv.tags.values()])
    # the logged scores carry the store's keyed pseudonyms; the local scores.csv (it stays with the cohort) the ids
    scores = pd.read_csv(client.download_artifacts(res.run_id, "scores.csv", str(reg.base / "dl")))
    pseudonyms = Pseudonymiser.for_store(reg.uri)
    assert scores["patient_id"].tolist() == pseudonyms(res.scores["patient_id"]) and len(scores) == 220
    assert tags[ID_MODE_TAG] == "pseudonymised" and tags[KEY_ID_TAG] == pseudonyms.key_id
    assert set(pd.read_csv(res.paths["scores"])["patient_id"]) == set(val_ids)
    local = pd.read_csv(res.paths["scores"]).drop(columns="patient_id")
    pd.testing.assert_frame_equal(scores.drop(columns="patient_id"), local)  # the same numbers
    assert audit_store([*val_ids, *pd.read_csv(reg.train_root / "clinical.csv")["patient_id"]],
                       tracking_uri=reg.uri) == []


@pytest.mark.slow  # builds the registered model (module fixture, ~10 s)
def test_outputs_plots_and_report(at_store: SimpleNamespace) -> None:
    res = at_store.res
    for name in ("km_risk_groups", "calibration", "td_auc", "contribution", "top_features"):
        png = res.paths[name]
        assert png.suffix == ".png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    html = (res.output_dir / "report.html").read_text(encoding="utf-8")
    assert "External validation: omics-risk-rfs v1" in html and f"{res.metrics['harrell_c'].value:.3f}" in html
    assert html.count("data:image/png;base64,") == 5
    summary = json.loads((res.output_dir / "summary.json").read_text())
    assert summary["run_id"] == res.run_id and summary["cutoff_source"] == "model"
    assert summary["metrics"]["harrell_c"]["value"] == pytest.approx(res.metrics["harrell_c"].value)
    contrib = pd.read_csv(res.paths["contribution_table"])
    assert set(contrib["modality"]) == {"clinical", "rppa", "mirna"}
    top = pd.read_csv(res.paths["top_features_table"])
    assert top["feature"].iloc[0] in ("rppa/baseline__AKT", "clinical/stage", "clinical/age")
    assert "risk groups (tertiles): training cut-offs stored with the model" in " ".join(res.notes)
    assert "External validation of omics-risk-rfs v1" in res.to_text()


def _local_model_without_cutoffs(reg: SimpleNamespace, dest: Path) -> Path:
    """The registered model as a local directory whose scoring.json has no risk cut-offs (an older model)."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/omics-risk-rfs@challenger",
                                                     dst_path=str(dest)))
    for f in local.rglob("scoring.json"):
        settings = json.loads(f.read_text())
        settings.pop("risk_cutoffs", None)
        f.write_text(json.dumps(settings))
    return local


@pytest.mark.slow  # builds the registered model (module fixture, ~10 s)
def test_cutoffs_fall_back_to_training_risks_then_to_the_cohort(at_store: SimpleNamespace, tmp_path: Path) -> None:
    reg = at_store
    local = _local_model_without_cutoffs(reg, tmp_path / "model")
    kw = {"n_boot": 5, "contribution": False, "top_features": False, "log_to_mlflow": False,
          "tracking_uri": reg.uri}
    res = validate_external(str(local), reg.val_root, output_dir=tmp_path / "a", **kw)
    assert res.cutoff_source == "training"  # the training run's data.root is still there: re-scored
    expected = RiskGroups("tertiles").fit(reg.model.predict_risk(reg.train)).assign(res.scores["risk_score"])
    assert res.scores["risk_group"].tolist() == expected.tolist()
    res = validate_external(str(local), reg.val_root, output_dir=tmp_path / "b", train_cohort=tmp_path / "gone", **kw)
    assert res.cutoff_source == "cohort"
    assert any("FITTED ON THIS COHORT" in n for n in res.notes)
    assert any("weight by this cohort's censoring" in n for n in res.notes)
    assert (res.scores["risk_group"].value_counts() >= 70).all()  # tertiles of this cohort's own scores
    assert "FITTED ON THIS COHORT" in (tmp_path / "b" / "report.html").read_text(encoding="utf-8")


@pytest.mark.slow  # builds the registered model (module fixture, ~10 s)
def test_horizons_are_checked_against_this_cohorts_follow_up(at_store: SimpleNamespace, tmp_path: Path) -> None:
    reg = at_store
    kw = {"n_boot": 5, "contribution": False, "top_features": False, "log_to_mlflow": False,
          "tracking_uri": reg.uri}
    with pytest.raises(HorizonError, match="horizon 2000 days is not inside the follow-up"):
        validate_external("models:/omics-risk-rfs@challenger", reg.val_root, output_dir=tmp_path / "a",
                          horizons=[365, 2000], **kw)
    # the model's own horizons: one the cohort cannot support is left out with a note, not an error
    short = write_cohort(tmp_path / "short", 120, 7, name="tiny-short", censor=600.0)
    res = validate_external("models:/omics-risk-rfs@challenger", short, output_dir=tmp_path / "b", **kw)
    assert res.horizons == [365.0]
    assert any("horizon 730 days left out" in n for n in res.notes)
    assert "auc_365d" in res.metrics and "auc_730d" not in res.metrics


def test_model_view_aligns_columns_to_the_model() -> None:
    patients = pd.Index(["a", "b", "c"])
    manifest = FeatureManifest(clinical={"age": "double"},
                               modalities={"rppa": ("t__x", "t__y"), "ct": ("t__v",)})
    data = MultimodalData(patients=patients, clinical=pd.DataFrame({"age": [60.0, 70.0, 80.0], "extra": 1},
                                                                   index=patients),
                          modalities={"rppa": pd.DataFrame({"t__y": [1.0, np.nan, 2.0], "t__x": [0.1, np.nan, 0.3],
                                                            "t__z": 5.0}, index=patients)},
                          present=pd.DataFrame({"clinical": True, "rppa": [True, False, True]}, index=patients))
    view, notes = model_view(data, manifest)
    assert list(view.clinical.columns) == ["age"]
    assert list(view.modalities["rppa"].columns) == ["t__x", "t__y"]
    assert view.present["rppa"].tolist() == [True, False, True] and not view.present["ct"].any()
    assert any("'ct' of the model is not in this cohort" in n for n in notes)
    thin = FeatureManifest(clinical={"age": "double"}, modalities={"rppa": ("t__x", "t__q", "t__r")})
    with pytest.raises(EvaluationError, match="lacks 2 of the model's 3 features"):
        model_view(data, thin)
    with pytest.raises(EvaluationError, match="clinical column"):
        model_view(data, FeatureManifest(clinical={"sex": "string"}, modalities={}))


@pytest.mark.slow  # builds the registered model (module fixture, ~10 s)
def test_resolve_model_links_run_uris_to_the_registered_version(at_store: SimpleNamespace) -> None:
    client = MlflowClient(at_store.uri)
    by_alias = resolve_model("models:/omics-risk-rfs@challenger", client)
    assert (by_alias.name, by_alias.version, by_alias.alias) == ("omics-risk-rfs", "1", "challenger")
    assert by_alias.source_run_id == at_store.final_id
    by_version = resolve_model("models:/omics-risk-rfs/1", client)
    assert by_version.source_run_id == at_store.final_id
    by_run = resolve_model(f"runs:/{at_store.final_id}/model", client)
    assert (by_run.name, by_run.version) == ("omics-risk-rfs", "1")
    with pytest.raises(EvaluationError, match="is not models:/NAME@ALIAS"):
        resolve_model("s3://bucket/model", client)


# ---------------------------------------------------------------------------------------------- evaluate.py
def _evaluate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMICS_RISK_ROOT": str(cwd), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *args], cwd=cwd, env=env, capture_output=True,
                          encoding="utf-8", errors="replace", timeout=600)


@pytest.mark.slow
def test_evaluate_py_external_end_to_end_and_horizon_error(at_store: SimpleNamespace, tmp_path: Path) -> None:
    reg = at_store
    common = [f"data.root={reg.val_root}", f"tracking.uri={reg.uri}", "evaluation.n_boot=20",
              "contribution.n_boot=10", "top_features.n_repeats=1", "progress=false"]
    bad = _evaluate("mode=external", *common, "horizons=[365,5000]", f"hydra.run.dir={tmp_path / 'bad'}",
                    cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert "evaluate.py: error (horizon): horizon 5000 days is not inside the follow-up" in bad.stderr
    assert "Traceback" not in bad.stderr
    gone = _evaluate("mode=external", f"tracking.uri={reg.uri}", "model_uri=models:/omics-risk-rfs@nope",
                     f"data.root={reg.val_root}", f"hydra.run.dir={tmp_path / 'gone'}", cwd=tmp_path)
    assert gone.returncode == 2 and "cannot resolve model" in gone.stderr and "Traceback" not in gone.stderr
    # compare mode through evaluate.py: the training experiment holds only the final model's run here
    cmp = _evaluate("mode=compare", "experiment_name=omics-risk", f"tracking.uri={reg.uri}",
                    f"hydra.run.dir={tmp_path / 'cmp'}", cwd=tmp_path)
    assert cmp.returncode == 2 and "have no model runs" in cmp.stderr and "Traceback" not in cmp.stderr

    ok = _evaluate("mode=external", *common, "task=rfs", f"hydra.run.dir={tmp_path / 'ok'}", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "External validation of omics-risk-rfs v1 (@challenger) on tiny-val: 220 patients" in ok.stdout
    assert "harrell_c" in ok.stdout and "MLflow run:" in ok.stdout
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert (tmp_path / "ok" / "report.html").is_file() and (tmp_path / "ok" / "plots" / "td_auc.png").is_file()
    run = MlflowClient(reg.uri).get_run(summary["run_id"])
    assert run.data.params["evaluation.n_boot"] == "20" and run.data.tags["model_version"] == "1"

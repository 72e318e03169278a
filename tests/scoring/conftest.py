"""Shared fixtures of the batch-scoring tests.

- ``write_table_cohort``: a tiny hand-written cohort with two ``table`` modalities (extraction takes milliseconds),
  whose risk rises with age, stage and one RPPA feature;
- ``table_model`` (session): a Cox model over those columns, fitted on one such cohort and wrapped for batch
  scoring with the settings ``log_model`` would store (no MLflow: fast tests);
- ``logged_table`` (session): that model logged with MLflow and registered as ``omics-risk-table@champion`` in its
  own SQLite store, a downloaded copy of its folder, and a fresh cohort: the command line end to end in seconds;
- ``demo_model`` (session, slow): the demo setting end to end: a tiny synthetic nsclc-postop cohort, extracted,
  a fused network trained on every modality, logged and registered as ``omics-risk-rfs@challenger`` in a temporary
  SQLite MLflow store with its feature store and training cohort;
- ``problem_cohort`` (session, slow): a fresh synthetic nsclc-postop cohort with injected problems (a missing file,
  a corrupt image, an unknown modality, a patient without any sample, a patient only in samples.csv).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from scoring_cohorts import TABLE_COLUMNS, TABLE_TYPES, write_table_cohort

TINY = {"fragments_per_sample": 300, "n_metabolites": 20, "ct_shape": (24, 24, 16), "workers": 1, "progress": False}


@pytest.fixture(scope="session")
def table_model(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A Cox model over clinical, RPPA and miRNA columns, with the scoring settings log_model would store."""
    from omics_risk.data.multimodal import load_multimodal
    from omics_risk.features.extract import extract_cohort
    from omics_risk.scoring.frames import to_frame
    from omics_risk.scoring.pyfunc import scoring_settings
    from omics_risk.scoring.reference_model import LinearRiskModel
    from omics_risk.workflows.scoring import BatchModel

    base = tmp_path_factory.mktemp("table_model")
    root = write_table_cohort(base / "train", n=60, seed=1)
    store = base / "features"
    extract_cohort(root, store, workers=1, progress=False)
    data = load_multimodal(root, store, endpoint="rfs")
    model = LinearRiskModel(TABLE_COLUMNS, clinical_types=TABLE_TYPES, alpha=0.01).fit(data)
    settings = scoring_settings(model, to_frame(data), horizons=[365.0, 730.0], feature_store=store,
                                training_cohort=root)
    return SimpleNamespace(batch=BatchModel.from_model(model, settings), model=model, data=data, root=root,
                           store=store, settings=settings)


@pytest.fixture(scope="session")
def logged_table(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path,
                 table_model: SimpleNamespace) -> SimpleNamespace:
    """``table_model`` registered as ``omics-risk-table@champion``; ``model_dir`` is a local copy of the logged model
    (MLmodel, python_model.pkl, artifacts/) for tests that tamper with it, ``cohort`` a fresh 20-patient cohort."""
    import mlflow

    from omics_risk.progress import mlflow_bars_off
    from omics_risk.scoring.frames import to_frame
    from omics_risk.scoring.pyfunc import log_model
    from omics_risk.tracking.mlflow_utils import setup_experiment

    base = tmp_path_factory.mktemp("logged_table")
    shutil.copy(mlflow_template_db, base / "mlflow.db")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    setup_experiment("scoring-cli", uri)
    with warnings.catch_warnings(), mlflow.start_run():
        warnings.simplefilter("ignore")
        info = log_model(table_model.model, input_example_frame=to_frame(table_model.data), horizons=[365.0, 730.0],
                         registered_model_name="omics-risk-table", alias="champion", feature_store=table_model.store,
                         training_cohort=table_model.root)
    with mlflow_bars_off():
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(base / "model")))
    cohort = write_table_cohort(base / "cohort", n=20, seed=5)
    return SimpleNamespace(uri="models:/omics-risk-table@champion", tracking_uri=uri, model_dir=local, cohort=cohort,
                           base=base)


# ------------------------------------------------------------------------------------------------ the demo model
@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path) -> SimpleNamespace:
    """The fused network on a tiny nsclc-postop cohort, registered as ``omics-risk-rfs@challenger``."""
    import mlflow

    from omics_risk.data.contract import load_cohort
    from omics_risk.data.multimodal import load_multimodal
    from omics_risk.data.synthetic import generate_cohort
    from omics_risk.features.clinical import clinical_types
    from omics_risk.features.extract import extract_cohort
    from omics_risk.models.fused import FusedSurvivalModel
    from omics_risk.scoring.frames import to_frame
    from omics_risk.scoring.pyfunc import log_model
    from omics_risk.tracking.mlflow_utils import setup_experiment

    base = tmp_path_factory.mktemp("demo_model")
    root = generate_cohort("nsclc-postop", n=24, seed=3, out=base / "train", **TINY)
    store = base / "features"
    extract_cohort(root, store, workers=2, progress=False)
    data = load_multimodal(root, store, endpoint="rfs")
    model = FusedSurvivalModel(epochs=5, patience=None, validation_fraction=0.0, hidden=(8,), embed_dim=4,
                               fusion_dim=4, fusion_hidden=4, k=4, device="cpu", amp=False, seed=0,
                               clinical_types=clinical_types(load_cohort(root).spec)).fit(data)
    shutil.copy(mlflow_template_db, base / "mlflow.db")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    setup_experiment("scoring-batch", uri)
    with warnings.catch_warnings(), mlflow.start_run() as run:
        warnings.simplefilter("ignore")
        info = log_model(model, input_example_frame=to_frame(data), registered_model_name="omics-risk-rfs",
                         alias="challenger", feature_store=store, training_cohort=root)
    return SimpleNamespace(uri="models:/omics-risk-rfs@challenger", tracking_uri=uri, model=model, data=data,
                           root=root, store=store, info=info, run_id=run.info.run_id, base=base)


@pytest.fixture
def demo(demo_model: SimpleNamespace) -> SimpleNamespace:
    """``demo_model`` with MLflow pointed at its store (other tests move the global tracking URI)."""
    import mlflow

    mlflow.set_tracking_uri(demo_model.tracking_uri)
    return demo_model


@pytest.fixture(scope="session")
def problem_cohort(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A fresh nsclc-postop cohort with injected problems; ``who`` maps each problem to its patient."""
    from omics_risk.data.synthetic import generate_cohort

    base = tmp_path_factory.mktemp("problem_cohort")
    root = generate_cohort("nsclc-postop", n=14, seed=11, out=base / "cohort", **TINY)
    samples = pd.read_csv(root / "samples.csv", dtype=str, keep_default_na=False)
    patients = pd.read_csv(root / "clinical.csv", dtype=str)["patient_id"].tolist()
    who: dict[str, str] = {}
    cf = samples[samples["modality"] == "cfdna"].iloc[0]
    (root / cf["path"]).unlink()
    who["missing_file"] = cf["patient_id"]
    ct = samples[(samples["modality"] == "ct") & (samples["patient_id"] != cf["patient_id"])].iloc[0]
    (root / ct["path"]).write_bytes(b"this is not a NIfTI image" * 8)
    who["corrupt_image"] = ct["patient_id"]
    others = [p for p in patients if p not in who.values()]
    # a patient with every modality, so that the unknown-modality sample is that patient's only problem
    complete = samples.groupby("patient_id")["modality"].nunique()
    who["unknown_modality"] = next(p for p in others if complete.get(p, 0) == complete.max())
    extra = {"patient_id": who["unknown_modality"], "sample_id": "XPROT-1", "modality": "proteomics",
             "timepoint": "preop", "day": "-3", "path": "proteomics/panel.csv", "mask_path": ""}
    who["no_sample"] = next(p for p in others if p != who["unknown_modality"])
    samples = samples[samples["patient_id"] != who["no_sample"]]
    orphan = {"patient_id": "PO9999", "sample_id": "PO9999_ctdna_postop1", "modality": "ctdna",
              "timepoint": "postop1", "day": "30", "path": "ctdna/variants.csv", "mask_path": ""}
    who["only_in_samples"] = "PO9999"
    pd.concat([samples, pd.DataFrame([extra, orphan])]).to_csv(root / "samples.csv", index=False)
    return SimpleNamespace(root=root, who=who, patients=patients, features=base / "features")

"""The one path from a cohort to model inputs (``omics_risk.workflows.inputs``): a loaded cohort is parsed once per
training run and role, and ``model_inputs`` gives what the pipeline loaded before (same data, same notes)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import omics_risk.data.multimodal as multimodal
from omics_risk.data.contract import load_cohort
from omics_risk.data.multimodal import load_multimodal
from omics_risk.data.synthetic import generate_cohort
from omics_risk.features import extract as extract_module
from omics_risk.features.extract import extract_cohort
from omics_risk.workflows import training as pipeline
from omics_risk.workflows.inputs import ModelInputs, model_inputs

ROOT = Path(__file__).resolve().parents[2]
TINY = {"fragments_per_sample": 300, "n_metabolites": 20, "ct_shape": (24, 24, 16), "workers": 1, "progress": False}


@pytest.fixture(scope="module")
def cohort_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = generate_cohort("nsclc-postop", n=30, seed=3, out=tmp_path_factory.mktemp("inputs") / "nsclc", **TINY)
    extract_cohort(root, root / "features", workers=1, progress=False)
    return root


def test_model_inputs_joins_the_store_of_a_loaded_cohort_without_parsing_it_again(
        cohort_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cohort = load_cohort(cohort_root)
    expected = load_multimodal(cohort_root, cohort_root / "features", endpoint="rfs")
    monkeypatch.setattr(multimodal, "load_cohort", lambda *a, **k: pytest.fail("the cohort was parsed again"))
    got = model_inputs(cohort, cohort_root / "features", extract=False, endpoint="rfs")
    assert isinstance(got, ModelInputs) and got.cohort is cohort and got.images is None and got.summary is None
    assert list(got.data.patients) == list(expected.patients)
    assert got.data.modality_names == expected.modality_names
    for m in expected.modality_names:
        assert got.data.modalities[m].equals(expected.modalities[m])
    assert got.n_unlabelled == len(cohort.clinical) - len(expected)
    assert got.notes == ([f"{got.n_unlabelled} patient(s) without the rfs outcome are left out"]
                         if got.n_unlabelled else [])
    # a modality the store does not hold is left out with only_stored (a model's modality this cohort lacks)
    kept = model_inputs(cohort, cohort_root / "features", extract=False, endpoint="rfs",
                        modalities=[*expected.modality_names, "rnaseq"], only_stored=True)
    assert kept.data.modality_names == expected.modality_names


def test_a_training_run_parses_each_cohort_once(cohort_root: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The training cohort and the validation cohort are each parsed once by the pipeline (extraction, data, CT
    images and the logged model all read that one Cohort); nothing below it, extraction included, parses them again."""
    calls: list[str] = []

    def counted(root: object, **kw: object) -> object:
        calls.append(str(root))
        return load_cohort(root, **kw)

    monkeypatch.setattr(pipeline, "load_cohort", counted)
    monkeypatch.setattr(multimodal, "load_cohort", lambda *a, **k: pytest.fail("load_multimodal parsed a cohort"))
    monkeypatch.setattr(extract_module, "load_cohort", lambda *a, **k: pytest.fail("extraction parsed a cohort"))
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}", "tracking=none",
            "training.progress=false", "extract.workers=1", "debug=fast", "baselines=none", "data=cohort",
            f"data.root={cohort_root}", f"data.validation_root={cohort_root}", "training.final_model=false",
            "training.cv.folds=2", "training.cv.repeats=1", "model.estimator.epochs=2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = pipeline.train(cfg)
    assert calls == [str(cohort_root), str(cohort_root)]  # the training cohort, then the validation cohort
    assert "fused/cindex" in metrics and "external/fused/cindex" in metrics

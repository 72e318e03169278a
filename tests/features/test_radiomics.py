"""Radiomics: pyradiomics' own reference values on real lung CT, label and failure handling, caching, parallelism."""

from __future__ import annotations

import ast
import logging
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from one_broken import assert_only_sample_failed, clean_and_broken

from omics_risk.data.contract import load_cohort
from omics_risk.features import radiomics as rad_mod
from omics_risk.features.base import SampleFailure, settings_hash
from omics_risk.features.radiomics import (
    DEFAULT_PARAMS,
    RadiomicsExtractor,
    extract_radiomics,
    load_params,
    radiomics_features,
)

REPO = Path(__file__).resolve().parents[2]
#: Original image only: fast, and enough to check plumbing.
FAST = {
    "setting": {"binWidth": 25, "label": 1, "additionalInfo": False},
    "imageType": {"Original": {}},
    "featureClass": {"shape": None, "firstorder": None, "glcm": ["Contrast", "JointEntropy"], "glszm": None},
}


def _shared_dir() -> Path:
    env = os.environ.get("OMICS_RISK_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"


LUNG = _shared_dir() / "data" / "pyradiomics_lung"
needs_lung = pytest.mark.skipif(
    not (LUNG / "baseline").is_dir(),
    reason=f"pyradiomics lung reference cases not found at {LUNG} (set OMICS_RISK_SHARED to the folder holding data/)",
)
CLASSES_3D = ("firstorder", "glcm", "gldm", "glrlm", "glszm", "ngtdm", "shape")


def _baseline(cls: str, column: str) -> pd.Series:
    return pd.read_csv(LUNG / "baseline" / f"baseline_{cls}.csv", index_col=0)[column]


def _compare(ours: pd.Series, expected: dict[str, float]) -> None:
    """Every baseline feature, within 1e-3 relative (pyradiomics' own test allows 3 %; a zero must stay zero)."""
    bad = []
    for name, want in expected.items():
        got = ours[f"rad_{name}"]
        ok = abs(got) <= 1e-12 if want == 0.0 else abs(got / want - 1.0) < 1e-3
        if not ok:
            bad.append(f"{name}: expected {want!r}, got {got!r}")
    assert not bad, "\n".join(bad)


# --------------------------------------------------------------------------------------------- reference values


@needs_lung
@pytest.mark.parametrize("case", ["lung1", pytest.param("lung2", marks=pytest.mark.slow)])
def test_matches_pyradiomics_baseline_on_lung_ct(case: str) -> None:
    """Our extractor, run with the baseline's settings (read from it), reproduces every 3D feature of every class."""
    settings = {cls: ast.literal_eval(_baseline(cls, case)["diagnostics_Configuration_Settings"]) for cls in CLASSES_3D}
    image_types = {
        ast.literal_eval(_baseline(cls, case)["diagnostics_Configuration_EnabledImageTypes"]).__repr__()
        for cls in CLASSES_3D
    }
    assert all(s == settings["glcm"] for s in settings.values()) and image_types == {"{'Original': {}}"}
    setting = settings["glcm"]
    assert setting["binWidth"] == 25 and setting["resampledPixelSpacing"] is None and setting["voxelArrayShift"] == 2000
    params = {"setting": setting, "imageType": {"Original": {}}, "featureClass": dict.fromkeys(CLASSES_3D)}
    result = extract_radiomics(
        [(case, LUNG / f"{case}_image.nrrd", LUNG / f"{case}_label.nrrd")], params, workers=1, progress=False
    )
    assert result.failures == {}
    ours = result.features.loc[case]
    expected = {
        name: float(v)
        for cls in CLASSES_3D
        for name, v in _baseline(cls, case).items()
        if not name.startswith("diagnostics_")
    }
    assert len(expected) == 107  # 18 first-order (StandardDeviation is deprecated), 24 GLCM, 14 GLDM, ...
    _compare(ours, expected)
    assert not any(c.startswith("rad_diagnostics") for c in ours.index)
    if case == "lung1":  # the README's anchors
        assert ours["rad_original_shape_Maximum3DDiameter"] == pytest.approx(21.345, abs=1e-3)
        assert ours["rad_original_shape_Sphericity"] == pytest.approx(0.748, abs=1e-3)


@needs_lung
def test_matches_pyradiomics_shape2d_baseline(tmp_path: Path) -> None:
    """shape2D: the baseline used a one-slice label; rebuilt from lung1's label (same pixel hash as upstream's)."""
    col = "lung1_shape2D"
    base = pd.read_csv(LUNG / "baseline" / "baseline_shape2D.csv", index_col=0)[col]
    z = ast.literal_eval(base["diagnostics_Mask-corrected_BoundingBox"])[2]
    label = sitk.ReadImage(str(LUNG / "lung1_label.nrrd"))[:, :, z : z + 1]
    assert sitk.Hash(sitk.Cast(label, sitk.sitkUInt32)) == base["diagnostics_Mask-original_Hash"]
    sitk.WriteImage(label, str(tmp_path / "lung1_label_2D.nrrd"))
    setting = ast.literal_eval(base["diagnostics_Configuration_Settings"])
    assert setting["force2D"] and setting["correctMask"]  # the one-slice mask is resampled onto the image grid
    params = {"setting": setting, "imageType": {"Original": {}}, "featureClass": {"shape2D": None}}
    result = extract_radiomics(
        [("lung1", LUNG / "lung1_image.nrrd", tmp_path / "lung1_label_2D.nrrd")], params, workers=1, progress=False
    )
    assert result.failures == {}
    expected = {k: float(v) for k, v in base.items() if not k.startswith("diagnostics_")}
    assert len(expected) == 9
    _compare(result.features.loc["lung1"], expected)


# --------------------------------------------------------------------------------------------- settings


def test_yaml_config_is_the_builtin_default() -> None:
    assert load_params(REPO / "configs" / "features" / "radiomics.yaml") == DEFAULT_PARAMS
    assert load_params(None) == DEFAULT_PARAMS and load_params(None) is not DEFAULT_PARAMS


def test_settings_hash_pickling_and_validation() -> None:
    ext = RadiomicsExtractor()
    s = ext.settings()
    assert s["params"] == DEFAULT_PARAMS and s["pyradiomics"] == rad_mod._pyradiomics_version()
    h = settings_hash(s)
    assert settings_hash(RadiomicsExtractor(label=2).settings()) != h
    wider = load_params(None)
    wider["setting"]["binWidth"] = 50
    assert settings_hash(RadiomicsExtractor(wider).settings()) != h
    assert settings_hash(pickle.loads(pickle.dumps(ext)).settings()) == h
    assert logging.getLogger("radiomics").getEffectiveLevel() == logging.WARNING  # pyradiomics' import sets INFO
    from omegaconf import OmegaConf  # Hydra hands over DictConfig / ListConfig

    assert RadiomicsExtractor(OmegaConf.create(DEFAULT_PARAMS)).params == DEFAULT_PARAMS
    with pytest.raises(ValueError, match="binwidth"):
        load_params({"setting": {"binwidth": 25}})
    with pytest.raises(ValueError, match="unknown section"):
        load_params({"settings": {"binWidth": 25}})
    with pytest.raises(FileNotFoundError, match="radiomics parameter file"):
        load_params(REPO / "nope.yaml")


# --------------------------------------------------------------------------------------------- labels and failures


@pytest.fixture(scope="module")
def small_scan(tmp_path_factory: pytest.TempPathFactory, data_writers: SimpleNamespace) -> SimpleNamespace:
    """One CT-like volume with a blob as NIfTI and as a DICOM series; masks with label 1, label 2, empty, misplaced."""
    d = tmp_path_factory.mktemp("rad")
    image, mask = data_writers.ct_volume(7, origin=(-6.0, 3.2, -40.0))
    sitk.WriteImage(image, str(d / "ct.nii.gz"))
    data_writers.write_dicom_series(image, d / "dicom")
    sitk.WriteImage(mask, str(d / "m1.nii.gz"))
    sitk.WriteImage(mask * 2, str(d / "m2.nii.gz"))
    sitk.WriteImage(mask * 0, str(d / "empty.nii.gz"))
    moved = sitk.Image(mask)
    moved.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(moved, str(d / "moved.nii.gz"))
    return SimpleNamespace(
        dir=d,
        nifti=d / "ct.nii.gz",
        dicom=d / "dicom",
        m1=d / "m1.nii.gz",
        m2=d / "m2.nii.gz",
        empty=d / "empty.nii.gz",
        moved=d / "moved.nii.gz",
    )


def test_dicom_and_nifti_give_the_same_features(small_scan: SimpleNamespace) -> None:
    params = load_params(FAST)
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    a = radiomics_features(small_scan.nifti, small_scan.m1, params)
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == threads  # pinned to 1 only inside pyradiomics
    b = radiomics_features(str(small_scan.dicom), str(small_scan.m1), params)
    assert a.keys() == b.keys() and len(a) == 14 + 18 + 2 + 16
    assert all(k.startswith("rad_original_") for k in a)
    np.testing.assert_allclose([b[k] for k in a], list(a.values()), rtol=1e-6)


def test_mask_labels_and_failures(small_scan: SimpleNamespace) -> None:
    params = load_params(FAST)
    with pytest.raises(SampleFailure, match=r"no voxel with label 1 \(labels present: 2\).*setting.label"):
        radiomics_features(small_scan.nifti, small_scan.m2, params)
    as_two = radiomics_features(small_scan.nifti, small_scan.m2, load_params(FAST, label=2))
    assert as_two == radiomics_features(small_scan.nifti, small_scan.m1, params)
    with pytest.raises(SampleFailure, match=r"empty\.nii\.gz is empty"):
        radiomics_features(small_scan.nifti, small_scan.empty, params)
    with pytest.raises(SampleFailure, match="origin differs"):
        radiomics_features(small_scan.nifti, small_scan.moved, params)
    with pytest.raises(SampleFailure, match="file not found"):
        radiomics_features(small_scan.dir / "absent.nii.gz", small_scan.m1, params)


def test_standalone_cache_and_failures(
    small_scan: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = [
        ("a", small_scan.nifti, small_scan.m1),
        ("b", small_scan.dicom, small_scan.m1),
        ("c", small_scan.nifti, small_scan.empty),
        ("d", small_scan.nifti, None),
    ]
    first = extract_radiomics(pairs, FAST, workers=1, cache_dir=tmp_path, progress=False)
    assert list(first.features.index) == ["a", "b"] and first.features.shape[1] == 50
    assert set(first.failures) == {"c", "d"} and "empty" in first.failures["c"] and "no mask" in first.failures["d"]
    assert len(list(tmp_path.rglob("*.json"))) == 4  # data problems (empty or no mask) are deterministic: cached too

    def no_compute(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached scan must not be recomputed")

    monkeypatch.setattr(rad_mod, "radiomics_features", no_compute)
    again = extract_radiomics(pairs[:3], FAST, workers=1, cache_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(again.features, first.features)
    assert again.failures == {"c": first.failures["c"]}
    monkeypatch.undo()
    # other settings are other cache entries
    other = load_params(FAST)
    other["setting"]["binWidth"] = 10
    changed = extract_radiomics(pairs[:1], other, workers=1, cache_dir=tmp_path, progress=False)
    assert (
        changed.features.loc["a", "rad_original_glcm_JointEntropy"]
        > first.features.loc["a", "rad_original_glcm_JointEntropy"]
    )


def test_standalone_torn_cache_entry_and_missing_scan(small_scan: SimpleNamespace, tmp_path: Path) -> None:
    pairs = [("a", small_scan.nifti, small_scan.m1), ("b", small_scan.dir / "absent.nii.gz", small_scan.m1)]
    first = extract_radiomics(pairs, FAST, workers=1, cache_dir=tmp_path, progress=False)
    assert list(first.features.index) == ["a"] and "file not found" in first.failures["b"]
    for entry in tmp_path.rglob("*.json"):
        entry.write_text('{"features": {"rad_')  # writes cut short: recomputed, not an error for the whole batch
    again = extract_radiomics(pairs, FAST, workers=1, cache_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(again.features, first.features, check_exact=True)
    assert again.failures == first.failures


def _remask(root: Path) -> None:
    """P02's mask moved 5 mm off its scan (same voxels, another origin): it no longer fits the image."""
    path = root / "ct/P02_preop_mask.nrrd"
    mask = sitk.ReadImage(str(path))
    mask.SetOrigin(tuple(o + 5.0 for o in mask.GetOrigin()))
    sitk.WriteImage(mask, str(path))


BROKEN_SCANS = {
    "mask off the scan": ("P02-ct-preop", _remask,
                          "mask P02_preop_mask.nrrd does not fit image P02_preop.nrrd: origin differs"),
    "corrupt image": ("P04-ct-preop",
                      lambda root: (root / "ct/P04_preop.mha").write_bytes(b"ObjectType = Image\nNDims = 3\n garbage"),
                      "P04_preop.mha"),
}


@pytest.mark.parametrize("case", list(BROKEN_SCANS))
def test_one_broken_scan_fails_only_itself(make_valid_cohort, tmp_path: Path, case: str) -> None:  # type: ignore[no-untyped-def]
    sid, breaker, reason = BROKEN_SCANS[case]
    cfg = {"image": [{"_target_": "omics_risk.features.radiomics.RadiomicsExtractor", "params": FAST}]}
    clean, broken, summary = clean_and_broken(make_valid_cohort, tmp_path, "ct", breaker, cfg)
    assert_only_sample_failed(clean, broken, "ct", sid, (reason,))
    assert summary.modalities["ct"]["ok"] == 3


# --------------------------------------------------------------------------------------------- cohorts


def test_extractor_in_the_orchestrator(valid_cohort: Path) -> None:
    """omics-risk extract with the radiomics extractor: CT as NIfTI, NRRD, DICOM and MetaImage; P05 has no CT."""
    from omics_risk.features.extract import extract_cohort

    cfg = {"image": [{"_target_": "omics_risk.features.radiomics.RadiomicsExtractor", "params": FAST}]}
    summary = extract_cohort(valid_cohort, config=cfg, modalities=["ct"], workers=1, progress=False)
    table = pd.read_parquet(summary.out / "ct.parquet")
    assert list(table.index) == ["P01", "P02", "P03", "P04"]
    assert table.shape[1] == 50 and all(c.startswith("preop__rad_original_") for c in table.columns)
    assert np.isfinite(table.to_numpy()).all()
    # the blob of the test volumes is an ellipsoid of semi-axes 4 x 3.5 x 2 voxels
    volume = table["preop__rad_original_shape_VoxelVolume"]
    assert volume.between(0.6 * 4 / 3 * np.pi * 3.0 * 2.8 * 5.0, 1.4 * 4 / 3 * np.pi * 3.0 * 2.8 * 5.0).all()


@pytest.fixture(scope="module")
def synthetic_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omics_risk.data.synthetic import generate_cohort

    return generate_cohort(
        "nsclc-postop",
        n=10,
        seed=3,
        out=tmp_path_factory.mktemp("synth") / "cohort",
        fragments_per_sample=100,
        n_metabolites=20,
        workers=1,
        progress=False,
    )


@pytest.mark.slow
def test_synthetic_cohort_defaults_measure_the_true_volume(synthetic_cohort: Path) -> None:
    """Default settings on synthetic nsclc-postop scans (tumours and surgical beds): 1118 features per scan, and the
    volume pyradiomics measures (after resampling to 2 mm) is the one the generator drew."""
    cohort = load_cohort(synthetic_cohort)
    ct = cohort.samples_of("ct").head(8)
    assert set(ct["timepoint"]) == {"preop", "postop1"}
    pairs = [(r.sample_id, cohort.path(r.path), cohort.path(r.mask_path)) for r in ct.itertuples()]
    serial = extract_radiomics(pairs, None, workers=1, progress=False)
    assert serial.failures == {}
    assert serial.features.shape == (8, 1118)
    assert np.isfinite(serial.features.to_numpy()).all()
    truth = pd.read_csv(synthetic_cohort / "truth" / "samples.csv").set_index("sample_id")
    ml = serial.features["rad_original_shape_VoxelVolume"] / 1000.0
    expected = truth.loc[ml.index, "lesion_volume_ml"]
    assert np.allclose(ml, expected, rtol=0.06), pd.concat([ml, expected], axis=1)  # resampling 3 -> 2 mm: < 5 %


@pytest.mark.slow
def test_synthetic_cohort_parallel_equals_serial(synthetic_cohort: Path, tmp_path: Path) -> None:
    serial = extract_radiomics(synthetic_cohort, FAST, workers=1, progress=False)
    parallel = extract_radiomics(load_cohort(synthetic_cohort), FAST, workers=2, cache_dir=tmp_path, progress=False)
    assert serial.failures == {} and len(serial.features) >= 10
    pd.testing.assert_frame_equal(parallel.features, serial.features)

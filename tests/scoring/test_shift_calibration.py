"""Calibration of the distribution-shift alarm (``omics_risk.scoring.shift``): a cohort from the training
distribution does not alarm, however many heavy-tailed features it has and however small the training set, while a
modality scaled or offset, a batch effect or a unit change does, naming the modality and the features.

The null distribution (beta-binomial) and Holm's adjustment are checked against independent computations: the
beta-binomial tail summed by hand from ``math.lgamma``, Holm against statsmodels, and the conservativeness of the
null by simulation."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scoring_cohorts import write_table_cohort

from omics_risk.scoring.frames import FeatureManifest
from omics_risk.scoring.shift import (
    ShiftCheck,
    check_frames,
    holm,
    outside_pvalues,
    training_ranges,
)

MODALITIES = {"cfdna": 60, "metabolomics": 80, "methylation": 60}
MANIFEST = FeatureManifest(clinical={"age": "double"},
                           modalities={m: tuple(f"t0__f{j:03d}" for j in range(k)) for m, k in MODALITIES.items()})


def _generator(n: int, seed: int) -> pd.DataFrame:
    """One cohort of a fixed 'platform' (feature shapes from seed 0) with patients drawn from ``seed``: the shapes
    of omics data: log-normal intensities, heavy-tailed (t with 3 df) ratios, zero-inflated counts with ties, a
    bounded fraction; a quarter of the patients lack each modality."""
    shape = np.random.default_rng(0)
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {"clinical/age": rng.normal(65, 8, n)}
    for m, k in MODALITIES.items():
        kinds = shape.integers(0, 4, k)
        scale = shape.lognormal(0, 1, k)
        missing = rng.random(n) < 0.25
        for j in range(k):
            kind, s = kinds[j], scale[j]
            if kind == 0:
                x = rng.lognormal(np.log(1e5), 0.6, n)
            elif kind == 1:
                x = s * rng.standard_t(3, n)
            elif kind == 2:
                x = np.where(rng.random(n) < 0.9, 0.0, rng.poisson(3 * s, n) + 1.0)
            else:
                x = rng.beta(2, 20, n)
            cols[f"{m}/t0__f{j:03d}"] = np.where(missing, np.nan, x)
    return pd.DataFrame({"patient_id": [f"S{seed}-{i}" for i in range(n)], **cols})


def _betabinom_sf(k: int, m: int, a: float, b: float) -> float:
    """P(K >= k), K ~ beta-binomial(m, a, b), summed from its pmf C(m, j) B(j + a, m - j + b) / B(a, b)."""
    def log_beta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)
    return sum(math.comb(m, j) * math.exp(log_beta(j + a, m - j + b) - log_beta(a, b)) for j in range(k, m + 1))


def test_the_null_is_the_beta_binomial_of_the_training_tail_counts() -> None:
    # k of m scored patients beyond a band that a of n training patients lay beyond: BetaBinomial(m, a + 2, n - a - 1)
    cases = [(3, 4, 4, 191), (1, 20, 0, 300), (20, 164, 6, 235), (0, 10, 2, 50), (5, 5, 0, 9)]
    got = outside_pvalues(*(np.array(c) for c in zip(*cases, strict=True)))
    want = [_betabinom_sf(k, m, a + 2, n - a - 1) if k > 0 else 1.0 for k, m, a, n in cases]
    np.testing.assert_allclose(got, want, rtol=1e-7)
    assert got[0] == pytest.approx(0.000180, abs=5e-7)  # the value test_shift.py's message shows


def test_the_null_is_conservative_for_continuous_and_tied_features() -> None:
    """Simulated: training n = 30, scored m = 20 from the same distribution; P(p <= level) <= level."""
    rng = np.random.default_rng(1)
    for draw in (lambda size: rng.standard_t(2, size), lambda size: np.floor(rng.exponential(1.0, size))):
        p = []
        for _ in range(1500):
            train, new = draw(30), draw(20)
            lo, hi = np.quantile(train, [0.01, 0.99])
            a = int(((train < lo) | (train > hi)).sum())
            k = int(((new < lo) | (new > hi)).sum())
            p.append(outside_pvalues(k, 20, a, 30))
        p = np.array(p)
        for level in (0.01, 0.05, 0.2):
            assert (p <= level).mean() <= level + 2 * math.sqrt(level / len(p)), level


def test_holm_matches_statsmodels() -> None:
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5, 0.0])
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, 0.005])), [0.03, 0.06, 0.06, 0.02])
    assert holm(np.array([])).size == 0


@pytest.mark.parametrize("seed", [8, 9, 10, 11])
def test_a_fresh_cohort_from_the_training_distribution_does_not_alarm(seed: int) -> None:
    ranges = training_ranges(_generator(300, 7), MANIFEST)
    report = check_frames([_generator(200, seed)], ranges)
    # values outside the training range there are, as chance gives them (what used to be listed as a shift) ...
    assert len(report.shifted) > 10 and report.patients_far > 5
    # ... but no verdict of shift, one calm line, and the report says how many were expected
    assert report.detected == []
    lines = report.messages()
    assert len(lines) == 1 and lines[0].startswith("no distribution shift detected: ")
    s = report.summary()
    assert s["features_shifted"] == 0 and s["values_outside"] <= s["values_outside_expected"]
    assert s["shifted_by_modality"]["metabolomics"] == [0, 80]


def test_a_small_training_set_widens_the_tolerance() -> None:
    """With 25 training patients a new patient lies beyond the training range in ~8% of features by chance."""
    ranges = training_ranges(_generator(25, 7), MANIFEST)
    for seed in (8, 9):
        report = check_frames([_generator(200, seed)], ranges)
        assert report.detected == [] and report.summary()["values_outside"] > 500


def _scaled(frame: pd.DataFrame, modality: str, factor: float = 1.0, offset_sd: float = 0.0) -> pd.DataFrame:
    out = frame.copy()
    cols = [c for c in out.columns if c.startswith(modality + "/")]
    out[cols] = out[cols] * factor + offset_sd * out[cols].std().to_numpy()
    return out


@pytest.mark.parametrize("change", ["scaled x2", "offset 2 SD", "batch effect"])
def test_a_shifted_modality_alarms_naming_it_and_its_features(change: str) -> None:
    ranges = training_ranges(_generator(300, 7), MANIFEST)
    fresh = _generator(200, 8)
    if change == "scaled x2":  # another detector gain
        shifted = _scaled(fresh, "metabolomics", factor=2.0)
    elif change == "offset 2 SD":
        shifted = _scaled(fresh, "metabolomics", offset_sd=2.0)
    else:  # one run of another lab: every feature of the modality moved by its own offset of about 0.7 SD
        shifted = fresh.copy()
        cols = [c for c in shifted.columns if c.startswith("metabolomics/")]
        offsets = np.random.default_rng(5).normal(0, 0.7, len(cols)) * shifted[cols].std().to_numpy()
        shifted[cols] = shifted[cols] + offsets
    report = check_frames([shifted], ranges)
    detected = report.detected
    assert len(detected) >= 10 and {c.split("/")[0] for c in detected} == {"metabolomics"}
    lines = report.messages()
    assert lines[0].startswith(f"distribution shift in {len(detected)} feature(s), by modality "
                               f"metabolomics ({len(detected)}): ")
    assert lines[1].startswith(f"  {detected[0]}: ") and len(lines) == 7  # the worst 5, then "... and N more"
    assert lines[-1].startswith(f"  ... and {len(detected) - 5} more feature(s)")
    assert report.summary()["shifted_by_modality"]["metabolomics"] == [len(detected), 80]


def test_a_unit_change_in_one_column_alarms_even_in_a_small_cohort() -> None:
    """Age in months: 19 times the training p01-p99 width beyond it, implausible whatever the cohort's size."""
    ranges = training_ranges(_generator(300, 7), MANIFEST)
    fresh = _generator(12, 8)
    fresh["clinical/age"] *= 12  # age in months
    report = check_frames([fresh], ranges)
    assert report.detected == ["clinical/age"]
    assert report.messages()[1].startswith("  clinical/age: 12 of 12 patient(s) far outside the training range (12 "
                                           "implausibly far)")


def test_ranges_stored_before_the_tail_counts_still_check() -> None:
    """A model logged by an earlier version has no ``tails``: the counts the percentiles allow are assumed."""
    ranges = training_ranges(_generator(300, 7), MANIFEST)
    old = {"quantiles": ranges["quantiles"], "columns": ranges["columns"]}
    assert ShiftCheck(old).tails["clinical/age"] == [3, 3, 0]  # ceil(299 x 0.01), 299 - floor(299 x 0.99)
    assert check_frames([_generator(200, 8)], old).detected == []
    assert check_frames([_scaled(_generator(200, 8), "cfdna", factor=3.0)], old).detected


# ------------------------------------------------------------------------------------------------ omics-risk score
def _score(table_model: SimpleNamespace, root: Path, out: Path) -> tuple[object, list[str]]:
    from omics_risk.workflows.scoring import score_cohort

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = score_cohort(table_model.batch, root, out, progress=False, workers=1)
    return res, [str(w.message) for w in caught]


def test_scoring_a_fresh_cohort_is_quiet_and_a_shifted_one_warns(table_model: SimpleNamespace,
                                                                 tmp_path: Path) -> None:
    root = write_table_cohort(tmp_path / "fresh", n=40, seed=9)
    res, said = _score(table_model, root, tmp_path / "fresh.parquet")
    assert not [w for w in said if "distribution shift" in w]
    assert res.shift is not None and res.shift.detected == []
    report = json.loads(res.report_path.read_text())["shift"]
    assert report["summary"]["features_shifted"] == 0 and report["shifted_features"] == []

    table = pd.read_csv(root / "rppa" / "rppa.csv")
    table[["AKT", "EGFR"]] = table[["AKT", "EGFR"]] * 2.0 + 2.5  # another assay kit: the training values are N(0, 1)
    table.to_csv(root / "rppa" / "rppa.csv", index=False)
    res, said = _score(table_model, root, tmp_path / "shifted.parquet")
    assert sorted(res.shift.detected) == ["rppa/baseline__AKT", "rppa/baseline__EGFR"]
    alarm = [w for w in said if w.startswith("distribution shift")]
    assert len(alarm) == 1 and "by modality rppa (2)" in alarm[0] and "rppa/baseline__AKT" in alarm[0]
    assert "distribution shift in 2 feature(s)" in res.to_text()
    report = json.loads(res.report_path.read_text())["shift"]
    assert {r["column"] for r in report["shifted_features"]} == {"rppa/baseline__AKT", "rppa/baseline__EGFR"}

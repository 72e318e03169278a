"""ctDNA features: exact per-sample summaries and detection rules, causal longitudinal dynamics on a hand-made
series, and molecular progression ahead of radiological progression on the synthetic nsclc-advanced cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from one_broken import assert_only_sample_failed, clean_and_broken

from omics_risk.data.contract import load_cohort
from omics_risk.data.readers import read_variant_table
from omics_risk.data.synthetic import generate_cohort
from omics_risk.features.ctdna import (
    CtdnaExtractor,
    DetectionRule,
    ctdna_dynamics,
    ctdna_trajectory,
    read_dynamics,
    sample_summaries,
)

SYNTH = {"fragments_per_sample": 200, "n_metabolites": 20, "ct_shape": (8, 8, 8), "workers": 1, "progress": False}


def _table(rows: list[tuple[str, str, float, float, int, int | None]]) -> pd.DataFrame:
    """(patient, sample, day, vaf, depth, alt) rows; variants are numbered within each sample."""
    df = pd.DataFrame(rows, columns=["patient_id", "sample_id", "day", "vaf", "depth", "alt_count"])
    df.insert(3, "gene", "TP53")
    df.insert(4, "variant", [f"v{i}" for i in df.groupby("sample_id").cumcount()])
    df["alt_count"] = df["alt_count"].astype("Int64")
    return df


def test_sample_summaries_exact_values_and_positivity_rule() -> None:
    t = _table(
        [
            ("P1", "S1", 0, 0.010, 1000, 10),
            ("P1", "S1", 0, 0.002, 1000, 2),
            ("P1", "S1", 0, 0.000, 1000, 0),
            # two detected at low VAF -> positive
            ("P2", "S2", 0, 0.0006, 5000, 3),
            ("P2", "S2", 0, 0.0008, 5000, 4),
            # one detected, below 5 x LOD -> negative; one detected at >= 5 x LOD -> positive
            ("P3", "S3", 0, 0.0010, 3000, 3),
            ("P3", "S3", 0, 0.0, 3000, 0),
            ("P4", "S4", 0, 0.0030, 2000, 6),
            ("P4", "S4", 0, 0.0, 2000, 0),
        ]
    )
    s = sample_summaries(t)
    assert s.loc["S1", "n_variants"] == 3 and s.loc["S1", "n_detected"] == 1  # 2 alt reads < min_alt
    assert s.loc["S1", "mean_vaf"] == pytest.approx(0.004)
    assert s.loc["S1", "max_vaf"] == pytest.approx(0.010)
    assert s.loc["S1", "median_vaf"] == pytest.approx(0.002)
    assert s.loc["S1", "pooled_vaf"] == pytest.approx(12 / 3000)
    assert s.loc["S1", "mean_mutant_molecules"] == pytest.approx(4.0)
    assert s.loc["S1", "log10_mean_vaf"] == pytest.approx(np.log10(0.004))
    assert s["positive"].to_dict() == {"S1": 1.0, "S2": 1.0, "S3": 0.0, "S4": 1.0}
    # Without alt counts, detection falls back to VAF >= LOD (5e-4): S3's 0.1 % variant counts.
    no_alt = sample_summaries(t.drop(columns="alt_count"))
    assert no_alt.loc["S3", "n_detected"] == 1 and no_alt.loc["S2", "n_detected"] == 2
    assert no_alt.loc["S1", "mean_mutant_molecules"] == pytest.approx(4.0)
    # The floor keeps log10 finite for an all-zero sample; excluded genes are dropped first.
    zero = sample_summaries(_table([("P9", "S9", 0, 0.0, 1000, 0)]), DetectionRule(vaf_floor=1e-5))
    assert zero.loc["S9", "log10_mean_vaf"] == pytest.approx(-5.0)
    assert sample_summaries(t, DetectionRule(exclude_genes=["TP53"])).empty


def test_extractor_on_the_tiny_cohort(make_valid_cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cohort = load_cohort(make_valid_cohort(tmp_path / "c", with_bam=False))
    samples = cohort.samples_of("ctdna")
    res = CtdnaExtractor().extract_shared(cohort, samples)
    assert not res.failures
    assert sorted(res.features.index) == sorted(samples["sample_id"])
    expected = sample_summaries(read_variant_table(cohort.path("ctdna/variants.csv")))
    np.testing.assert_allclose(res.features["ctdna_mean_vaf"], expected.loc[res.features.index, "mean_vaf"])
    assert "ctdna_positive" in res.features and "ctdna_day" not in res.features
    # A sample missing from the table, and one the table gives to another patient, fail with a reason.
    extra = samples.iloc[[0, 1]].copy()
    extra.iloc[0, extra.columns.get_loc("sample_id")] = "P01-ctdna-absent"
    extra.iloc[1, extra.columns.get_loc("patient_id")] = "P06"
    res = CtdnaExtractor().extract_shared(cohort, extra)
    assert "no rows" in res.failures["P01-ctdna-absent"]
    assert "patient 'P02'" in res.failures[extra.iloc[1]["sample_id"]]
    assert res.features.empty


def _variants(root: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = root / "ctdna" / "variants.csv"
    edit(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)


def _cell(df: pd.DataFrame, row: int, col: str, value: str) -> pd.DataFrame:
    df.loc[row, col] = value
    return df


BROKEN_VARIANTS = {
    # (the broken sample, how, what its reason must say); rows 0-2 are P01's, 3-5 P02's, 6-8 P03's, 9-11 P04's
    "unreadable vaf": ("P03-ctdna-postop1", lambda t: _cell(t, 6, "vaf", "abc"),
                       "ctdna: ctdna/variants.csv:8 [vaf]: vaf must be a number, got 'abc' (a fraction in [0, 1]"),
    "variant rows missing": ("P02-ctdna-postop1", lambda t: t[t["sample_id"] != "P02-ctdna-postop1"],
                             "ctdna: no rows for this sample in ctdna/variants.csv"),
    "duplicated variant": ("P04-ctdna-postop1", lambda t: pd.concat([t, t.iloc[[10]]]),
                           "ctdna: ctdna/variants.csv:17 [variant]: duplicate variant of a sample (sample_id="
                           "P04-ctdna-postop1, gene=TP53, variant=R273H); first seen on line 12"),
    "two patients": ("P01-ctdna-postop1", lambda t: _cell(t, 1, "patient_id", "P02"),
                     "ctdna: ctdna/variants.csv:3 [patient_id]: sample 'P01-ctdna-postop1' is given to two patients"),
}


@pytest.mark.parametrize("case", list(BROKEN_VARIANTS))
def test_one_broken_sample_fails_only_itself(make_valid_cohort, tmp_path: Path, case: str) -> None:  # type: ignore[no-untyped-def]
    sid, edit, reason = BROKEN_VARIANTS[case]
    clean, broken, summary = clean_and_broken(make_valid_cohort, tmp_path, "ctdna", lambda r: _variants(r, edit))
    assert_only_sample_failed(clean, broken, "ctdna", sid, (reason,))
    assert summary.modalities["ctdna"]["ok"] == 4


def test_a_bad_parquet_row_fails_only_its_sample(make_valid_cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Parquet has no lines: the reader locates 'row N', and so does the reason."""
    root = make_valid_cohort(tmp_path / "c")
    clean = CtdnaExtractor().extract_shared(load_cohort(root), load_cohort(root).samples_of("ctdna")).features
    table = pd.read_csv(root / "ctdna/variants.csv")
    table.loc[7, "vaf"] = 1.5  # P03's second variant
    table.to_parquet(root / "ctdna/variants.parquet", index=False)
    samples = root / "samples.csv"
    samples.write_text(samples.read_text().replace("ctdna/variants.csv", "ctdna/variants.parquet"))
    cohort = load_cohort(root)
    res = CtdnaExtractor().extract_shared(cohort, cohort.samples_of("ctdna"))
    assert list(res.failures) == ["P03-ctdna-postop1"]
    assert res.failures["P03-ctdna-postop1"].startswith("ctdna/variants.parquet row 8 [vaf]: vaf must be <= 1, got")
    pd.testing.assert_frame_equal(res.features, clean.drop(index="P03-ctdna-postop1"), check_exact=True)


def test_an_unusable_second_variant_table_fails_only_its_samples(make_valid_cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def split(root: Path) -> None:
        table = pd.read_csv(root / "ctdna/variants.csv", dtype=str)
        mine = table["sample_id"] == "P05-ctdna-postop1"
        table[~mine].to_csv(root / "ctdna/variants.csv", index=False)
        table[mine].drop(columns=["depth"]).to_csv(root / "ctdna/variants_b.csv", index=False)
        samples = root / "samples.csv"
        samples.write_text(samples.read_text().replace("P05,P05-ctdna-postop1,ctdna,postop1,33,ctdna/variants.csv",
                                                       "P05,P05-ctdna-postop1,ctdna,postop1,33,ctdna/variants_b.csv"))

    clean, broken, _ = clean_and_broken(make_valid_cohort, tmp_path, "ctdna", split)
    assert_only_sample_failed(clean, broken, "ctdna", "P05-ctdna-postop1",
                              ("ctdna/variants_b.csv:1 [depth]: required column 'depth' is missing",))


def test_depth_is_optional_and_detection_falls_back_to_the_vaf_limit(tmp_path: Path) -> None:
    """A VAF-only report (no depth column, accepted with depth_optional=True as monitoring reads it): detection by
    VAF >= lod_vaf; pooled VAF cannot be computed."""
    path = tmp_path / "v.csv"
    path.write_text("patient_id,sample_id,day,gene,variant,vaf\n"
                    "A,A1,0,TP53,p.R175H,0.002\nA,A1,0,KRAS,p.G12C,0.0006\n"
                    "A,A2,21,TP53,p.R175H,0.0004\nA,A2,21,KRAS,p.G12C,0.0001\n")
    with pytest.raises(ValueError, match="required column 'depth' is missing"):
        read_variant_table(path)  # the contract's reader (extract, validate) still requires it
    table = read_variant_table(path, depth_optional=True)
    assert table["depth"].isna().all()
    s = sample_summaries(table, DetectionRule(lod_vaf=5e-4, min_detected=2, strong_factor=5.0))
    assert s.loc["A1", "n_detected"] == 2 and s.loc["A1", "positive"] == 1
    assert s.loc["A2", "n_detected"] == 0 and s.loc["A2", "positive"] == 0
    assert s["pooled_vaf"].isna().all() and s.loc["A1", "max_vaf"] == 0.002
    t = ctdna_trajectory(s, level="max_vaf")
    assert t["level"].tolist() == [0.002, 0.0004]
    s["reported_level"] = [0.01, 0.03]  # a per-draw level column a report gives
    t = ctdna_trajectory(s, level="reported_level", progression_fold=2.0)
    assert t["ratio_to_baseline"].tolist() == pytest.approx([1.0, 3.0])
    assert t["rise"].tolist() == [0.0, 0.0]  # tripled, but the draw is negative: no rise


def test_sample_features_do_not_depend_on_other_samples() -> None:
    rng = np.random.default_rng(1)
    rows = [
        (f"P{p}", f"P{p}_c{k}", 21.0 * k, float(v), 3000, int(v * 3000))
        for p in range(4)
        for k in range(5)
        for v in rng.uniform(0, 0.01, 6)
    ]
    full = sample_summaries(_table(rows))
    alone = sample_summaries(_table([r for r in rows if r[1] == "P2_c3"]))
    pd.testing.assert_frame_equal(full.loc[["P2_c3"]], alone)


# --------------------------------------------------------------------------------------------- dynamics

#: Patient A: baseline 1 %, response, clearance at day 63, rise at day 105 (confirmed at 126), then more.
#: Patient B: never positive. Patient C: no baseline sample (first draw at day 21), then a 4-fold rise.
SERIES = [
    ("A", "A0", -3, 0.0100),
    ("A", "A1", 21, 0.0040),
    ("A", "A2", 42, 0.0010),
    ("A", "A3", 63, 0.0),
    ("A", "A4", 84, 0.0),
    ("A", "A5", 105, 0.0030),
    ("A", "A6", 126, 0.0060),
    ("A", "A7", 147, 0.0200),
    ("B", "B0", 0, 0.0),
    ("B", "B1", 21, 0.0),
    ("C", "C1", 21, 0.0050),
    ("C", "C2", 42, 0.0200),
]


def _series() -> pd.DataFrame:
    rows = []
    for p, s, d, v in SERIES:
        for _ in range(3):  # three variants at the same VAF, 10,000x
            rows.append((p, s, d, v, 10_000, round(v * 10_000)))
    return _table(rows)


def test_trajectory_and_dynamics_on_a_hand_made_series() -> None:
    tr = ctdna_trajectory(_series()).set_index("sample_id")
    assert tr.loc["A0", "is_baseline"] == 1 and tr.loc["A0", "on_treatment"] == 0
    assert tr.loc["A1", "ratio_to_baseline"] == pytest.approx(0.4) and tr.loc["A1", "response"] == 1
    assert tr.loc["A3", "positive"] == 0
    # The nadir is floored at the LOD (5e-4): 0.3 % is a 6-fold rise over it.
    assert tr.loc["A5", "nadir_before"] == pytest.approx(5e-4)
    assert tr.loc["A5", "fold_over_nadir"] == pytest.approx(6.0)
    assert tr.loc["A5", "progression_called"] == 1 and tr.loc["A7", "progression_called"] == 0
    assert np.isnan(tr.loc["B1", "response"])  # no positive baseline: response is undefined

    d = ctdna_dynamics(_series())
    a = d.loc["A"]
    assert (a["baseline_day"], a["baseline_level"], a["baseline_positive"]) == (-3, pytest.approx(0.01), 1)
    assert a["molecular_response"] == 1 and a["molecular_response_day"] == 21
    assert a["clearance"] == 1 and a["clearance_day"] == 63 and a["time_to_clearance"] == 66
    assert a["nadir_day"] == 63 and a["nadir_level"] == 0
    assert a["molecular_progression"] == 1 and a["molecular_progression_day"] == 105
    assert a["molecular_progression_called_day"] == 105
    b = d.loc["B"]
    assert b["baseline_positive"] == 0 and np.isnan(b["molecular_response"]) and np.isnan(b["clearance"])
    assert b["molecular_progression"] == 0
    c = d.loc["C"]
    # No baseline: response is undefined, but a 4-fold rise over the first draw is still progression.
    assert np.isnan(c["baseline_level"]) and np.isnan(c["molecular_response"])
    assert c["molecular_progression_day"] == 42

    confirmed = ctdna_dynamics(_series(), confirm=True).loc["A"]
    assert confirmed["molecular_progression_day"] == 105 and confirmed["molecular_progression_called_day"] == 126
    # Over the floored nadir (5e-4) the draws at 105, 126 and 147 are 6-, 12- and 40-fold: the threshold decides.
    assert ctdna_dynamics(_series(), progression_fold=10).loc["A", "molecular_progression_day"] == 126
    assert ctdna_dynamics(_series(), progression_fold=20).loc["A", "molecular_progression_day"] == 147


def test_dynamics_never_look_ahead() -> None:
    full = _series()
    for day in (21, 63, 105, 126):
        for confirm in (False, True):
            cut = ctdna_dynamics(full, as_of_day=day, confirm=confirm)
            past_only = ctdna_dynamics(full[full["day"] <= day], confirm=confirm)
            pd.testing.assert_frame_equal(cut, past_only)
            traj_full = ctdna_trajectory(full, confirm=confirm)
            traj_cut = ctdna_trajectory(full[full["day"] <= day], confirm=confirm)
            pd.testing.assert_frame_equal(traj_full[traj_full["day"] <= day].reset_index(drop=True), traj_cut)
    # At day 105 the rise is seen; with confirmation it is not called until the next sample.
    assert ctdna_dynamics(full, as_of_day=105).loc["A", "molecular_progression"] == 1
    assert ctdna_dynamics(full, as_of_day=105, confirm=True).loc["A", "molecular_progression"] == 0


# --------------------------------------------------------------------------------------------- synthetic truth


@pytest.fixture(scope="module", name="advanced")
def _advanced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cohort("nsclc-advanced", n=120, seed=7, out=tmp_path_factory.mktemp("ctdna") / "adv", **SYNTH)


@pytest.mark.slow
def test_molecular_progression_precedes_radiological_progression(advanced: Path) -> None:
    cohort = load_cohort(advanced)
    dyn = read_dynamics(cohort)
    truth = pd.read_csv(advanced / "truth" / "patients.csv").set_index("patient_id")
    clin = cohort.clinical.set_index("patient_id")
    df = dyn.join(truth[["molecular_progression_day", "radiological_progression_seen"]].add_prefix("true_"))
    df = df.join(clin[["pfs_time", "pfs_event"]])

    # Among radiological progressions with molecular progression, ctDNA came first, by a positive median lead.
    prog = df[
        (df["pfs_event"] == 1) & (df["true_radiological_progression_seen"] == 1) & (df["molecular_progression"] == 1)
    ]
    lead = prog["pfs_time"] - prog["molecular_progression_day"]
    assert len(lead) >= 20
    assert lead.median() > 14
    assert (lead > 0).mean() >= 0.8

    # Against the truth: detected at the first draw after the true molecular progression (draws every 21 days).
    both = df[(df["molecular_progression"] == 1) & df["true_molecular_progression_day"].notna()]
    delay = both["molecular_progression_day"] - both["true_molecular_progression_day"]
    assert 0 <= delay.median() <= 21
    assert (delay.abs() <= 28).mean() >= 0.6
    # Sensitivity: most patients with a draw after their true molecular progression are called.
    drawn_after = df[df["true_molecular_progression_day"] < df["last_day"]]
    assert drawn_after["molecular_progression"].mean() >= 0.7

    # Molecular response is associated with longer PFS (the trial's premise).
    evaluable = df[df["molecular_response"].notna()]
    responders = evaluable.loc[evaluable["molecular_response"] == 1, "pfs_time"].median()
    assert responders > evaluable.loc[evaluable["molecular_response"] == 0, "pfs_time"].median()


@pytest.mark.slow
def test_extractor_on_synthetic_tracks_tumour_fraction(advanced: Path) -> None:
    cohort = load_cohort(advanced)
    res = CtdnaExtractor().extract_shared(cohort, cohort.samples_of("ctdna"))
    assert not res.failures
    truth = pd.read_csv(advanced / "truth" / "samples.csv").set_index("sample_id")
    tf = truth.loc[res.features.index, "tumour_fraction"]
    assert res.features["ctdna_mean_vaf"].corr(tf, method="spearman") >= 0.85
    # Positivity: rare below the background (TF < 1e-4), near-certain above TF 0.3 %.
    assert res.features.loc[tf < 1e-4, "ctdna_positive"].mean() <= 0.03
    assert res.features.loc[tf > 3e-3, "ctdna_positive"].mean() >= 0.95

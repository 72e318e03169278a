"""Methylation features: exact pooled betas on hand-made data (1-based CpGs vs 0-based BED), exact deconvolution of
an exact mixture, and tumour fractions that track the synthetic truth."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from one_broken import assert_only_sample_failed, clean_and_broken

from omics_risk.data.contract import load_cohort
from omics_risk.data.readers import read_bismark_cov
from omics_risk.data.synthetic import generate_cohort
from omics_risk.features.base import SampleFailure
from omics_risk.features.extract import extract_cohort
from omics_risk.features.methylation import (
    MethylationExtractor,
    deconvolve,
    load_region_set,
    pool_regions,
)

SYNTH = {"fragments_per_sample": 200, "n_metabolites": 20, "ct_shape": (8, 8, 8), "workers": 1, "progress": False}


def _cov(path: Path, rows: list[tuple[str, int, int, int]]) -> Path:
    """Bismark .cov rows (chrom, 1-based position, methylated, unmethylated)."""
    lines = [f"{c}\t{p}\t{p}\t{100 * m / max(m + u, 1):.4f}\t{m}\t{u}" for c, p, m, u in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------------------------- hand-made


def test_pooled_beta_respects_bed_and_bismark_coordinates(tmp_path: Path) -> None:
    # BED [100, 200) holds the bases at 1-based positions 101..200: CpGs at 100 and 201 are outside.
    cov = read_bismark_cov(
        _cov(
            tmp_path / "a.cov",
            [
                ("chr1", 100, 50, 0),  # 0-based 99: just before the region
                ("chr1", 101, 3, 1),  # first base of the region
                ("chr1", 150, 2, 6),
                ("chr1", 200, 5, 3),  # last base of the region
                ("chr1", 201, 0, 40),  # just after
                ("chr2", 150, 7, 7),  # other chromosome, same coordinates
            ],
        )
    )
    pooled = pool_regions(
        cov, ["chr1", "chr2", "chr1", "chr3"], np.array([100, 100, 0, 0]), np.array([200, 200, 100, 10])
    )
    assert pooled["count_methylated"].tolist() == [10, 7, 50, 0]
    assert pooled["coverage"].tolist() == [20, 14, 50, 0]
    assert pooled["n_cpg"].tolist() == [3, 1, 1, 0]


def test_pooling_handles_unsorted_files_overlapping_regions_and_chr_prefixes(tmp_path: Path) -> None:
    cov = read_bismark_cov(
        _cov(
            tmp_path / "b.cov",
            [
                ("2", 30, 1, 1),
                ("1", 20, 4, 0),
                ("1", 10, 0, 4),
                ("2", 5, 9, 1),
                ("1", 15, 2, 2),
            ],
        )
    )
    # Regions use the chr prefix, the file does not; [0, 20) and [9, 15) overlap.
    pooled = pool_regions(cov, ["chr1", "chr1", "chr2"], np.array([0, 9, 0]), np.array([20, 15, 40]))
    assert pooled["count_methylated"].tolist() == [6, 2, 10]
    assert pooled["coverage"].tolist() == [12, 8, 12]
    # A brute-force check of the same rule on random data.
    rng = np.random.default_rng(3)
    pos = rng.choice(np.arange(1, 5000), 400, replace=False)
    m, u = rng.integers(0, 9, 400), rng.integers(0, 9, 400)
    cov = read_bismark_cov(
        _cov(tmp_path / "c.cov", [("chr5", int(p), int(a), int(b)) for p, a, b in zip(pos, m, u, strict=True)])
    )
    starts = rng.integers(0, 4800, 60)
    ends = starts + rng.integers(0, 300, 60)
    got = pool_regions(cov, ["5"] * 60, starts, ends)
    for k in range(60):
        inside = (pos > starts[k]) & (pos <= ends[k])
        assert got["count_methylated"][k] == m[inside].sum()
        assert got["coverage"][k] == (m + u)[inside].sum()


def test_deconvolve_recovers_an_exact_mixture() -> None:
    rng = np.random.default_rng(0)
    profiles = np.column_stack([rng.uniform(0, 0.3, 50), rng.uniform(0.5, 1, 50), rng.uniform(0, 1, 50)])
    truth = np.array([0.6, 0.3, 0.1])
    beta = profiles @ truth
    props, rmse = deconvolve(beta, profiles, rng.uniform(10, 100, 50))
    np.testing.assert_allclose(props, truth, atol=1e-9)
    assert rmse < 1e-9
    beta[:3] = np.nan  # uncovered regions are skipped
    np.testing.assert_allclose(deconvolve(beta, profiles)[0], truth, atol=1e-9)
    assert np.isnan(deconvolve(beta[:3], profiles[:3])[0]).all()  # too few regions


@pytest.fixture(name="tiny")
def _tiny(make_valid_cohort, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The tiny contract cohort plus a 4-region panel and profiles over its chr1 CpGs."""
    return load_cohort(_with_panel(make_valid_cohort(tmp_path / "cohort", with_bam=False)))


def _with_panel(root: Path) -> Path:
    """Add a 4-region panel and its profiles over the tiny cohort's chr1 CpGs to its references."""
    (root / "reference" / "panel.bed").write_text(
        "track name=panel\nchr1\t0\t5000\tmk_a\nchr1\t5000\t12000\tbg_b\nchr1\t12000\t20000\tmk_c\nchr2\t0\t100\tnone\n"
    )
    pd.DataFrame(
        {
            "region_id": ["mk_a", "bg_b", "mk_c", "none"],
            "chrom": "chr1",
            "start": [0, 5000, 12000, 0],
            "end": [5000, 12000, 20000, 100],
            "region_class": ["marker", "background", "marker", "background"],
            "n_cpg": [10, 10, 10, 0],
            "plasma": [0.1, 0.5, 0.2, 0.5],
            "tumour": [0.9, 0.5, 0.8, 0.5],
        }
    ).to_csv(root / "reference" / "profiles.csv", index=False)
    text = (root / "cohort.yaml").read_text()
    text = text.replace(
        "  chrom_sizes: reference/genome.chrom.sizes\n",
        "  chrom_sizes: reference/genome.chrom.sizes\n"
        "  methylation_regions: reference/panel.bed\n  methylation_profiles: reference/profiles.csv\n",
    )
    (root / "cohort.yaml").write_text(text)
    return root


def test_extractor_exact_features_on_the_tiny_cohort(tiny) -> None:  # type: ignore[no-untyped-def]
    sample = tiny.samples_of("methylation").iloc[0]
    cov = read_bismark_cov(tiny.path(sample["path"]))
    ext = MethylationExtractor(min_coverage=1)
    feats = ext.extract_sample(tiny, sample)
    pos = cov["start"].to_numpy()
    m = cov["count_methylated"].to_numpy()
    t = m + cov["count_unmethylated"].to_numpy()
    expected = {}
    for rid, a, b in (("mk_a", 0, 5000), ("bg_b", 5000, 12000), ("mk_c", 12000, 20000)):
        inside = (pos > a) & (pos <= b)
        expected[rid] = m[inside].sum() / t[inside].sum()
        assert feats[f"meth_{rid}"] == pytest.approx(expected[rid], rel=1e-12)
    assert np.isnan(feats["meth_none"])  # no CpG on chr2
    assert feats["meth_n_covered_regions"] == 3
    # Markers: tumour exceeds plasma by >= 0.3 (mk_a, mk_c).
    assert feats["meth_marker_mean_beta"] == pytest.approx((expected["mk_a"] + expected["mk_c"]) / 2)
    inside = ((pos > 0) & (pos <= 5000)) | ((pos > 12000) & (pos <= 20000))
    assert feats["meth_marker_pooled_beta"] == pytest.approx(m[inside].sum() / t[inside].sum())
    assert feats["meth_prop_plasma"] + feats["meth_prop_tumour"] == pytest.approx(1.0)
    assert feats["meth_tf"] == feats["meth_prop_tumour"]
    # min_coverage turns thin regions into NaN, and only marker regions are features when asked.
    thin = MethylationExtractor(min_coverage=10_000).features_from_cov(cov, *ext._panel(tiny))
    assert np.isnan(thin["meth_mk_a"]) and thin["meth_n_covered_regions"] == 0
    markers = MethylationExtractor(min_coverage=1, region_features="markers").extract_sample(tiny, sample)
    assert sorted(k for k in markers if k in ("meth_mk_a", "meth_bg_b", "meth_mk_c", "meth_none")) == [
        "meth_mk_a",
        "meth_mk_c",
    ]
    classes = MethylationExtractor(min_coverage=1, region_classes=["background"]).extract_sample(tiny, sample)
    assert "meth_bg_b" in classes and "meth_mk_a" not in classes
    # Picklable with its cache (the orchestrator ships it to worker processes).
    assert pickle.loads(pickle.dumps(ext)).extract_sample(tiny, sample) == pytest.approx(feats, nan_ok=True)


def test_extractor_failures_are_explained(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sample = tiny.samples_of("methylation").iloc[0].copy()
    with pytest.raises(SampleFailure, match="no 'other_panel' under references"):
        MethylationExtractor(regions_reference="other_panel").extract_sample(tiny, sample)
    with pytest.raises(SampleFailure, match="no panel region reaches"):
        MethylationExtractor(min_coverage=10**9).extract_sample(tiny, sample)
    with pytest.raises(SampleFailure, match="not reference profile columns"):
        MethylationExtractor(tumour_columns=["sclc"]).extract_sample(tiny, sample)
    sample["path"] = "methylation/absent.cov.gz"
    with pytest.raises(SampleFailure, match="not found"):
        MethylationExtractor().extract_sample(tiny, sample)


def test_one_broken_sample_fails_only_itself(make_valid_cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def break_p02(root: Path) -> None:  # line 3 of P02's coverage file claims 150 % methylation
        path = root / "methylation/P02_postop1.cov.gz"
        lines = gzip.decompress(path.read_bytes()).decode().splitlines()
        fields = lines[2].split("\t")
        lines[2] = "\t".join([*fields[:3], "150.0", *fields[4:]])
        path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))

    cfg = {"bismark_cov": [{"_target_": "omics_risk.features.methylation.MethylationExtractor", "min_coverage": 1}]}
    clean, broken, _ = clean_and_broken(make_valid_cohort, tmp_path, "methylation", break_p02, cfg,
                                        prepare=_with_panel)
    assert_only_sample_failed(clean, broken, "methylation", "P02-methylation-postop1",
                              ("methylation/P02_postop1.cov.gz:3 [percent]: percent must be in [0, 100], got 150",))


def test_region_ids_default_to_coordinates_without_a_name_column(tmp_path: Path) -> None:
    bed = tmp_path / "r.bed"
    bed.write_text("chr1\t10\t20\nchr1\t30\t40\n")
    panel = load_region_set(bed)
    assert panel.ids.tolist() == ["chr1_10_20", "chr1_30_40"] and panel.profiles is None


def test_orchestrator_runs_the_extractor(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = {"bismark_cov": [{"_target_": "omics_risk.features.methylation.MethylationExtractor", "min_coverage": 1}]}
    summary = extract_cohort(
        tiny.root, tmp_path / "feats", config=cfg, modalities=["methylation"], workers=1, progress=False
    )
    table = pd.read_parquet(tmp_path / "feats" / "methylation.parquet")
    assert summary.modalities["methylation"]["ok"] == 3
    assert sorted(table.index) == ["P01", "P02", "P04"]
    assert "postop1__meth_tf" in table.columns


# --------------------------------------------------------------------------------------------- synthetic truth


def _tf_table(root: Path) -> pd.DataFrame:
    cohort = load_cohort(root)
    ext = MethylationExtractor()
    rows = {r["sample_id"]: ext.extract_sample(cohort, r) for _, r in cohort.samples_of("methylation").iterrows()}
    feats = pd.DataFrame.from_dict(rows, orient="index")
    truth = pd.read_csv(root / "truth" / "samples.csv").set_index("sample_id")
    return feats.join(truth["tumour_fraction"])


@pytest.fixture(scope="module", name="sclc")
def _sclc(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    root = generate_cohort("sclc", n=40, seed=5, out=tmp_path_factory.mktemp("meth") / "sclc", **SYNTH)
    return _tf_table(root)


@pytest.mark.slow
def test_tumour_fraction_tracks_truth_on_sclc(sclc: pd.DataFrame) -> None:
    high = sclc[sclc["tumour_fraction"] >= 0.03]
    assert len(high) >= 30
    assert np.corrcoef(high["meth_tf"], high["tumour_fraction"])[0, 1] >= 0.9
    assert np.corrcoef(high["meth_tf_markers"], high["tumour_fraction"])[0, 1] >= 0.9
    assert sclc["meth_tf"].corr(sclc["tumour_fraction"], method="spearman") >= 0.9
    # Not biased by more than a fifth at high tumour fractions (some patients lack some markers).
    ratio = (high["meth_tf"] / high["tumour_fraction"]).median()
    assert 0.8 <= ratio <= 1.1
    # Every marker-hypermethylated region is covered at the synthetic depth.
    assert (sclc["meth_frac_covered_regions"] > 0.95).all()


@pytest.mark.slow
def test_tumour_fraction_at_mrd_levels_on_nsclc_postop(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = generate_cohort("nsclc-postop", n=60, seed=2, out=tmp_path_factory.mktemp("meth") / "postop", **SYNTH)
    df = _tf_table(root)
    assert np.corrcoef(df["meth_tf"], df["tumour_fraction"])[0, 1] >= 0.9
    # Below the assay's limit (1e-3), estimates stay at background; above 1 %, they are within a factor 1.5.
    assert (df.loc[df["tumour_fraction"] < 1e-4, "meth_tf"] < 0.01).all()
    high = df[df["tumour_fraction"] >= 0.01]
    assert len(high) >= 3
    assert ((high["meth_tf"] / high["tumour_fraction"]).between(1 / 1.5, 1.5)).all()

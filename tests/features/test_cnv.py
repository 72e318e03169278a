"""Copy-number segment features: exact length-weighted bin, arm and gene means and alteration summaries on
hand-made segments, and the real TCGA LUSC segments (501 tumours; 3q gain and 3p loss, the squamous hallmark)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from one_broken import assert_only_sample_failed, clean_and_broken

from omics_risk.data.contract import load_cohort
from omics_risk.features.cnv import (
    ACROCENTRIC,
    CENTROMERES,
    CHROM_SIZES,
    CnSegmentsExtractor,
    arm_regions,
    bin_regions,
    canonical_chrom,
)

SHARED = Path(os.environ.get("OMICS_RISK_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
TCGA_SRC = SHARED / "data" / "tcga_lusc"

#: (sample, chrom, 1-based start, inclusive end, log2 ratio).
SEGMENTS = [
    ("S1", "chr1", 1, 9_000, 1.0),
    ("S1", "chr1", 9_001, 20_000, -1.0),
    ("S1", "chr2", 1_001, 5_000, 0.1),  # chr2 [1000, 5000) covered; [0, 1000) and [5000, 12000) are not
    ("S1", "chr2", 5_001, 12_000, -0.5),
    ("S1", "chrX", 1, 5_000, 2.0),  # left out unless include_sex_chroms
    ("S2", "1", 1, 20_000, 0.0),  # Ensembl/TCGA names match UCSC ones
    ("S2", "2", 1, 12_000, 0.3),
]


def _cohort(root: Path, segments: list[tuple] = SEGMENTS, extra_yaml: str = "", gene_bed: str | None = None):  # type: ignore[no-untyped-def]
    root.mkdir(parents=True)
    samples = [*sorted({s[0] for s in segments}), "S3"]
    (root / "cohort.yaml").write_text(
        "contract_version: 1\nname: cn\ntime_unit: days\nendpoints:\n  os: {type: survival, time: t, event: e}\n"
        "modalities:\n  cnv: {format: cn_segments}\nreferences:\n  chrom_sizes: ref/sizes.txt\n" + extra_yaml
    )
    (root / "clinical.csv").write_text("patient_id,t,e\n" + "".join(f"{s},100,1\n" for s in samples))
    (root / "samples.csv").write_text(
        "patient_id,sample_id,modality,timepoint,day,path\n"
        + "".join(f"{s},{s},cnv,dx,0,cnv/seg.csv\n" for s in samples)
    )
    (root / "cnv").mkdir()
    pd.DataFrame(segments, columns=["sample_id", "chrom", "start", "end", "segment_mean"]).to_csv(
        root / "cnv" / "seg.csv", index=False
    )
    (root / "ref").mkdir()
    (root / "ref" / "sizes.txt").write_text("chr1\t20000\nchr2\t12000\nchrX\t5000\n")
    if gene_bed is not None:
        (root / "ref" / "genes.bed").write_text(gene_bed)
    return load_cohort(root)


def test_bin_means_and_summaries_are_exact(tmp_path: Path) -> None:
    cohort = _cohort(tmp_path / "c")
    res = CnSegmentsExtractor(bin_size=10_000).extract_shared(cohort, cohort.samples_of("cnv"))
    f = res.features
    assert res.failures == {"S3": "no segments for this sample in cnv/seg.csv (outside the sex chromosomes)"}
    # chr1 [0, 10000): 9000 bp at 1.0 and 1000 bp at -1.0.
    assert f.loc["S1", "cnbin_1_0"] == pytest.approx(0.8)
    assert f.loc["S1", "cnbin_1_10000"] == pytest.approx(-1.0)
    # chr2 [0, 10000): only [1000, 10000) covered: 4000 bp at 0.1, 5000 bp at -0.5.
    assert f.loc["S1", "cnbin_2_0"] == pytest.approx((4000 * 0.1 + 5000 * -0.5) / 9000)
    assert f.loc["S1", "cnbin_2_10000"] == pytest.approx(-0.5)  # last bin is [10000, 12000)
    assert f.loc["S2", "cnbin_1_10000"] == 0.0 and f.loc["S2", "cnbin_2_0"] == pytest.approx(0.3)
    assert not any(c.startswith("cnbin_X") for c in f.columns)
    # Summaries over the 31,000 segmented bp (X excluded): |log2| > 0.2 on chr1 (20,000) and [5000, 12000).
    assert f.loc["S1", "cn_fga"] == pytest.approx(27_000 / 31_000)
    assert f.loc["S1", "cn_frac_gain"] == pytest.approx(9_000 / 31_000)
    assert f.loc["S1", "cn_frac_loss"] == pytest.approx(18_000 / 31_000)
    assert (f.loc["S1", "cn_n_gain_segments"], f.loc["S1", "cn_n_loss_segments"], f.loc["S1", "cn_n_segments"]) == (
        1,
        2,
        4,
    )
    assert f.loc["S1", "cn_mean_abs_log2"] == pytest.approx((9000 + 11000 + 400 + 3500) / 31_000)
    assert f.loc["S2", "cn_fga"] == pytest.approx(12_000 / 32_000)
    with_x = (
        CnSegmentsExtractor(bin_size=10_000, include_sex_chroms=True)
        .extract_shared(cohort, cohort.samples_of("cnv"))
        .features
    )
    assert with_x.loc["S1", "cnbin_X_0"] == 2.0 and np.isnan(with_x.loc["S2", "cnbin_X_0"])


def test_gene_features_from_a_bed(tmp_path: Path) -> None:
    genes = "chr1\t8500\t9500\tGENEA\nchr2\t0\t1000\tGENEB\n1\t100\t200\tGENEC\n"
    cohort = _cohort(tmp_path / "c", extra_yaml="  genes: ref/genes.bed\n", gene_bed=genes)
    f = CnSegmentsExtractor(bin_size=None, gene_bed="genes").extract_shared(cohort, cohort.samples_of("cnv")).features
    assert f.loc["S1", "cngene_GENEA"] == pytest.approx(0.0)  # 500 bp at 1.0 and 500 bp at -1.0
    assert np.isnan(f.loc["S1", "cngene_GENEB"])  # no segment there
    assert f.loc["S1", "cngene_GENEC"] == 1.0
    assert not any(c.startswith("cnbin_") for c in f.columns)
    # A path relative to the cohort works too, and is reported as a reference for provenance.
    ext = CnSegmentsExtractor(bin_size=None, gene_bed="ref/genes.bed")
    assert ext.references(cohort)["gene_bed"] == cohort.path("ref/genes.bed")


def test_arm_features_use_the_centromere_table(tmp_path: Path) -> None:
    cen_start, cen_end = CENTROMERES["hg19"]["3"]
    length = CHROM_SIZES["hg19"]["3"]
    segs = [
        ("T1", "3", 1, 60_000_000, -0.6),
        ("T1", "3", 60_000_001, cen_start, -0.2),
        ("T1", "3", cen_end + 1, length, 0.7),
        ("T1", "13", 20_000_001, 60_000_000, 0.5),
    ]
    cohort = _cohort(tmp_path / "c", segs)
    (tmp_path / "c" / "ref" / "sizes.txt").unlink()
    text = (tmp_path / "c" / "cohort.yaml").read_text().replace("references:\n  chrom_sizes: ref/sizes.txt\n", "")
    (tmp_path / "c" / "cohort.yaml").write_text(text)
    cohort = load_cohort(tmp_path / "c")
    f = (
        CnSegmentsExtractor(bin_size=None, arms=True, genome="hg19")
        .extract_shared(cohort, cohort.samples_of("cnv"))
        .features
    )
    assert f.loc["T1", "cnarm_3p"] == pytest.approx((60e6 * -0.6 + (cen_start - 60e6) * -0.2) / cen_start)
    assert f.loc["T1", "cnarm_3q"] == pytest.approx(0.7)
    assert f.loc["T1", "cnarm_13q"] == pytest.approx(0.5)
    assert "cnarm_13p" not in f.columns and np.isnan(f.loc["T1", "cnarm_1p"])
    arms = arm_regions("hg38")
    assert len(arms) == 43 and arms.set_index("name").loc["1q", "end"] == CHROM_SIZES["hg38"]["1"]
    assert len(arm_regions("hg19", [str(i) for i in range(1, 23)])) == 39  # 44 autosome arms less 5 acrocentric p
    # Without chrom_sizes in the cohort, bins follow the genome's chromosome lengths.
    b = bin_regions(CHROM_SIZES["hg19"], 10_000_000, ["3"])
    assert b["end"].iloc[-1] == length and len(b) == 20


def test_boundary_overlaps_are_trimmed_and_real_overlaps_fail(tmp_path: Path) -> None:
    segs = [
        ("A", "1", 1, 10_000, 1.0),
        ("A", "1", 10_000, 20_000, 0.0),  # share base 10,000 (TCGA style)
        ("B", "1", 1, 15_000, 1.0),
        ("B", "1", 5_000, 20_000, 0.0),
    ]  # overlap 10 kb
    cohort = _cohort(tmp_path / "c", segs)
    res = CnSegmentsExtractor(bin_size=10_000).extract_shared(cohort, cohort.samples_of("cnv"))
    assert res.features.loc["A", "cnbin_1_0"] == 1.0 and res.features.loc["A", "cnbin_1_10000"] == 0.0
    assert res.features.loc["A", "cn_n_segments"] == 2
    assert "overlapping segments" in res.failures["B"] and "B" not in res.features.index


def test_one_broken_sample_fails_only_itself(make_valid_cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def break_p02(root: Path) -> None:  # P02's second segment ends before it starts (rows: P01 0-2, P02 3-5)
        seg = pd.read_csv(root / "cnv/segments.csv", dtype=str)
        seg.loc[4, "end"] = "5"
        seg.to_csv(root / "cnv/segments.csv", index=False)

    cfg = {"cn_segments": [{"_target_": "omics_risk.features.cnv.CnSegmentsExtractor", "bin_size": 5000}]}
    clean, broken, _ = clean_and_broken(make_valid_cohort, tmp_path, "cnv", break_p02, cfg)
    # region_means integrates every sample on one cumulative axis, so a sample's means carry the rounding of the
    # samples before it (last bits only: -0.3222999999999998 with P02 present, -0.3223 without).
    table = assert_only_sample_failed(clean, broken, "cnv", "P02-cnv-preop",
                                      ("cn_segments: cnv/segments.csv:6 [end]: end (5) must be >= start (9001)",),
                                      rtol=1e-12)
    assert list(table.index) == ["P01", "P04"] and table.shape[1] == 14  # 7 summaries, 4 + 3 bins


def test_canonical_chromosome_names() -> None:
    assert canonical_chrom(["chr1", "1", "CHR2", "23", "24", "chrX", "x", "chrM"]).tolist() == [
        "1",
        "1",
        "2",
        "X",
        "Y",
        "X",
        "X",
        "MT",
    ]


def test_tiny_contract_cohort_with_chrom_sizes(make_valid_cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cohort = load_cohort(make_valid_cohort(tmp_path / "c", with_bam=False))
    samples = cohort.samples_of("cnv")
    res = CnSegmentsExtractor().extract_shared(cohort, samples)
    assert not res.failures and len(res.features) == 3
    seg = pd.read_csv(cohort.path("cnv/segments.csv"))
    for sid, grp in seg.groupby("sample_id"):
        chr1 = grp[grp["chrom"] == "chr1"]
        expected = np.average(chr1["segment_mean"], weights=chr1["end"] - chr1["start"] + 1)
        assert res.features.loc[sid, "cnbin_1_0"] == pytest.approx(expected)  # one 10 Mb bin per 20 kb chrom
        assert res.features.loc[sid, "cnbin_2_0"] == pytest.approx(
            grp.loc[grp["chrom"] == "chr2", "segment_mean"].iloc[0]
        )


# --------------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module", name="tcga")
def _tcga(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if not TCGA_SRC.is_dir():
        pytest.skip(f"TCGA LUSC source data not found at {TCGA_SRC} (set OMICS_RISK_SHARED)")
    from omics_risk.data.convert import convert_tcga_lusc

    return load_cohort(convert_tcga_lusc(TCGA_SRC, tmp_path_factory.mktemp("tcga") / "tcga", verbose=False))


def test_tcga_lusc_segments(tcga) -> None:  # type: ignore[no-untyped-def]
    samples = tcga.samples_of("cnv")
    res = CnSegmentsExtractor(arms=True, genome="hg19").extract_shared(tcga, samples)
    f = res.features
    assert len(samples) == 501 and len(f) == 501 and not res.failures
    assert f["cn_fga"].between(0, 1).all() and f["cn_fga"].median() > 0.2
    # Squamous lung cancer: 3q (SOX2) gained and 3p lost in most tumours.
    assert (f["cnarm_3q"] > 0.1).mean() > 0.6
    assert (f["cnarm_3p"] < -0.1).mean() > 0.6
    assert f["cnarm_3q"].median() > 0.3 > f["cnarm_3p"].median() + 0.5
    # 10 Mb bins: the 22 hg19 autosomes give 300 bins; only unassayable ones are empty in every tumour: acrocentric
    # p arms and the short last bin of a chromosome ending in telomeric sequence without probes.
    bins = [c for c in f.columns if c.startswith("cnbin_")]
    assert len(bins) == 300
    sizes, cen = CHROM_SIZES["hg19"], CENTROMERES["hg19"]
    for col in (c for c in bins if f[c].isna().all()):
        chrom, start = col.split("_")[1], int(col.split("_")[2])
        assert (chrom in ACROCENTRIC and start < cen[chrom][1]) or start + 10_000_000 > sizes[chrom], col
    assert f[bins].notna().mean().mean() > 0.95


@pytest.mark.parametrize(("genome", "chrom", "expected"), [
    ("hg19", "1", (121_500_000, 128_900_000)), ("hg19", "9", (47_300_000, 50_700_000)),
    ("hg19", "X", (58_100_000, 63_000_000)), ("hg38", "1", (121_700_000, 125_100_000)),
    ("hg38", "9", (42_200_000, 45_500_000)), ("hg38", "X", (58_100_000, 63_800_000)),
    ("hg38", "Y", (10_300_000, 10_600_000)),
])
def test_centromeres_are_the_ucsc_acen_bands(genome: str, chrom: str, expected: tuple[int, int]) -> None:
    # UCSC cytoBand.txt, first p11 acen start and last q11 acen end (hg38 chrX q11.1 runs to 63.8 Mb)
    assert CENTROMERES[genome][chrom] == expected


@pytest.mark.parametrize("genome", ["hg19", "hg38"])
def test_centromeres_lie_inside_their_chromosomes(genome: str) -> None:
    for chrom, (start, end) in CENTROMERES[genome].items():
        assert 0 < start < end < CHROM_SIZES[genome][chrom], chrom

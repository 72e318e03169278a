"""Copy-number segments (TCGA / GDC style) into genomic-bin, arm and gene features.

Each sample's segments (``segment_mean`` = log2 copy ratio) are a piecewise-constant profile along the genome.
A region's value is the **length-weighted mean** of the segments overlapping it (only the covered part counts;
a region with no segment is NaN). Regions are fixed-size bins (``bin_size``), chromosome arms (``arms=True``, from
the centromere tables below) and genes (``gene_bed``). Genome-wide summaries: fraction of the segmented genome
altered (``|log2| > threshold``), gained and lost, counts of gained and lost segments, and the length-weighted mean
absolute log2 ratio.

Coordinates: segment ``start``/``end`` are 1-based and inclusive, as in GDC and TCGA segment files, so a segment
covers the 0-based half-open interval ``[start - 1, end)``; bins, arms and BED genes are 0-based half-open.
Chromosome names match with or without ``chr`` (``23``/``24`` are read as X/Y). Sex chromosomes are left out by
default (they mostly encode the patient's sex). Consecutive segments overlapping by at most ``MAX_TRIM_BP`` (TCGA
files have segments sharing their boundary base) are trimmed; a sample with larger overlaps fails. So does a sample
with bad rows in the segment file (an end before its start, an unreadable segment_mean), alone: the file's other
samples are extracted.

Everything is computed for all samples at once: every (sample, chromosome) gets its own stretch of one long
coordinate axis, so overlaps are found with a single ``searchsorted`` on cumulative integrals.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from omics_risk.data.contract import Cohort
from omics_risk.data.readers import read_bed, read_chrom_sizes, read_cn_segments
from omics_risk.features.base import ExtractionResult, Extractor
from omics_risk.features.shared_files import SharedFile, each_shared_file, read_isolating

__all__ = [
    "ACROCENTRIC",
    "CENTROMERES",
    "CHROM_SIZES",
    "CnSegmentsExtractor",
    "arm_regions",
    "bin_regions",
    "canonical_chrom",
    "region_means",
    "segment_summaries",
]

# fmt: off
#: Chromosome lengths (bp) of the UCSC hg19 and hg38 assemblies (chromInfo).
CHROM_SIZES: dict[str, dict[str, int]] = {
    "hg19": {
        "1": 249_250_621, "2": 243_199_373, "3": 198_022_430, "4": 191_154_276, "5": 180_915_260,
        "6": 171_115_067, "7": 159_138_663, "8": 146_364_022, "9": 141_213_431, "10": 135_534_747,
        "11": 135_006_516, "12": 133_851_895, "13": 115_169_878, "14": 107_349_540, "15": 102_531_392,
        "16": 90_354_753, "17": 81_195_210, "18": 78_077_248, "19": 59_128_983, "20": 63_025_520,
        "21": 48_129_895, "22": 51_304_566, "X": 155_270_560, "Y": 59_373_566,
    },
    "hg38": {
        "1": 248_956_422, "2": 242_193_529, "3": 198_295_559, "4": 190_214_555, "5": 181_538_259,
        "6": 170_805_979, "7": 159_345_973, "8": 145_138_636, "9": 138_394_717, "10": 133_797_422,
        "11": 135_086_622, "12": 133_275_309, "13": 114_364_328, "14": 107_043_718, "15": 101_991_189,
        "16": 90_338_345, "17": 83_257_441, "18": 80_373_285, "19": 58_617_616, "20": 64_444_167,
        "21": 46_709_983, "22": 50_818_468, "X": 156_040_895, "Y": 57_227_415,
    },
}
#: Centromeres as the UCSC cytoBand ``acen`` bands (start of p11.1 to end of q11), 0-based half-open. Checked
#: against the UCSC hg19 cytoBand ``acen`` rows and against scarHRD's GRCh38 centromere table (chrX q11.1 ends at
#: 63.8 Mb in hg38). tests/features/test_cnv.py pins these values.
CENTROMERES: dict[str, dict[str, tuple[int, int]]] = {
    "hg19": {
        "1": (121_500_000, 128_900_000), "2": (90_500_000, 96_800_000), "3": (87_900_000, 93_900_000),
        "4": (48_200_000, 52_700_000), "5": (46_100_000, 50_700_000), "6": (58_700_000, 63_300_000),
        "7": (58_000_000, 61_700_000), "8": (43_100_000, 48_100_000), "9": (47_300_000, 50_700_000),
        "10": (38_000_000, 42_300_000), "11": (51_600_000, 55_700_000), "12": (33_300_000, 38_200_000),
        "13": (16_300_000, 19_500_000), "14": (16_100_000, 19_100_000), "15": (15_800_000, 20_700_000),
        "16": (34_600_000, 38_600_000), "17": (22_200_000, 25_800_000), "18": (15_400_000, 19_000_000),
        "19": (24_400_000, 28_600_000), "20": (25_600_000, 29_400_000), "21": (10_900_000, 14_300_000),
        "22": (12_200_000, 17_900_000), "X": (58_100_000, 63_000_000), "Y": (11_600_000, 13_400_000),
    },
    "hg38": {
        "1": (121_700_000, 125_100_000), "2": (91_800_000, 96_000_000), "3": (87_800_000, 94_000_000),
        "4": (48_200_000, 51_800_000), "5": (46_100_000, 51_400_000), "6": (58_500_000, 62_600_000),
        "7": (58_100_000, 62_100_000), "8": (43_200_000, 47_200_000), "9": (42_200_000, 45_500_000),
        "10": (38_000_000, 41_600_000), "11": (51_000_000, 55_800_000), "12": (33_200_000, 37_800_000),
        "13": (16_500_000, 18_900_000), "14": (16_100_000, 18_200_000), "15": (17_500_000, 20_500_000),
        "16": (35_300_000, 38_400_000), "17": (22_700_000, 27_400_000), "18": (15_400_000, 21_500_000),
        "19": (24_200_000, 28_100_000), "20": (25_700_000, 30_400_000), "21": (10_900_000, 13_000_000),
        "22": (13_700_000, 17_400_000), "X": (58_100_000, 63_800_000), "Y": (10_300_000, 10_600_000),
    },
}
# fmt: on
#: Chromosomes whose p arm is satellite / rDNA without array probes or unique sequence: no p-arm feature.
ACROCENTRIC = ("13", "14", "15", "21", "22")
SEX_CHROMS = ("X", "Y")
_ALIASES = {"23": "X", "24": "Y", "M": "MT"}
#: Overlaps between consecutive segments of a sample up to this many bp are boundary conventions, trimmed.
MAX_TRIM_BP = 1_000


def canonical_chrom(names: Iterable[object]) -> np.ndarray:
    """Chromosome names without ``chr`` and with 23/24 as X/Y, so UCSC, Ensembl and TCGA names match."""
    out = []
    for n in names:
        s = str(n).strip()
        if s[:3].lower() == "chr":
            s = s[3:]
        out.append(_ALIASES.get(s.upper(), s.upper() if s.lower() in ("x", "y", "m", "mt") else s))
    return np.asarray(out, dtype=object)


def _chrom_order(chroms: Iterable[str]) -> list[str]:
    """Numeric chromosomes in numeric order, then X, Y, then anything else alphabetically."""

    def key(c: str) -> tuple[int, int, str]:
        if c.isdigit():
            return (0, int(c), "")
        if c in SEX_CHROMS:
            return (1, SEX_CHROMS.index(c), "")
        return (2, 0, c)

    return sorted(set(chroms), key=key)


def bin_regions(sizes: dict[str, int], bin_size: int, chroms: Sequence[str] | None = None) -> pd.DataFrame:
    """Fixed-size bins ``[k * bin_size, min((k + 1) * bin_size, length))`` per chromosome, named ``<chrom>_<start>``."""
    if bin_size < 1:
        raise ValueError("bin_size must be a positive number of base pairs")
    rows = []
    for c in chroms if chroms is not None else _chrom_order(sizes):
        starts = np.arange(0, sizes[c], bin_size, dtype=np.int64)
        rows.append(
            pd.DataFrame(
                {
                    "name": [f"{c}_{s}" for s in starts],
                    "chrom": c,
                    "start": starts,
                    "end": np.minimum(starts + bin_size, sizes[c]),
                }
            )
        )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["name", "chrom", "start", "end"])


def arm_regions(genome: str, chroms: Sequence[str] | None = None, sizes: dict[str, int] | None = None) -> pd.DataFrame:
    """Chromosome arms of ``genome`` (``hg19`` / ``hg38``): p = [0, centromere start), q = [centromere end, length).

    Acrocentric p arms (13p, 14p, 15p, 21p, 22p) are left out.
    """
    if genome not in CENTROMERES:
        raise ValueError(f"no centromere table for genome {genome!r}; use one of {', '.join(CENTROMERES)}")
    cen = CENTROMERES[genome]
    sizes = sizes or CHROM_SIZES[genome]
    rows = []
    for c in chroms if chroms is not None else _chrom_order(cen):
        if c not in cen or c not in sizes:
            continue
        a, b = cen[c]
        if c not in ACROCENTRIC:
            rows.append((f"{c}p", c, 0, a))
        rows.append((f"{c}q", c, b, sizes[c]))
    return pd.DataFrame(rows, columns=["name", "chrom", "start", "end"])


def region_means(segments: pd.DataFrame, regions: pd.DataFrame, samples: Sequence[str]) -> pd.DataFrame:
    """Length-weighted mean ``segment_mean`` of every sample over every region (samples x region names).

    ``segments``: sample_id, chrom (canonical), seg_start (0-based), seg_end (exclusive), segment_mean, with no
    overlapping segments within a sample. ``regions``: name, chrom (canonical), start, end (0-based half-open).
    A sample with no segment in a region gets NaN there.
    """
    samples = list(samples)
    chroms = _chrom_order(set(regions["chrom"]) | set(segments["chrom"]))
    c_idx = {c: i for i, c in enumerate(chroms)}
    # Each chromosome's stretch is as long as its longest segment or region end, so nothing spills over.
    span = (
        pd.concat(
            [
                segments.groupby("chrom", observed=True)["seg_end"].max(),
                regions.groupby("chrom", observed=True)["end"].max(),
            ]
        )
        .groupby(level=0)
        .max()
    )
    lengths = np.array([int(span.get(c, 0)) + 1 for c in chroms], dtype=np.int64)
    chrom_off = np.concatenate([[0], np.cumsum(lengths)])
    genome_len = int(chrom_off[-1])
    s_idx = {s: i for i, s in enumerate(samples)}

    seg = segments[segments["sample_id"].isin(s_idx)]
    seg_base = (
        seg["sample_id"].map(s_idx).to_numpy(np.int64) * genome_len
        + chrom_off[seg["chrom"].map(c_idx).to_numpy(np.int64)]
    )
    gs = seg_base + seg["seg_start"].to_numpy(np.int64)
    ge = seg_base + seg["seg_end"].to_numpy(np.int64)
    val = seg["segment_mean"].to_numpy(float)
    order = np.argsort(gs, kind="stable")
    gs, ge, val = gs[order], ge[order], val[order]
    seg_len = (ge - gs).astype(float)
    cum_val = np.concatenate([[0.0], np.cumsum(val * seg_len)])
    cum_len = np.concatenate([[0.0], np.cumsum(seg_len)])

    if len(gs) == 0:
        return pd.DataFrame(np.nan, index=pd.Index(samples, name="sample_id"), columns=regions["name"].to_numpy())

    def integral(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integral of the profile, and covered length, over (-inf, x) on the global axis."""
        k = np.searchsorted(gs, x, side="right") - 1  # last segment starting at or before x
        kk = np.maximum(k, 0)
        inside = np.where(k >= 0, np.clip(x - gs[kk], 0, seg_len[kk]), 0.0)
        return (np.where(k >= 0, cum_val[kk] + val[kk] * inside, 0.0), np.where(k >= 0, cum_len[kk] + inside, 0.0))

    reg_base = chrom_off[regions["chrom"].map(c_idx).to_numpy(np.int64)]
    rs = reg_base + regions["start"].to_numpy(np.int64)
    re_ = reg_base + regions["end"].to_numpy(np.int64)
    sample_base = (np.arange(len(samples), dtype=np.int64) * genome_len)[:, None]
    v1, n1 = integral((sample_base + rs[None, :]).ravel())
    v2, n2 = integral((sample_base + re_[None, :]).ravel())
    covered = n2 - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(covered > 0, (v2 - v1) / np.where(covered > 0, covered, 1.0), np.nan)
    return pd.DataFrame(
        mean.reshape(len(samples), len(regions)),
        index=pd.Index(samples, name="sample_id"),
        columns=regions["name"].to_numpy(),
    )


def segment_summaries(segments: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per-sample genome-wide summaries of (canonical, 0-based) segments; see the module docstring."""
    length = (segments["seg_end"] - segments["seg_start"]).astype(float)
    sm = segments["segment_mean"].astype(float)
    gain = sm > threshold
    loss = sm < -threshold
    work = pd.DataFrame(
        {
            "sample_id": segments["sample_id"].to_numpy(),
            "len": length.to_numpy(),
            "gain_len": (length * gain).to_numpy(),
            "loss_len": (length * loss).to_numpy(),
            "abs_len": (length * sm.abs()).to_numpy(),
            "gain": gain.to_numpy(float),
            "loss": loss.to_numpy(float),
        }
    )
    g = work.groupby("sample_id", sort=True)
    tot = g["len"].sum()
    denom = tot.where(tot > 0)
    out = pd.DataFrame(
        {
            "cn_fga": (g["gain_len"].sum() + g["loss_len"].sum()) / denom,
            "cn_frac_gain": g["gain_len"].sum() / denom,
            "cn_frac_loss": g["loss_len"].sum() / denom,
            "cn_n_gain_segments": g["gain"].sum(),
            "cn_n_loss_segments": g["loss"].sum(),
            "cn_n_segments": g.size().astype(float),
            "cn_mean_abs_log2": g["abs_len"].sum() / denom,
        }
    )
    out.index.name = "sample_id"
    return out


class CnSegmentsExtractor(Extractor):
    """Bin, arm and gene copy-number features plus genome-wide alteration summaries (``cn_*``).

    Args:
        bin_size: fixed bin width in bp (``cnbin_<chrom>_<start>`` features); ``None`` for no bins.
        arms: add chromosome-arm features (``cnarm_<chrom><p|q>``) from the ``genome``'s centromeres.
        genome: ``hg19`` or ``hg38``: chromosome lengths (unless the cohort names ``references: chrom_sizes``) and
            centromeres for arms. TCGA Firehose segments (the converted TCGA LUSC cohort) are hg19; GDC's are hg38.
        gene_bed: genes (BED: chrom, start, end, name) for ``cngene_<name>`` features: a ``references:`` name in
            cohort.yaml or a path (absolute or relative to the cohort folder).
        threshold: |log2 ratio| above which a segment counts as gained / lost (0.2 as cBioPortal's FGA).
        include_sex_chroms: keep X and Y.
    """

    name: ClassVar[str] = "cn_segments"
    formats: ClassVar[tuple[str, ...]] = ("cn_segments",)
    version: ClassVar[str] = "1"
    per_sample: ClassVar[bool] = False

    def __init__(
        self,
        bin_size: int | None = 10_000_000,
        arms: bool = False,
        genome: str = "hg38",
        gene_bed: str | None = None,
        threshold: float = 0.2,
        include_sex_chroms: bool = False,
        chrom_sizes_reference: str = "chrom_sizes",
    ):
        if genome not in CHROM_SIZES:
            raise ValueError(f"genome must be one of {', '.join(CHROM_SIZES)}, got {genome!r}")
        if bin_size is not None and int(bin_size) < 1:
            raise ValueError("bin_size must be a positive number of base pairs, or None")
        if threshold < 0:
            raise ValueError("threshold must be >= 0")
        self.bin_size = int(bin_size) if bin_size is not None else None
        self.arms = bool(arms)
        self.genome = genome
        self.gene_bed = gene_bed
        self.threshold = float(threshold)
        self.include_sex_chroms = bool(include_sex_chroms)
        self.chrom_sizes_reference = chrom_sizes_reference

    def _gene_path(self, cohort: Cohort) -> Path | None:
        if self.gene_bed is None:
            return None
        if self.gene_bed in cohort.spec.references:
            return cohort.path(cohort.spec.references[self.gene_bed])
        p = Path(self.gene_bed)
        return p if p.is_absolute() else cohort.path(self.gene_bed)

    def references(self, cohort: Cohort) -> dict[str, Path]:
        out = {}
        if self.chrom_sizes_reference in cohort.spec.references:
            out[self.chrom_sizes_reference] = cohort.path(cohort.spec.references[self.chrom_sizes_reference])
        gene = self._gene_path(cohort)
        if gene is not None:
            out["gene_bed"] = gene
        return out

    def _keep(self, chroms: Iterable[str]) -> list[str]:
        return [c for c in chroms if self.include_sex_chroms or c not in SEX_CHROMS]

    def regions(self, cohort: Cohort) -> pd.DataFrame:
        """Every feature region (name with its feature prefix, chrom, start, end) for this cohort."""
        refs = self.references(cohort)
        if self.chrom_sizes_reference in refs:
            raw = read_chrom_sizes(refs[self.chrom_sizes_reference])
            sizes = dict(zip(canonical_chrom(raw), raw.values(), strict=True))
        else:
            sizes = CHROM_SIZES[self.genome]
        parts = []
        if self.bin_size is not None:
            b = bin_regions(sizes, self.bin_size, self._keep(_chrom_order(sizes)))
            parts.append(b.assign(name="cnbin_" + b["name"]))
        if self.arms:
            a = arm_regions(self.genome, self._keep(_chrom_order(CENTROMERES[self.genome])))
            parts.append(a.assign(name="cnarm_" + a["name"]))
        gene = refs.get("gene_bed")
        if gene is not None:
            bed = read_bed(gene)
            if "name" not in bed.columns:
                raise ValueError(f"{gene}: a gene BED needs a 4th column with the gene name")
            g = pd.DataFrame(
                {
                    "name": "cngene_" + bed["name"].astype(str),
                    "chrom": canonical_chrom(bed["chrom"]),
                    "start": bed["start"].to_numpy(np.int64),
                    "end": bed["end"].to_numpy(np.int64),
                }
            )
            dup = g["name"][g["name"].duplicated()]
            if len(dup):
                raise ValueError(f"{gene}: gene '{dup.iloc[0][7:]}' appears more than once; give each gene one row")
            g = g[g["chrom"].isin(self._keep(g["chrom"]))]
            parts.append(g)
        if not parts:
            return pd.DataFrame(columns=["name", "chrom", "start", "end"])
        return pd.concat(parts, ignore_index=True)

    def extract_shared(self, cohort: Cohort, samples: pd.DataFrame) -> ExtractionResult:
        regions = self.regions(cohort)
        feats: list[pd.DataFrame] = []
        failures: dict[str, str] = {}

        def read(rel: str, group: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
            columns = cohort.spec.columns_of(str(group["modality"].iloc[0]))  # cohort.yaml's column mapping
            return read_isolating(partial(read_cn_segments, columns=columns),
                                  [SharedFile(cohort.path(rel), "copy-number segment table", "row", rel, columns)])

        for rel, group, (seg, dropped) in each_shared_file(samples, failures, read):
            seg = pd.DataFrame(
                {
                    "sample_id": seg["sample_id"].to_numpy(),
                    "chrom": canonical_chrom(seg["chrom"].astype(str)),
                    "seg_start": seg["start"].to_numpy(np.int64) - 1,
                    "seg_end": seg["end"].to_numpy(np.int64),
                    "segment_mean": seg["segment_mean"].to_numpy(float),
                }
            )
            seg["seg_start"] = seg["seg_start"].clip(lower=0)
            seg = seg[seg["chrom"].isin(self._keep(seg["chrom"].unique()))]
            wanted = list(group["sample_id"])
            present = set(seg["sample_id"])
            for sid in wanted:
                if sid in dropped:
                    failures[sid] = dropped[sid]
                elif sid not in present:
                    failures[sid] = f"no segments for this sample in {rel}" + (
                        "" if self.include_sex_chroms else " (outside the sex chromosomes)"
                    )
            ok = [s for s in wanted if s in present]
            seg = seg[seg["sample_id"].isin(set(ok))].sort_values(["sample_id", "chrom", "seg_start"], kind="stable")
            # Adjacent segments that share their boundary base (TCGA files have some) are trimmed; a real overlap
            # would count a stretch twice, so the sample fails.
            prev_end = seg.groupby(["sample_id", "chrom"], sort=False)["seg_end"].shift(1)
            small = (
                (seg["seg_start"] < prev_end)
                & (prev_end - seg["seg_start"] <= MAX_TRIM_BP)
                & (prev_end < seg["seg_end"])
            )
            seg.loc[small, "seg_start"] = prev_end[small].astype(np.int64)
            overlap = seg.loc[seg["seg_start"] < prev_end, ["sample_id", "chrom", "seg_start"]]
            for sid, sub in overlap.groupby("sample_id", sort=True):
                row = sub.iloc[0]
                failures[sid] = (
                    f"overlapping segments in {rel} (chromosome {row['chrom']} near position "
                    f"{int(row['seg_start']) + 1}); a sample's segments must not overlap"
                )
            ok = [s for s in ok if s not in failures]
            seg = seg[seg["sample_id"].isin(set(ok))]
            if not ok:
                continue
            means = region_means(seg, regions, ok) if len(regions) else pd.DataFrame(index=pd.Index(ok))
            summ = segment_summaries(seg, self.threshold).reindex(ok)
            feats.append(pd.concat([summ, means], axis=1))
        features = pd.concat(feats) if feats else pd.DataFrame()
        features.index.name = "sample_id"
        return ExtractionResult(features.astype(float), failures)

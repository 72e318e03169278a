"""cfDNA fragment files: healthy + tumour-derived fragments with realistic length, end-motif and coverage biology.

Healthy (haematopoietic) fragments have the mono-nucleosome mode at ~167 bp with a ~10 bp periodicity
below 143 bp and C-rich 5' end motifs (CCCA, CCTG, ...). Tumour-derived fragments are shorter (mode ~145 bp),
have fewer C-end motifs, and their genomic density follows the tumour's copy-number profile, so that
ichorCNA-style binned coverage, fragment-size and end-motif features all carry the tumour fraction.
Coverage also has a per-library GC bias, a fixed per-bin mappability factor and some low-MAPQ fragments.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pysam

from omics_risk.data.synthetic.genome import Genome, motif_name

LENGTHS = np.arange(40, 601)
#: End motifs most enriched at healthy cfDNA fragment ends (Jiang et al. 2020, Cancer Discov).
TOP_HEALTHY_MOTIFS = ("CCCA", "CCAG", "CCTG", "CCAA", "CCCT", "CCTC", "CCAT", "CCTT")
LOW_MAPQ_VALUES = np.array([0, 0, 0, 1, 3, 6, 9, 12, 17, 22, 27])

#: Lung-cancer arm-level copy-number priors: arm -> (P(gain), P(loss)).
NSCLC_ARM_PRIORS = {
    "1q": (0.45, 0.03), "3q": (0.50, 0.05), "5p": (0.50, 0.05), "7p": (0.40, 0.05), "7q": (0.30, 0.05),
    "8q": (0.40, 0.05), "14q": (0.25, 0.10), "20q": (0.35, 0.05), "20p": (0.30, 0.05),
    "3p": (0.03, 0.50), "8p": (0.05, 0.35), "9p": (0.03, 0.40), "13q": (0.05, 0.30), "17p": (0.03, 0.40),
    "19p": (0.05, 0.25), "18q": (0.05, 0.30), "21q": (0.05, 0.25), "6q": (0.05, 0.30),
}
SCLC_ARM_PRIORS = {
    "3q": (0.45, 0.05), "5p": (0.45, 0.05), "1q": (0.30, 0.05), "8q": (0.30, 0.05), "19q": (0.30, 0.05),
    "3p": (0.02, 0.85), "13q": (0.02, 0.70), "17p": (0.02, 0.70), "5q": (0.02, 0.45), "4q": (0.03, 0.40),
    "10q": (0.03, 0.35), "4p": (0.03, 0.35), "15q": (0.05, 0.30), "16q": (0.05, 0.30),
}
DEFAULT_ARM_PRIOR = (0.12, 0.12)


def _normal(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sd) ** 2) / sd


def length_pmfs(shift: float = 0.0, short_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Fragment-length distributions (healthy, tumour) on ``LENGTHS``.

    ``shift`` (bp) and ``short_scale`` (weight of the sub-nucleosomal component) vary between libraries
    (pre-analytics, individual biology), so the short-fragment fraction is informative but not exact.
    """
    x = LENGTHS.astype(float) - shift
    wave = 1 + 0.55 * np.cos(2 * np.pi * (x - 167) / 10.4)
    ramp = np.clip((150 - x) / 25, 0, 1)  # the periodicity is visible below ~145 bp
    periodic = 1 + ramp * (wave - 1)
    healthy = (0.62 * _normal(x, 167, 7.5) + 0.22 * _normal(x, 178, 18) + 0.12 * short_scale * _normal(x, 138, 18)
               + 0.035 * _normal(x, 334, 22) + 0.005 * _normal(x, 505, 30)) * periodic
    tumour = (0.50 * _normal(x, 145, 9) + 0.22 * _normal(x, 160, 14) + 0.22 * short_scale * _normal(x, 118, 20)
              + 0.06 * _normal(x, 320, 28)) * periodic
    return healthy / healthy.sum(), tumour / tumour.sum()


def motif_weights() -> tuple[np.ndarray, np.ndarray]:
    """Relative 5' end-motif preferences (healthy, tumour) over the 256 4-mers."""
    names = [motif_name(c) for c in range(256)]
    first_c = np.array([m[0] == "C" for m in names], float)
    second_c = np.array([m[1] == "C" for m in names], float)
    first_at = np.array([m[0] in "AT" for m in names], float)
    top = np.array([m in TOP_HEALTHY_MOTIFS for m in names], float)
    healthy = np.exp(0.9 * first_c + 0.45 * second_c + 0.8 * top)
    tumour = np.exp(0.45 * first_c + 0.25 * second_c + 0.4 * top + 0.2 * first_at)
    return healthy, tumour


@dataclass(eq=False)
class FragmentModel:
    """Per-genome sampling tables shared by every library (computed once per process)."""

    q_healthy: np.ndarray  # (2, n_bins, 256): P(motif cell | strand, bin), healthy end preferences
    q_tumour: np.ndarray
    bin_pool: np.ndarray  # candidate ends per bin (both strands): the bin's mappable size


@functools.lru_cache(maxsize=2)
def fragment_model(genome: Genome) -> FragmentModel:
    """Normalise motif preferences within each (strand, bin) so that end motifs do not change coverage."""
    counts = genome.cell_count.reshape(2, genome.n_bins, 256).astype(float)
    wh, wt = motif_weights()
    qh = counts * wh
    qt = counts * wt
    qh /= np.maximum(qh.sum(axis=2, keepdims=True), 1e-300)
    qt /= np.maximum(qt.sum(axis=2, keepdims=True), 1e-300)
    return FragmentModel(qh, qt, counts.sum(axis=(0, 2)))


def arm_copy_numbers(rng: np.random.Generator, genome: Genome, instability: float,
                     priors: dict[str, tuple[float, float]]) -> np.ndarray:
    """Integer copy number per arm of a diploid tumour; ``instability`` (~0.5-2) scales the event rates."""
    cn = np.full(len(genome.arms), 2, dtype=int)
    for k, arm in enumerate(genome.arms["arm_id"]):
        pg, pl = priors.get(arm, DEFAULT_ARM_PRIOR)
        pg, pl = min(pg * instability, 0.9), min(pl * instability, 0.9)
        u = rng.random()
        if u < pg:
            cn[k] = 3 if rng.random() < 0.75 else 4
        elif u < pg + pl:
            cn[k] = 1
    return cn


def focal_amplifications(rng: np.random.Generator, genome: Genome, rate: float) -> list[tuple[int, int]]:
    """A few single-bin high-level amplifications (MYC-, SOX2-, NKX2-1-like); returns (bin, copy number)."""
    good = np.flatnonzero(genome.bin_arm >= 0)
    k = rng.poisson(rate)
    return [(int(b), int(rng.integers(6, 12))) for b in rng.choice(good, size=k, replace=False)]


def bin_copy_numbers(genome: Genome, arm_cn: np.ndarray, focal: list[tuple[int, int]]) -> np.ndarray:
    cn = np.where(genome.bin_arm >= 0, arm_cn[np.maximum(genome.bin_arm, 0)], 2).astype(float)
    for b, c in focal:
        cn[b] = c
    return cn


def tumour_copy_number(rng: np.random.Generator, genome: Genome, instability: float,
                       priors: dict[str, tuple[float, float]],
                       focal_rate: float, patient_id: str) -> tuple[np.ndarray, list[tuple[int, int]], pd.DataFrame]:
    """A patient's tumour copy-number profile: arm-level states, focal amplifications and their truth segments."""
    arm_cn = arm_copy_numbers(rng, genome, instability, priors)
    focal = focal_amplifications(rng, genome, focal_rate)
    seg = cna_segments(genome, arm_cn, focal)
    seg.insert(0, "patient_id", patient_id)
    return arm_cn, focal, seg


def cna_segments(genome: Genome, arm_cn: np.ndarray, focal: list[tuple[int, int]]) -> pd.DataFrame:
    """Truth copy-number segments (arm level, with focal amplifications cut in)."""
    rows = []
    focal_by_arm: dict[int, list[tuple[int, int]]] = {}
    for b, c in focal:
        focal_by_arm.setdefault(int(genome.bin_arm[b]), []).append((b, c))
    for k, arm in genome.arms.iterrows():
        start = int(arm.start)
        for b, c in sorted(focal_by_arm.get(k, [])):
            bs, be = int(genome.bin_start[b]), int(genome.bin_end[b])
            if bs > start:
                rows.append((arm.chrom, start, bs, int(arm_cn[k])))
            rows.append((arm.chrom, bs, be, c))
            start = be
        if int(arm.end) > start:
            rows.append((arm.chrom, start, int(arm.end), int(arm_cn[k])))
    return pd.DataFrame(rows, columns=["chrom", "start", "end", "copy_number"])


def gc_bias(gc: np.ndarray, slope: float, curvature: float) -> np.ndarray:
    """Library-specific coverage multiplier as a smooth function of bin GC (PCR bias)."""
    z = np.nan_to_num((gc - 0.41) * 10)
    return np.exp(slope * z + curvature * z**2)


def simulate_fragments(rng: np.random.Generator, genome: Genome, n: int, tumour_fraction: float,
                       bin_cn: np.ndarray) -> pd.DataFrame:
    """Sample ``n`` fragments of one plasma library; a ``tumour_fraction`` share comes from the tumour."""
    fm = fragment_model(genome)
    n_t = int(rng.binomial(n, min(max(tumour_fraction, 0.0), 1.0)))
    n_h = n - n_t
    base = genome.bin_mappability * gc_bias(genome.bin_gc, rng.normal(0, 0.12), rng.normal(-0.06, 0.03))
    base = base * fm.bin_pool
    lh, lt = length_pmfs(rng.normal(0, 1.5), float(np.exp(rng.normal(0, 0.15))))
    parts = []
    for count, q, cn, cdf_len, is_t in ((n_h, fm.q_healthy, None, np.cumsum(lh), 0),
                                        (n_t, fm.q_tumour, bin_cn, np.cumsum(lt), 1)):
        if count == 0:
            continue
        w = base * (cn / 2.0 if cn is not None else 1.0)
        cell_w = (q * w[None, :, None]).ravel()
        cdf = np.cumsum(cell_w)
        cells = np.searchsorted(cdf, rng.random(count) * cdf[-1], side="right")
        cells = np.minimum(cells, len(cdf) - 1)
        k = genome.cell_offset[cells] + (rng.random(count) * genome.cell_count[cells]).astype(np.int64)
        pos = genome.pool_pos[k].astype(np.int64)
        minus = cells >= genome.n_bins * 256
        length = LENGTHS[np.minimum(np.searchsorted(cdf_len, rng.random(count) * cdf_len[-1]), len(LENGTHS) - 1)]
        start = np.where(minus, pos - length, pos)
        bins = (cells // 256) % genome.n_bins
        parts.append((start, start + length, minus, bins, np.full(count, is_t, dtype=np.int8)))
    start, end, minus, bins, is_t = (np.concatenate(x) for x in zip(*parts, strict=True))
    chrom = np.searchsorted(genome.offsets, start, side="right") - 1
    low = rng.random(len(start)) < genome.bin_lowmapq[bins]
    mapq = np.where(low, LOW_MAPQ_VALUES[rng.integers(0, len(LOW_MAPQ_VALUES), len(start))], 60)
    local = start - genome.offsets[chrom]
    order = np.lexsort((end, local, chrom))
    return pd.DataFrame({
        "chrom": chrom[order], "start": local[order], "end": (end - genome.offsets[chrom])[order],
        "mapq": mapq[order], "minus": minus[order], "tumour": is_t[order],
    })


def write_fragments(frags: pd.DataFrame, genome: Genome, path: Path) -> None:
    """Write BED3+2 (chrom, start, end, mapq, strand), BGZF-compress and tabix-index (FinaleToolkit layout)."""
    names = pa.array(genome.names)
    table = pa.table({
        "chrom": pa.DictionaryArray.from_arrays(pa.array(frags["chrom"].to_numpy(np.int32)), names)
        .cast(pa.string()),
        "start": pa.array(frags["start"].to_numpy(np.int64)),
        "end": pa.array(frags["end"].to_numpy(np.int64)),
        "mapq": pa.array(frags["mapq"].to_numpy(np.int16)),
        "strand": pa.array(np.where(frags["minus"].to_numpy(), "-", "+")),
    })
    plain = path.with_suffix("")  # x.frag.gz -> x.frag
    pacsv.write_csv(table, plain, write_options=pacsv.WriteOptions(include_header=False, delimiter="\t",
                                                                     quoting_style="none"))
    out = pysam.tabix_index(str(plain), preset="bed", force=True)
    if Path(out) != path:  # pysam names the output <plain>.gz, which is ``path``
        os.replace(out, path)

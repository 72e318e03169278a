"""A small synthetic reference genome shared by every synthetic cohort.

Real fragmentomics features (end motifs, GC-corrected binned coverage, copy-number arms) need a genome. A
hg38-shaped miniature (22 autosomes with hg38 length ratios and centromere positions, scaled ~1/120, regional
GC isochores, CpG depletion outside CpG islands, N gaps at telomeres, centromeres and acrocentric p arms) gives
those features realistic structure while keeping the FASTA ~24 MB. It is generated from a fixed seed, so all
synthetic cohorts share one reference and a model trained on one cohort can score another.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pysam

GENOME_SEED = 20240607
BIN_SIZE = 50_000  # sampling/coverage bin; the copy-number and GC-bias resolution of the simulator
POOL_STRIDE = 4  # one candidate fragment end per 4 bp per strand: plenty for <= 1e5 fragments per sample
EDGE = 700  # no fragment end closer than this to an N gap or a chromosome end (longest fragment is 600 bp)
BASES = np.frombuffer(b"ACGTN", dtype=np.uint8)

#: hg38 autosome lengths and approximate centromere midpoints (bp).
HG38 = {
    "chr1": (248_956_422, 123_400_000), "chr2": (242_193_529, 93_900_000), "chr3": (198_295_559, 90_900_000),
    "chr4": (190_214_555, 50_000_000), "chr5": (181_538_259, 48_800_000), "chr6": (170_805_979, 59_800_000),
    "chr7": (159_345_973, 60_100_000), "chr8": (145_138_636, 45_200_000), "chr9": (138_394_717, 43_000_000),
    "chr10": (133_797_422, 39_800_000), "chr11": (135_086_622, 53_400_000), "chr12": (133_275_309, 35_500_000),
    "chr13": (114_364_328, 17_700_000), "chr14": (107_043_718, 17_200_000), "chr15": (101_991_189, 19_000_000),
    "chr16": (90_338_345, 36_800_000), "chr17": (83_257_441, 25_100_000), "chr18": (80_373_285, 18_500_000),
    "chr19": (58_617_616, 26_200_000), "chr20": (64_444_167, 28_100_000), "chr21": (46_709_983, 12_000_000),
    "chr22": (50_818_468, 15_000_000),
}
ACROCENTRIC = ("chr13", "chr14", "chr15", "chr21", "chr22")
#: Chromosome GC offsets (gene-rich chromosomes are GC-rich), relative to a genome mean of 0.41.
GC_OFFSET = {"chr4": -0.025, "chr13": -0.025, "chr5": -0.01, "chr6": -0.01, "chr18": -0.015,
             "chr16": 0.03, "chr17": 0.035, "chr19": 0.06, "chr20": 0.02, "chr22": 0.05, "chr1": 0.01}

#: Methylation region classes: (number of regions, class name).
REGION_CLASSES = (("marker_shared", 60), ("marker_nsclc", 50), ("marker_sclc", 50), ("hypo", 40),
                  ("background", 110))


@dataclass(eq=False)  # hashed by identity: one instance per process, cached
class Genome:
    """The reference plus precomputed structures the fragment simulator samples from."""

    names: list[str]
    lengths: np.ndarray  # int64 per chromosome
    offsets: np.ndarray  # global start of each chromosome (concatenated coordinates), len n+1
    centromeres: np.ndarray  # local centromere midpoint per chromosome
    seq: np.ndarray  # uint8 codes A=0 C=1 G=2 T=3 N=4, concatenated
    gaps: list[tuple[int, int]]  # global [start, end) N gaps
    bin_chrom: np.ndarray  # chromosome index per bin
    bin_start: np.ndarray  # local start per bin
    bin_end: np.ndarray
    bin_gc: np.ndarray  # GC fraction of the non-N bases of a bin
    bin_arm: np.ndarray  # arm index per bin (-1 for all-N bins)
    bin_mappability: np.ndarray  # fixed per-bin capture/mappability factor shared by all samples
    bin_lowmapq: np.ndarray  # per-bin probability that a fragment gets MAPQ < 30 (repeat-rich bins)
    arms: pd.DataFrame  # arm_id, chrom, arm, start, end (local), index
    pool_pos: np.ndarray  # candidate 5' end positions (global, int32), sorted by cell (strand, bin, motif)
    cell_offset: np.ndarray  # start of each cell in pool_pos, len n_cells+1
    cell_count: np.ndarray  # number of candidates per cell (n_strand=2, n_bins, 256) flattened
    regions: pd.DataFrame  # methylation regions: region_id, chrom, start, end, region_class, n_cpg
    cpgs: pd.DataFrame  # region_id, chrom, pos (1-based C), plasma, nsclc, sclc reference betas per CpG

    @property
    def n_bins(self) -> int:
        return len(self.bin_chrom)

    @property
    def size(self) -> int:
        return int(self.offsets[-1])


def motif_name(code: int) -> str:
    """4-mer string of a motif code (A=0, C=1, G=2, T=3; first base most significant)."""
    return "".join("ACGT"[(code >> s) & 3] for s in (6, 4, 2, 0))


def _isochore_gc(rng: np.random.Generator, n_seg: int, offset: float) -> np.ndarray:
    """Regional GC along a chromosome: a smooth AR(1) process in 10-kb segments around the chromosome mean."""
    phi, sd = 0.97, 0.045
    eps = rng.normal(0.0, sd * np.sqrt(1 - phi**2), n_seg)
    gc = np.empty(n_seg)
    gc[0] = rng.normal(0.0, sd)
    for i in range(1, n_seg):
        gc[i] = phi * gc[i - 1] + eps[i]
    return np.clip(0.41 + offset + gc, 0.30, 0.62)


def _random_bases(rng: np.random.Generator, gc: np.ndarray, seg: int, n: int) -> np.ndarray:
    """Bases with a per-segment GC probability (strand-symmetric: P(C)=P(G)=gc/2)."""
    p_gc = np.repeat(gc, seg)[:n]
    u = rng.random(n, dtype=np.float32)
    out = np.where(u < p_gc / 2, 1, np.where(u < p_gc, 2, np.where(u < p_gc + (1 - p_gc) / 2, 0, 3)))
    return out.astype(np.uint8)


def _deplete_cpg(rng: np.random.Generator, seq: np.ndarray, keep: np.ndarray) -> None:
    """Mutate ~75% of CpGs to TpG/CpA (deamination history) outside ``keep`` (CpG islands), as in real genomes."""
    cg = np.flatnonzero((seq[:-1] == 1) & (seq[1:] == 2))
    cg = cg[~keep[cg]]
    hit = cg[rng.random(len(cg)) < 0.75]
    to_t = rng.random(len(hit)) < 0.5
    seq[hit[to_t]] = 3  # C -> T
    seq[hit[~to_t] + 1] = 0  # G -> A


@functools.lru_cache(maxsize=2)
def get_genome(scale: int = 120) -> Genome:
    """Build (once per process) the synthetic reference at 1/``scale`` of hg38 autosome lengths."""
    rng = np.random.default_rng(GENOME_SEED + scale)
    names = list(HG38)
    lengths = np.array([HG38[c][0] // scale for c in names], dtype=np.int64)
    cens = np.array([HG38[c][1] // scale for c in names], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    total = int(offsets[-1])

    seg = 10_000
    seq = np.empty(total, dtype=np.uint8)
    for i, c in enumerate(names):
        n = int(lengths[i])
        gc = _isochore_gc(rng, n // seg + 1, GC_OFFSET.get(c, 0.0))
        seq[offsets[i]:offsets[i + 1]] = _random_bases(rng, gc, seg, n)

    # N gaps: telomeres, centromere, acrocentric short arms.
    gaps: list[tuple[int, int]] = []
    for i, c in enumerate(names):
        o, n, cen = int(offsets[i]), int(lengths[i]), int(cens[i])
        half = max(int(0.004 * n), 5_000)
        gaps += [(o, o + 2_000), (o + n - 2_000, o + n)]
        if c in ACROCENTRIC:
            gaps.append((o, o + cen + half))
        else:
            gaps.append((o + cen - half, o + cen + half))
    for a, b in gaps:
        seq[a:b] = 4

    regions, island_mask = _plant_cpg_islands(rng, seq, names, offsets, gaps)
    _deplete_cpg(rng, seq, island_mask)
    cpgs = _cpg_table(rng, seq, regions, offsets, names)
    regions["n_cpg"] = cpgs.groupby("region_id", sort=False).size().reindex(regions["region_id"]).to_numpy()

    # Bins and arms.
    b_chrom, b_start, b_end = [], [], []
    for i in range(len(names)):
        starts = np.arange(0, lengths[i], BIN_SIZE)
        b_chrom.append(np.full(len(starts), i))
        b_start.append(starts)
        b_end.append(np.minimum(starts + BIN_SIZE, lengths[i]))
    bin_chrom = np.concatenate(b_chrom)
    bin_start = np.concatenate(b_start)
    bin_end = np.concatenate(b_end)
    gstart = offsets[bin_chrom] + bin_start  # bins tile the genome, so reduceat sums each bin
    n_gc = np.add.reduceat((seq == 1) | (seq == 2), gstart, dtype=np.int64)
    n_acgt = np.add.reduceat(seq < 4, gstart, dtype=np.int64)
    bin_gc = np.where(n_acgt > 0, n_gc / np.maximum(n_acgt, 1), np.nan)

    arm_rows = []
    for i, c in enumerate(names):
        if c not in ACROCENTRIC:
            arm_rows.append((f"{c[3:]}p", c, "p", 0, int(cens[i]), i))
        arm_rows.append((f"{c[3:]}q", c, "q", int(cens[i]), int(lengths[i]), i))
    arms = pd.DataFrame(arm_rows, columns=["arm_id", "chrom", "arm", "start", "end", "chrom_index"])
    mid = (bin_start + bin_end) // 2
    bin_arm = np.full(len(bin_chrom), -1)
    for k, row in arms.iterrows():
        sel = (bin_chrom == row.chrom_index) & (mid >= row.start) & (mid < row.end)
        bin_arm[sel] = k
    bin_arm[n_acgt < 0.5 * (bin_end - bin_start)] = -1
    bin_map = np.exp(rng.normal(0.0, 0.05, len(bin_chrom)))
    bin_lowmapq = np.where(rng.random(len(bin_chrom)) < 0.08, rng.uniform(0.10, 0.30, len(bin_chrom)), 0.02)

    pool_pos, cell_offset, cell_count = _fragment_end_pool(rng, seq, offsets, gaps, bin_chrom, bin_start)
    return Genome(names, lengths, offsets, cens, seq, gaps, bin_chrom, bin_start, bin_end, bin_gc, bin_arm,
                  bin_map, bin_lowmapq, arms, pool_pos, cell_offset, cell_count, regions, cpgs)


def _plant_cpg_islands(rng: np.random.Generator, seq: np.ndarray, names: list[str], offsets: np.ndarray,
                       gaps: list[tuple[int, int]]) -> tuple[pd.DataFrame, np.ndarray]:
    """Write CpG-island sequence (GC ~0.65, no CpG depletion) at the methylation panel's target regions."""
    bad = np.zeros(len(seq) // 10_000 + 1, dtype=bool)
    for a, b in gaps:
        bad[max(a // 10_000 - 1, 0):b // 10_000 + 2] = True
    n_regions = sum(k for _, k in REGION_CLASSES)
    # Spread regions uniformly over the non-gap genome, one per 10-kb slot at most.
    slots = np.flatnonzero(~bad)
    chosen = np.sort(rng.choice(slots, size=n_regions, replace=False))
    classes = np.concatenate([[name] * k for name, k in REGION_CLASSES])
    classes = classes[rng.permutation(n_regions)]
    keep = np.zeros(len(seq), dtype=bool)
    rows = []
    for j, slot in enumerate(chosen):
        width = int(rng.integers(90, 220))
        gstart = int(slot * 10_000 + rng.integers(1_000, 10_000 - width - 1_000))
        chrom = int(np.searchsorted(offsets, gstart, side="right") - 1)
        u = rng.random(width)
        bases = np.where(u < 0.34, 1, np.where(u < 0.68, 2, np.where(u < 0.84, 0, 3))).astype(np.uint8)
        seq[gstart:gstart + width] = bases
        keep[gstart - 1:gstart + width + 1] = True
        local = gstart - int(offsets[chrom])
        rows.append((f"{classes[j]}_{j + 1:03d}", names[chrom], local, local + width, classes[j]))
    regions = pd.DataFrame(rows, columns=["region_id", "chrom", "start", "end", "region_class"])
    return regions, keep


def _cpg_table(rng: np.random.Generator, seq: np.ndarray, regions: pd.DataFrame, offsets: np.ndarray,
               names: list[str]) -> pd.DataFrame:
    """CpGs of each region with fixed reference betas for plasma (blood cfDNA), NSCLC and SCLC tumour DNA."""
    cidx = {c: i for i, c in enumerate(names)}
    rows = []
    for r in regions.itertuples(index=False):
        o = int(offsets[cidx[r.chrom]])
        s = seq[o + r.start:o + r.end]
        pos = np.flatnonzero((s[:-1] == 1) & (s[1:] == 2))
        cls = r.region_class
        # Region-level reference betas; per-CpG values scatter around them.
        if cls.startswith("marker"):
            plasma = rng.beta(1.2, 25)
            hyper = rng.beta(9, 3)
            low = rng.beta(1.5, 12)
            nsclc = hyper if cls in ("marker_shared", "marker_nsclc") else low
            sclc = hyper if cls in ("marker_shared", "marker_sclc") else low
            if cls == "marker_sclc":
                sclc = min(0.97, hyper + 0.08)  # neuroendocrine markers are near fully methylated in SCLC
        elif cls == "hypo":
            plasma = rng.beta(20, 3)
            nsclc = sclc = rng.beta(4, 6)
        else:
            level = rng.choice([rng.beta(20, 3), rng.beta(1.5, 20), rng.beta(5, 5)], p=[0.5, 0.35, 0.15])
            plasma = nsclc = sclc = level
        for p in pos:
            jit = rng.normal(0, 0.35, 3)
            b = [_logit_shift(v, e) for v, e in zip((plasma, nsclc, sclc), jit, strict=True)]
            rows.append((r.region_id, r.chrom, int(r.start + p + 1), *b))
    return pd.DataFrame(rows, columns=["region_id", "chrom", "pos", "plasma", "nsclc", "sclc"])


def _logit_shift(beta: float, delta: float) -> float:
    b = float(np.clip(beta, 1e-3, 1 - 1e-3))
    return float(1 / (1 + np.exp(-(np.log(b / (1 - b)) + delta))))


def _fragment_end_pool(rng: np.random.Generator, seq: np.ndarray, offsets: np.ndarray,
                       gaps: list[tuple[int, int]], bin_chrom: np.ndarray,
                       bin_start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate fragment 5' ends grouped by (strand, bin, 4-mer end motif).

    A plus-strand fragment's 5' end is its ``start`` and its motif is ``seq[start:start+4]``; a minus-strand
    fragment's 5' end is ``end`` and its motif is the reverse complement of ``seq[end-4:end]``. Grouping by
    motif lets the simulator give healthy and tumour fragments different end-motif spectra while sampling
    actual reference positions, so that end-motif features computed from the FASTA recover them.
    """
    total = len(seq)
    bad = np.zeros(total, dtype=bool)
    for i in range(len(offsets) - 1):
        bad[offsets[i]:offsets[i] + EDGE] = True
        bad[max(offsets[i + 1] - EDGE, 0):offsets[i + 1]] = True
    for a, b in gaps:
        bad[max(a - EDGE, 0):min(b + EDGE, total)] = True
    n_bins = len(bin_chrom)
    bin_offset = np.concatenate([[0], np.cumsum(np.bincount(bin_chrom))])
    pools, keys = [], []
    for strand in (0, 1):
        pos = np.arange(4, total - 4, POOL_STRIDE, dtype=np.int32)
        pos += rng.integers(0, POOL_STRIDE, len(pos), dtype=np.int32)
        pos = pos[(pos < total - 4) & ~bad[pos]]
        # Base codes of the 5' end 4-mer, reading away from the end on the fragment's own strand.
        b = [seq[pos + k] if strand == 0 else seq[pos - 1 - k] for k in range(4)]
        valid = (b[0] < 4) & (b[1] < 4) & (b[2] < 4) & (b[3] < 4)
        if strand == 1:
            b = [3 - x for x in b]  # complement (A<->T, C<->G)
        motif = (64 * b[0].astype(np.int32) + 16 * b[1] + 4 * b[2] + b[3])[valid]
        pos = pos[valid]
        del b, valid
        chrom = np.searchsorted(offsets, pos, side="right") - 1
        binidx = (bin_offset[chrom] + (pos - offsets[chrom]) // BIN_SIZE).astype(np.int32)
        pools.append(pos)
        keys.append((strand * n_bins + binidx) * 256 + motif)
        del chrom, binidx, motif
    del bad
    pos = np.concatenate(pools)
    key = np.concatenate(keys)
    del pools, keys
    order = np.argsort(key, kind="stable")
    n_cells = 2 * n_bins * 256
    count = np.bincount(key, minlength=n_cells).astype(np.int64)
    cell_offset = np.concatenate([[0], np.cumsum(count)])
    return pos[order], cell_offset, count


def write_reference(genome: Genome, out: Path, tumour_type: str) -> dict[str, str]:
    """Write FASTA (+ .fai), chrom sizes, methylation region BED and reference profiles; return cohort.yaml refs."""
    ref = out / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    fasta = ref / "genome.fa"
    width = 60
    with open(fasta, "wb") as fh:
        for i, c in enumerate(genome.names):
            codes = genome.seq[genome.offsets[i]:genome.offsets[i + 1]]
            full = len(codes) - len(codes) % width
            lines = np.concatenate([BASES[codes[:full]].reshape(-1, width),
                                    np.full((full // width, 1), ord("\n"), dtype=np.uint8)], axis=1)
            tail = BASES[codes[full:]].tobytes() + (b"\n" if full < len(codes) else b"")
            fh.write(f">{c}\n".encode())
            fh.write(lines.tobytes() + tail)
    pysam.faidx(str(fasta))
    sizes = pd.DataFrame({"chrom": genome.names, "length": genome.lengths})
    sizes.to_csv(ref / "genome.chrom.sizes", sep="\t", header=False, index=False)
    bed = genome.regions[["chrom", "start", "end", "region_id"]]
    bed.to_csv(ref / "methylation_regions.bed", sep="\t", header=False, index=False)
    prof = genome.cpgs.groupby("region_id", sort=False)[["plasma", tumour_type]].mean()
    prof = genome.regions.set_index("region_id")[["chrom", "start", "end", "region_class", "n_cpg"]].join(prof)
    prof = prof.rename(columns={tumour_type: "tumour"}).reset_index()
    prof[["plasma", "tumour"]] = prof[["plasma", "tumour"]].round(4)
    prof.to_csv(ref / "methylation_profiles.csv", index=False)
    return {
        "genome_fasta": "reference/genome.fa",
        "chrom_sizes": "reference/genome.chrom.sizes",
        "methylation_regions": "reference/methylation_regions.bed",
        "methylation_profiles": "reference/methylation_profiles.csv",
    }

"""cfDNA fragmentomics: fragment-length profile, binned coverage, DELFI short/long ratios, 5' end motifs and an
ichorCNA-style copy-number profile with a tumour-fraction estimate, from a fragment file or a paired-end BAM.

Every function works on the columnar :class:`~omics_risk.data.readers.Fragments` (numpy arrays) with ``bincount``
and ``searchsorted``, so a library of a few million fragments costs well under a second per feature group, where
FinaleToolkit streams fragments one at a time through pysam (``bench/bench_fragments.py`` measures both).
Conventions follow FinaleToolkit 1.1.0 so that results can be checked against it:

- a fragment is ``[start, end)``, 0-based; its midpoint is ``(start + end) // 2``. Policy ``midpoint`` counts a
  fragment in the interval that holds its midpoint, ``any`` in every interval it overlaps;
- the length histogram (``frag-length-bins``) and coverage (``coverage``) are equal to FinaleToolkit's for the same
  MAPQ / length filters (tested in ``tests/features/test_fragmentomics.py``). FinaleToolkit's median is off by one
  rank for an odd number of fragments; :func:`length_features` reports the usual median;
- end motifs (``end-motifs``): both 5' ends of every fragment, the k-mer at ``start`` on the forward strand and the
  reverse complement of the k bases ending at ``end``; k-mers touching a non-ACGT base are skipped. FinaleToolkit
  1.1.0 additionally counts a fragment once per 1-Mb window it overlaps (so a few in 10^4 twice) and does not apply
  ``--min-length``; we count each fragment once and apply the length filter.

Feature defaults suit the synthetic genome (~24 Mb, ``omics_risk.data.synthetic``): 100-kb bins merged to 1 Mb for
coverage and DELFI, 100-kb bins for the copy-number fit. For hg38 use the published resolutions:
``bin_size=100_000, coarse_bin_size=5_000_000, cna_bin_size=1_000_000`` (DELFI 100 kb -> 5 Mb, ichorCNA 1 Mb).
"""

from __future__ import annotations

import functools
import itertools
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd

from omics_risk.data.contract import Cohort
from omics_risk.data.readers import AUTOSOME_RE, DataFileError, Fragments, read_chrom_sizes, read_fragments
from omics_risk.features.base import Extractor, SampleFailure

__all__ = [
    "FEATURE_GROUPS",
    "BinGrid",
    "CopyNumberFit",
    "FragmentomicsExtractor",
    "PanelOfNormals",
    "ReferenceGenome",
    "bin_counts",
    "cna_features",
    "copy_number_log2",
    "delfi_merge",
    "delfi_profile",
    "end_motif_counts",
    "finaletoolkit_motif_multiplicity",
    "fit_tumour_fraction",
    "gc_lowess_fit",
    "interval_counts",
    "length_features",
    "length_histogram",
    "motif_diversity_score",
    "motif_names",
]

FEATURE_GROUPS = ("length", "coverage", "delfi", "motif", "cna")
IntersectPolicy = Literal["midpoint", "any"]
#: Base codes: A=0, C=1, G=2, T=3, anything else (N, IUPAC) = 4; lower case (soft-masked) is the same base.
_BASE_LUT = np.full(256, 4, dtype=np.uint8)
for _i, _b in enumerate("ACGT"):
    _BASE_LUT[ord(_b)] = _i
    _BASE_LUT[ord(_b.lower())] = _i
#: A reference up to this size is kept in memory as base codes (the synthetic genome, small panels); larger ones
#: (hg38) are read one chromosome at a time.
_CACHE_GENOME_BP = 400_000_000


# --------------------------------------------------------------------------------------------------- bins


@dataclass(frozen=True)
class BinGrid:
    """Fixed-width bins tiling each chromosome from 0; the last bin of a chromosome may be shorter.

    Bins are numbered genome-wide in chromosome order, so one ``bincount`` gives the counts of every bin. A last
    bin shorter than ``merge_tail`` x ``bin_size`` is merged into the one before it (so coarse features are not
    dominated by a few-kb tail that is mostly telomere), except on a chromosome shorter than one bin.
    """

    chroms: tuple[str, ...]
    sizes: tuple[int, ...]
    bin_size: int
    merge_tail: float = 0.0

    def __post_init__(self) -> None:
        if self.bin_size <= 0:
            raise ValueError(f"bin_size must be > 0, got {self.bin_size}")
        if len(self.chroms) != len(self.sizes) or len(set(self.chroms)) != len(self.chroms):
            raise ValueError("chroms must be unique and match sizes one to one")
        if any(s <= 0 for s in self.sizes):
            raise ValueError("chromosome sizes must be > 0")

    @classmethod
    def from_sizes(cls, sizes: Mapping[str, int], bin_size: int, merge_tail: float = 0.0) -> BinGrid:
        return cls(tuple(sizes), tuple(int(v) for v in sizes.values()), int(bin_size), float(merge_tail))

    @cached_property
    def bins_per_chrom(self) -> np.ndarray:
        sizes = np.asarray(self.sizes, dtype=np.int64)
        n = -(-sizes // self.bin_size)
        tail = sizes - (n - 1) * self.bin_size
        return np.where((n > 1) & (tail < self.merge_tail * self.bin_size), n - 1, n)

    @cached_property
    def offsets(self) -> np.ndarray:
        """First global bin of each chromosome (and the total as the last element)."""
        return np.concatenate([[0], np.cumsum(self.bins_per_chrom)]).astype(np.int64)

    @property
    def n_bins(self) -> int:
        return int(self.offsets[-1])

    @cached_property
    def chrom_index(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.chroms)), self.bins_per_chrom)

    @cached_property
    def start(self) -> np.ndarray:
        return (np.arange(self.n_bins) - self.offsets[self.chrom_index]) * self.bin_size

    @cached_property
    def end(self) -> np.ndarray:
        end = self.start + self.bin_size
        last = self.offsets[1:] - 1
        end[last] = self.sizes  # the last bin of each chromosome ends at its end (short or merged tail)
        return end

    def labels(self, prefix: str) -> list[str]:
        """Stable feature names ``{prefix}_{chrom}_{k}``, ``k`` the bin's index within its chromosome."""
        local = np.arange(self.n_bins) - self.offsets[self.chrom_index]
        return [f"{prefix}_{self.chroms[c]}_{k}" for c, k in zip(self.chrom_index, local, strict=True)]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"chrom": np.asarray(self.chroms)[self.chrom_index], "start": self.start, "end": self.end})

    def chrom_codes(self, names: Sequence[str]) -> np.ndarray:
        """Grid chromosome index of each name (-1 when the grid does not have it)."""
        pos = {c: i for i, c in enumerate(self.chroms)}
        return np.asarray([pos.get(n, -1) for n in names], dtype=np.int64)

    def local_bin(self, gchrom: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Global bin of positions ``pos`` on grid chromosomes ``gchrom`` (a merged tail maps to its bin)."""
        return self.offsets[gchrom] + np.minimum(pos // self.bin_size, self.bins_per_chrom[gchrom] - 1)

    def coarse_map(self, coarse: BinGrid) -> np.ndarray:
        """Index in ``coarse`` (same chromosomes, a multiple of this bin size) of every bin of this grid."""
        if coarse.chroms != self.chroms or coarse.sizes != self.sizes or coarse.bin_size % self.bin_size:
            raise ValueError(
                f"coarse grid ({coarse.bin_size} bp) must have the same chromosomes and a bin size that is a "
                f"multiple of {self.bin_size} bp"
            )
        return coarse.local_bin(self.chrom_index, self.start)

    def with_bin_size(self, bin_size: int, merge_tail: float | None = None) -> BinGrid:
        tail = self.merge_tail if merge_tail is None else merge_tail
        return BinGrid(self.chroms, self.sizes, int(bin_size), float(tail))


def bin_counts(frags: Fragments, grid: BinGrid, policy: IntersectPolicy = "midpoint") -> np.ndarray:
    """Fragments per bin (int64, one value per bin of ``grid``), FinaleToolkit's ``coverage`` semantics.

    ``midpoint``: a fragment counts in the bin holding ``(start + end) // 2``; ``any``: in every bin it overlaps.
    Fragments on chromosomes outside the grid, or beyond a chromosome's size, are not counted. One compiled pass
    over the fragments: the numpy version's per-fragment temporaries cost more than the counting itself.
    """
    from omics_risk.features._fragment_kernels import bin_counts_kernel

    if policy not in ("midpoint", "any"):
        raise ValueError(f"intersect policy must be 'midpoint' or 'any', got {policy!r}")
    codes = grid.chrom_codes(frags.chrom_names)
    known = codes >= 0
    offset = np.where(known, grid.offsets[np.maximum(codes, 0)], -1).astype(np.int64)
    size = np.where(known, np.asarray((*grid.sizes, 0), dtype=np.int64)[codes], 0)
    n_local = np.where(known, grid.bins_per_chrom[np.maximum(codes, 0)], 0).astype(np.int64)
    return bin_counts_kernel(
        frags.chrom, frags.start, frags.end, offset, size, n_local, grid.bin_size, grid.n_bins, policy == "midpoint"
    )


_KEY_SHIFT = np.int64(1) << np.int64(40)  # chromosome positions are < 2**40


def interval_counts(
    frags: Fragments,
    chroms: Sequence[str],
    starts: np.ndarray,
    ends: np.ndarray,
    policy: IntersectPolicy = "midpoint",
) -> np.ndarray:
    """Fragments in arbitrary (possibly overlapping) intervals ``[starts, ends)``, as FinaleToolkit counts them.

    Sort once, then two ``searchsorted`` per interval: O((fragments + intervals) log fragments).
    """
    names = list(dict.fromkeys(list(frags.chrom_names) + [str(c) for c in chroms]))
    index = {c: i for i, c in enumerate(names)}
    fcode = np.asarray([index[c] for c in frags.chrom_names], dtype=np.int64)[frags.chrom] * _KEY_SHIFT
    icode = np.asarray([index[str(c)] for c in chroms], dtype=np.int64) * _KEY_SHIFT
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    if policy == "midpoint":
        keys = np.sort(fcode + ((frags.start + frags.end) >> 1))
        return np.searchsorted(keys, icode + ends, "left") - np.searchsorted(keys, icode + starts, "left")
    if policy == "any":
        kstart = np.sort(fcode + frags.start)
        kend = np.sort(fcode + frags.end)
        begins = np.searchsorted(kstart, icode + ends, "left") - np.searchsorted(kstart, icode, "left")
        done = np.searchsorted(kend, icode + starts, "right") - np.searchsorted(kend, icode, "left")
        return begins - done
    raise ValueError(f"intersect policy must be 'midpoint' or 'any', got {policy!r}")


# --------------------------------------------------------------------------------------------------- reference


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _encode(seq: str) -> np.ndarray:
    return _BASE_LUT[np.frombuffer(seq.encode("ascii", errors="replace"), dtype=np.uint8)]


@functools.lru_cache(maxsize=1)
def _whole_genome_codes(stamp: tuple[str, int, int]) -> dict[str, np.ndarray]:
    import pysam

    with pysam.FastaFile(stamp[0]) as fa:
        return {c: _encode(fa.fetch(c)) for c in fa.references}


@functools.lru_cache(maxsize=8)
def _bin_composition(stamp: tuple[str, int, int], grid: BinGrid) -> tuple[np.ndarray, np.ndarray]:
    ref = ReferenceGenome(stamp[0])
    gc = np.full(grid.n_bins, np.nan)
    acgt_frac = np.zeros(grid.n_bins)
    for i, chrom in enumerate(grid.chroms):
        if chrom not in ref.sizes:
            continue
        codes = ref.codes(chrom)
        lo, hi = int(grid.offsets[i]), int(grid.offsets[i + 1])
        starts = grid.start[lo:hi]
        ends = grid.end[lo:hi]
        inside = starts < len(codes)
        if not inside.any():
            continue
        cut = np.minimum(starts[inside], len(codes))
        n_gc = np.add.reduceat((codes == 1) | (codes == 2), cut, dtype=np.int64)  # no int64 copy of the sequence
        n_acgt = np.add.reduceat(codes < 4, cut, dtype=np.int64)
        sel = np.arange(lo, hi)[inside]
        with np.errstate(invalid="ignore", divide="ignore"):
            gc[sel] = np.where(n_acgt > 0, n_gc / np.maximum(n_acgt, 1), np.nan)
        acgt_frac[sel] = n_acgt / (ends[inside] - starts[inside])
    return gc, acgt_frac


class ReferenceGenome:
    """A FASTA reference (``.fai``-indexed; pysam builds the index when missing) read as base codes.

    Small genomes are cached in memory once per process; bin GC content is cached per (FASTA, grid).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataFileError(self.path, "reference FASTA not found; fix references: genome_fasta in cohort.yaml")
        self._stamp = _stamp(self.path)

    @cached_property
    def sizes(self) -> dict[str, int]:
        import pysam

        try:
            with pysam.FastaFile(str(self.path)) as fa:
                return dict(zip(fa.references, (int(n) for n in fa.lengths), strict=True))
        except (OSError, ValueError) as exc:
            raise DataFileError(
                self.path, f"cannot be opened as an indexed FASTA ({exc}); run `samtools faidx` on it"
            ) from exc

    @property
    def total_size(self) -> int:
        return sum(self.sizes.values())

    def codes(self, chrom: str) -> np.ndarray:
        """Base codes (A=0, C=1, G=2, T=3, other=4) of one chromosome."""
        if self.total_size <= _CACHE_GENOME_BP:
            return _whole_genome_codes(self._stamp)[chrom]
        import pysam

        with pysam.FastaFile(str(self.path)) as fa:
            return _encode(fa.fetch(chrom))

    def bin_composition(self, grid: BinGrid) -> tuple[np.ndarray, np.ndarray]:
        """(GC fraction of the A/C/G/T bases, NaN when none; fraction of the bin that is A/C/G/T) per bin."""
        return _bin_composition(self._stamp, grid)


# --------------------------------------------------------------------------------------------------- lengths


def length_histogram(lengths: np.ndarray, min_length: int = 50, max_length: int = 350) -> np.ndarray:
    """Counts of each length ``min_length .. max_length`` (1-bp bins, both ends inclusive)."""
    lengths = np.asarray(lengths)
    sel = lengths[(lengths >= min_length) & (lengths <= max_length)] - min_length
    return np.bincount(sel, minlength=max_length - min_length + 1).astype(np.int64)


def _weighted_rank(values: np.ndarray, cdf: np.ndarray, rank: int) -> float:
    """The ``rank``-th (1-based) smallest value of a histogram with cumulative counts ``cdf``."""
    return float(values[np.searchsorted(cdf, rank, side="left")])


def _periodicity_amplitude(
    hist: np.ndarray, min_length: int, upper: int, periods: np.ndarray, window: int = 11
) -> float:
    """Relative amplitude of the ~10-bp oscillation of the length histogram below ``upper`` bp.

    The histogram minus its centred moving average over ``window`` bp (about one period, so the trend keeps little
    of the oscillation) is projected on sinusoids of each candidate period and divided by the trend's total, i.e.
    a count-weighted mean of the relative swing (sparse short lengths weigh little); the largest amplitude over the
    periods is returned (0.3 = counts swing +-30 % around the trend).
    """
    half = window // 2
    hi = min(upper, min_length + len(hist) - 1 - half)
    lo = min_length + half
    if hi - lo + 1 < 2 * window:
        return float("nan")
    h = hist[: hi + half - min_length + 1].astype(float)
    trend = np.convolve(h, np.ones(window) / window, mode="valid")  # centred on lengths lo .. hi
    total = trend.sum()
    if total <= 0:
        return float("nan")
    resid = h[half : half + len(trend)] - trend
    x = np.arange(lo, lo + len(trend), dtype=float)
    waves = np.exp(-2j * np.pi * x[None, :] / periods[:, None])
    return float(2.0 * np.abs(waves @ resid).max() / total)


def length_features(
    hist: np.ndarray,
    min_length: int = 50,
    *,
    bin_width: int = 10,
    s150: int = 150,
    short: tuple[int, int] = (100, 150),
    long: tuple[int, int] = (151, 220),
    periodicity_below: int = 142,
) -> dict[str, float]:
    """Summary features of a 1-bp length histogram that starts at ``min_length``.

    ``len_mean``, ``len_median``, ``len_sd`` (population, as FinaleToolkit), ``len_mode``, ``len_s150`` (fraction
    <= 150 bp), ``len_short_100_150`` (fraction in the DELFI short range), ``len_short_long_ratio`` (DELFI short /
    long counts), ``len_period10_amp`` (10-bp periodicity below 143 bp) and normalised frequencies in ``bin_width``
    bins ``len_bin_{lo}_{hi}`` (``[lo, hi)``; the last bin also holds the maximum length).
    """
    hist = np.asarray(hist, dtype=np.int64)
    values = np.arange(min_length, min_length + len(hist))
    n = int(hist.sum())
    max_length = min_length + len(hist) - 1
    n_bins = max(1, len(hist) // bin_width)
    edges = [min_length + j * bin_width for j in range(n_bins)] + [max_length + 1]
    names = [f"len_bin_{edges[j]}_{edges[j + 1] if j < n_bins - 1 else max_length}" for j in range(n_bins)]
    out: dict[str, float] = {}
    if n == 0:
        keys = [
            "len_mean",
            "len_median",
            "len_sd",
            "len_mode",
            "len_s150",
            f"len_short_{short[0]}_{short[1]}",
            "len_short_long_ratio",
            "len_period10_amp",
            *names,
        ]
        return dict.fromkeys(keys, float("nan"))
    cdf = np.cumsum(hist)
    mean = float((values * hist).sum() / n)
    out["len_mean"] = mean
    if n % 2:
        out["len_median"] = _weighted_rank(values, cdf, (n + 1) // 2)
    else:
        out["len_median"] = 0.5 * (_weighted_rank(values, cdf, n // 2) + _weighted_rank(values, cdf, n // 2 + 1))
    out["len_sd"] = float(np.sqrt((hist * (values - mean) ** 2).sum() / n))
    out["len_mode"] = float(values[int(np.argmax(hist))])
    out["len_s150"] = float(hist[values <= s150].sum() / n)
    n_short = hist[(values >= short[0]) & (values <= short[1])].sum()
    n_long = hist[(values >= long[0]) & (values <= long[1])].sum()
    out[f"len_short_{short[0]}_{short[1]}"] = float(n_short / n)
    out["len_short_long_ratio"] = float(n_short / n_long) if n_long else float("nan")
    out["len_period10_amp"] = _periodicity_amplitude(hist, min_length, periodicity_below, np.arange(9.5, 11.55, 0.1))
    binned = np.add.reduceat(hist, np.asarray(edges[:-1]) - min_length) / n
    out.update(zip(names, (float(v) for v in binned), strict=True))
    return out


# --------------------------------------------------------------------------------------------------- GC / DELFI


def gc_lowess_fit(gc: np.ndarray, y: np.ndarray, valid: np.ndarray, frac: float = 0.75) -> np.ndarray:
    """LOESS (statsmodels ``lowess``, span ``frac``) fit of ``y`` against bin GC, evaluated at every bin.

    Fitted on the ``valid`` bins only; bins with a GC outside the fitted range get the nearest end of the curve.
    """
    from statsmodels.nonparametric.smoothers_lowess import lowess

    x = gc[valid]
    span = float(np.ptp(x)) if len(x) else 0.0
    fit = lowess(y[valid], x, frac=frac, it=3, delta=0.005 * span, return_sorted=True)
    xs, ys = fit[:, 0], fit[:, 1]
    out = np.full(len(gc), np.nan)
    ok = np.isfinite(gc)
    out[ok] = np.interp(gc[ok], xs, ys)
    return out


def delfi_profile(
    frags: Fragments,
    grid: BinGrid,
    *,
    gc: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    short: tuple[int, int] = (100, 150),
    long: tuple[int, int] = (151, 220),
    trim_percentile: float = 10.0,
    lowess_frac: float = 0.75,
) -> pd.DataFrame:
    """DELFI short / long fragment counts per bin (Cristiano 2019), by midpoint, optionally GC-corrected.

    ``frags`` should already be MAPQ-filtered (DELFI: >= 30). Bins outside ``mask`` (e.g. mostly N) and the lowest
    ``trim_percentile`` % by fragment count are invalid (NaN). With ``gc``, short and long counts are each
    corrected as DELFI does: ``count - loess(count ~ gc) + median(count)`` over the valid bins.
    """
    length = frags.lengths
    n_short = bin_counts(frags.select((length >= short[0]) & (length <= short[1])), grid)
    n_long = bin_counts(frags.select((length >= long[0]) & (length <= long[1])), grid)
    num = n_short + n_long
    valid = np.ones(grid.n_bins, dtype=bool) if mask is None else mask.copy()
    if gc is not None:
        valid &= np.isfinite(gc)
    if valid.any():
        valid &= num >= np.percentile(num[valid], trim_percentile)
    df = grid.to_frame()
    df["short"] = n_short
    df["long"] = n_long
    df["num_frags"] = num
    df["gc"] = gc if gc is not None else np.nan
    df["valid"] = valid
    s = np.where(valid, n_short, np.nan).astype(float)
    lo = np.where(valid, n_long, np.nan).astype(float)
    if gc is not None and valid.sum() >= 10:
        s = s - gc_lowess_fit(gc, n_short.astype(float), valid, lowess_frac) + np.median(n_short[valid])
        lo = lo - gc_lowess_fit(gc, n_long.astype(float), valid, lowess_frac) + np.median(n_long[valid])
    df["short_corrected"] = s
    df["long_corrected"] = lo
    with np.errstate(invalid="ignore", divide="ignore"):
        df["ratio_corrected"] = s / lo
    return df


def delfi_merge(profile: pd.DataFrame, grid: BinGrid, coarse: BinGrid) -> np.ndarray:
    """Short / long ratio per coarse bin: summed corrected short over summed corrected long of its valid bins."""
    idx = grid.coarse_map(coarse)
    valid = profile["valid"].to_numpy()
    s = np.bincount(idx[valid], weights=profile["short_corrected"].to_numpy()[valid], minlength=coarse.n_bins)
    lo = np.bincount(idx[valid], weights=profile["long_corrected"].to_numpy()[valid], minlength=coarse.n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(lo > 0, s / np.where(lo > 0, lo, 1.0), np.nan)


# --------------------------------------------------------------------------------------------------- end motifs


def motif_names(k: int = 4) -> list[str]:
    """All k-mers in lexicographic ACGT order (FinaleToolkit's order); index = base-4 number, first base first."""
    return ["".join("ACGT"[(code >> (2 * (k - 1 - j))) & 3] for j in range(k)) for code in range(4**k)]


def end_motif_counts(
    frags: Fragments, reference: ReferenceGenome, k: int = 4, ends: Literal["both", "strand"] = "both"
) -> np.ndarray:
    """Counts of the 4**k 5'-end k-mers (lexicographic order, see :func:`motif_names`).

    ``ends="both"`` (FinaleToolkit's default): both 5' ends of every fragment, the forward-strand k-mer at
    ``start`` and the reverse complement of the k bases ending at ``end``. ``"strand"``: only the end of the strand
    given in the file (read 1's 5' end: ``start`` for ``+``, ``end`` for ``-``). K-mers holding a non-ACGT base or
    running off the chromosome are skipped; fragments on chromosomes absent from the reference are ignored.
    """
    if ends not in ("both", "strand"):
        raise ValueError(f"ends must be 'both' or 'strand', got {ends!r}")
    counts = np.zeros(4**k, dtype=np.int64)
    weights = (4 ** np.arange(k - 1, -1, -1)).astype(np.int64)
    offs = np.arange(k, dtype=np.int64)
    order = np.argsort(frags.chrom, kind="stable")
    bounds = np.searchsorted(frags.chrom[order], np.arange(len(frags.chrom_names) + 1))
    for ci, chrom in enumerate(frags.chrom_names):
        sel = order[bounds[ci] : bounds[ci + 1]]
        if len(sel) == 0 or chrom not in reference.sizes:
            continue
        codes = reference.codes(chrom)
        start, end, strand = frags.start[sel], frags.end[sel], frags.strand[sel]
        for forward in (True, False):
            use = np.ones(len(sel), dtype=bool) if ends == "both" else (strand > 0 if forward else strand < 0)
            if forward:
                pos = start[use]
                bases = codes[pos[pos + k <= len(codes), None] + offs]
            else:  # the k bases ending at ``end``, read 5' -> 3' on the minus strand: reversed, then complemented
                pos = end[use]
                bases = codes[pos[(pos - k >= 0) & (pos <= len(codes)), None] - 1 - offs]
            bases = bases[(bases < 4).all(axis=1)].astype(np.int64)
            motif = (bases if forward else 3 - bases) @ weights
            counts += np.bincount(motif, minlength=4**k)
    return counts


def motif_diversity_score(counts: np.ndarray, k: int = 4) -> float:
    """Normalised Shannon entropy of the motif frequencies, -sum p ln p / ln(4**k) (Jiang 2020; FinaleToolkit)."""
    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    if total <= 0:
        return float("nan")
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum() / np.log(4**k))


# --------------------------------------------------------------------------------------------------- copy number


@dataclass(frozen=True, eq=False)
class PanelOfNormals:
    """Median GC-corrected log2 coverage per bin over normal (or tumour-free) libraries, as ichorCNA's PoN.

    Subtracting it removes bin effects shared by every library (mappability, capture, reference quirks) that a
    single sample cannot tell from copy-number changes. Build it with :meth:`build` (or
    :meth:`FragmentomicsExtractor.build_panel_of_normals`) from libraries processed with the same settings.
    """

    grid: BinGrid
    log2: np.ndarray
    n_samples: int
    #: Libraries :meth:`FragmentomicsExtractor.build_panel_of_normals` left out, with the reason (not saved).
    skipped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, profiles: Sequence[np.ndarray], grid: BinGrid, min_present: float = 0.5) -> PanelOfNormals:
        """Per-bin median of ``profiles`` (log2 ratios on ``grid``); bins present in < ``min_present`` are NaN."""
        if not profiles:
            raise ValueError("a panel of normals needs at least one normal profile")
        mat = np.vstack([np.asarray(p, dtype=float) for p in profiles])
        if mat.shape[1] != grid.n_bins:
            raise ValueError(f"profiles have {mat.shape[1]} bins but the grid has {grid.n_bins}")
        present = np.isfinite(mat).mean(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins: the median is NaN, as intended
            med = np.nanmedian(mat, axis=0)
        med[present < min_present] = np.nan
        return cls(grid, med, len(profiles))

    def save(self, path: str | Path) -> Path:
        """Write a TSV (``chrom start end log2_median``) with a ``#`` header giving the bin size and sample count."""
        path = Path(path)
        df = self.grid.to_frame()
        df["log2_median"] = np.round(self.log2, 6)
        with open(path, "w") as fh:
            fh.write(f"# omics-risk cfDNA panel of normals: bin_size={self.grid.bin_size} n_samples={self.n_samples}\n")
            df.to_csv(fh, sep="\t", index=False, na_rep="nan")
        return path

    @classmethod
    def load(cls, path: str | Path) -> PanelOfNormals:
        path = Path(path)
        if not path.is_file():
            raise DataFileError(path, "panel of normals not found")
        head = path.read_text().split("\n", 1)[0]
        m = re.search(r"bin_size=(\d+) n_samples=(\d+)", head)
        if not m:
            raise DataFileError(
                path, "not an omics-risk panel of normals (its first line lacks 'bin_size=... n_samples=...')", 1
            )
        df = pd.read_csv(path, sep="\t", comment="#")
        if list(df.columns[:4]) != ["chrom", "start", "end", "log2_median"]:
            raise DataFileError(path, "columns must be chrom, start, end, log2_median", 2)
        bin_size = int(m.group(1))
        sizes = df.groupby("chrom", sort=False)["end"].max()
        grid = BinGrid(tuple(str(c) for c in sizes.index), tuple(int(v) for v in sizes), bin_size)
        if grid.n_bins != len(df) or not np.array_equal(grid.start, df["start"].to_numpy()):
            raise DataFileError(path, f"bins are not a regular {bin_size}-bp tiling of each chromosome from 0")
        return cls(grid, df["log2_median"].to_numpy(dtype=float), int(m.group(2)))

    def on(self, grid: BinGrid) -> np.ndarray:
        """The panel's log2 on ``grid`` (NaN for bins the panel lacks); the bin size must match."""
        if grid.bin_size != self.grid.bin_size:
            raise ValueError(
                f"panel of normals has {self.grid.bin_size}-bp bins but the copy-number grid uses {grid.bin_size}"
            )
        out = np.full(grid.n_bins, np.nan)
        mine = {c: i for i, c in enumerate(self.grid.chroms)}
        for i, chrom in enumerate(grid.chroms):
            j = mine.get(chrom)
            if j is None:
                continue
            n = int(min(grid.bins_per_chrom[i], self.grid.bins_per_chrom[j]))
            a, b = int(grid.offsets[i]), int(self.grid.offsets[j])
            out[a : a + n] = self.log2[b : b + n]
        return out


def copy_number_log2(
    counts: np.ndarray,
    bases: np.ndarray,
    *,
    gc: np.ndarray | None = None,
    panel: np.ndarray | None = None,
    min_bases: float = 0.0,
    lowess_frac: float = 0.75,
    min_count_fraction: float = 0.1,
) -> np.ndarray:
    """Log2 copy ratio per bin (NaN for unusable bins), HMMcopy / ichorCNA style.

    ``bases`` is what a bin can hold (its A/C/G/T bases, or its length without a reference): counts are divided by
    it, so short last bins and bins next to gaps are comparable. Bins with fewer than ``min_bases``, or fewer than
    ``min_count_fraction`` x the median density, are masked. The density is divided by its LOESS fit against bin
    GC (when ``gc`` is given), log2-transformed and median-centred; ``panel`` (a panel of normals on the same bins)
    is then subtracted and the result re-centred.
    """
    counts = np.asarray(counts, dtype=float)
    bases = np.asarray(bases, dtype=float)
    valid = (counts > 0) & (bases > 0) & (bases >= min_bases)
    if gc is not None:
        valid &= np.isfinite(gc)
    if valid.sum() < 3:
        return np.full(len(counts), np.nan)
    density = np.where(valid, counts / np.where(bases > 0, bases, 1.0), np.nan)
    valid &= density >= min_count_fraction * np.median(density[valid])
    if gc is not None and valid.sum() >= 10:
        fit = gc_lowess_fit(gc, density, valid, lowess_frac)
        valid &= fit > 0
        density = np.where(valid, density / np.where(valid, fit, 1.0), np.nan)
    out = np.full(len(counts), np.nan)
    out[valid] = np.log2(density[valid])
    out -= np.nanmedian(out)
    if panel is not None:
        out = out - panel
        if np.isfinite(out).any():
            out -= np.nanmedian(out)
    return out


@dataclass
class CopyNumberFit:
    """Maximum-likelihood tumour fraction and ploidy with the copy-number state of every bin (-1: masked)."""

    tumour_fraction: float
    ploidy: float
    scale: float
    loglik: float
    loglik_null: float
    states: np.ndarray
    expected: np.ndarray
    copy_states: tuple[int, ...] = field(default=(1, 2, 3, 4, 5))


def _t_logpdf(x: np.ndarray, scale: float, df: float) -> np.ndarray:
    from scipy.special import gammaln

    c = gammaln((df + 1) / 2) - gammaln(df / 2) - 0.5 * np.log(df * np.pi) - np.log(scale)
    return c - (df + 1) / 2 * np.log1p((x / scale) ** 2 / df)


def _expected_log2(tf: np.ndarray, ploidy: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Mean log2 ratio of each copy state: ``log2((1 - f) + f c / p)`` for tumour DNA fraction f and ploidy p."""
    return np.log2((1.0 - tf)[:, None] + tf[:, None] * states[None, :] / ploidy[:, None])


def _viterbi_path(
    y: np.ndarray,
    new_chrom: np.ndarray,
    mu: np.ndarray,
    scale: float,
    df: float,
    log_pi: np.ndarray,
    log_trans: np.ndarray,
) -> np.ndarray:
    """Most likely state of every bin; the chain restarts at each chromosome, so each is decoded on its own."""
    n, s = len(y), len(mu)
    emis = _t_logpdf(y[:, None] - mu[None, :], scale, df)
    path = np.zeros(n, dtype=np.int64)
    starts = [*np.flatnonzero(new_chrom).tolist(), n]
    cols = np.arange(s)
    for a, b in itertools.pairwise(starts):
        back = np.zeros((b - a, s), dtype=np.int64)
        delta = log_pi + emis[a]
        for i in range(a + 1, b):
            cand = delta[:, None] + log_trans
            back[i - a] = np.argmax(cand, axis=0)
            delta = cand[back[i - a], cols] + emis[i]
        path[b - 1] = int(np.argmax(delta))
        for i in range(b - 1, a, -1):
            path[i - 1] = back[i - a, path[i]]
    return path


def fit_tumour_fraction(
    log2: np.ndarray,
    chrom_index: np.ndarray,
    *,
    states: Sequence[int] = (1, 2, 3, 4, 5),
    tf_grid: np.ndarray | None = None,
    ploidy_grid: np.ndarray | None = None,
    df: float = 4.0,
    switch_prob: float = 0.01,
    neutral_prior: float = 0.8,
    ploidy_prior_sd: float | None = 0.3,
) -> CopyNumberFit:
    """ichorCNA-style tumour fraction: maximum marginal likelihood of a Student-t HMM over clonal copy states.

    With ``f`` the share of the library's DNA that comes from the tumour and ``p`` the tumour's mean copy number, a
    bin in copy state ``c`` holds ``(1 - f) + f c / p`` times the average coverage; its expected log2 ratio is the
    log of that (for ``p = 2``: ``(f c + 2 (1 - f)) / 2``, ichorCNA's model with ``n = 1 - f``). Residuals are
    Student-t (``df``). The chain restarts at each chromosome (initial probability ``neutral_prior`` on copy
    number 2) and switches state with probability ``switch_prob`` per bin. ``(f, p, scale)`` maximise the forward
    algorithm's likelihood (states summed out) plus a normal log-prior on ``p`` (mean 2, sd ``ploidy_prior_sd``)
    over a grid, refined around the best point; the Viterbi path at the optimum gives the copy-number segments.
    ``p`` also absorbs the median-centring of the data. The ploidy prior settles the classic ambiguity (a diploid
    tumour at fraction f looks like a triploid one at a higher fraction) in favour of near-diploid tumours.
    """
    from omics_risk.features._fragment_kernels import forward_loglik

    log2 = np.asarray(log2, dtype=float)
    chrom_index = np.asarray(chrom_index)
    st = np.asarray(states, dtype=float)
    n_states = len(st)
    ok = np.isfinite(log2)
    y = log2[ok]
    ch = chrom_index[ok]
    if len(y) < 10:
        return CopyNumberFit(
            float("nan"), float("nan"), float("nan"), float("nan"), float("nan"),
            np.full(len(log2), -1), np.full(len(log2), np.nan), tuple(int(s) for s in states),
        )  # fmt: skip
    new_chrom = np.concatenate([[True], ch[1:] != ch[:-1]])
    # Noise scale candidates around the spread of neighbour differences (inflated by breakpoints, hence the range).
    diffs = np.diff(y)[~new_chrom[1:]]
    base = float(1.4826 * np.median(np.abs(diffs)) / np.sqrt(2)) if len(diffs) else float(np.std(y))
    base = base if np.isfinite(base) and base > 0 else 0.1
    scales = base * 2.0 ** np.arange(-3.0, 1.01, 1.0)
    neutral = int(np.argmin(np.abs(st - 2)))
    pi = np.full(n_states, (1 - neutral_prior) / max(n_states - 1, 1))
    pi[neutral] = neutral_prior if n_states > 1 else 1.0
    log_pi = np.log(pi)
    trans = np.full((n_states, n_states), switch_prob / max(n_states - 1, 1))
    np.fill_diagonal(trans, 1 - switch_prob if n_states > 1 else 1.0)
    tf_grid = np.arange(0.0, 0.951, 0.02) if tf_grid is None else np.asarray(tf_grid, dtype=float)
    ploidy_grid = np.arange(1.5, 3.01, 0.25) if ploidy_grid is None else np.asarray(ploidy_grid, dtype=float)

    def search(tfs: np.ndarray, ploidies: np.ndarray, sc: np.ndarray) -> tuple[float, float, float, float]:
        t, p, s = (a.ravel() for a in np.meshgrid(tfs, ploidies, sc, indexing="ij"))
        ll = forward_loglik(y, new_chrom, _expected_log2(t, p, st), s, df, log_pi, trans)
        if ploidy_prior_sd:
            ll = ll - 0.5 * ((p - 2.0) / ploidy_prior_sd) ** 2
        b = int(np.argmax(ll))
        return float(t[b]), float(p[b]), float(s[b]), float(ll[b])

    tf, ploidy, scale, _ = search(tf_grid, ploidy_grid, scales)
    step_t = float(np.max(np.diff(tf_grid))) if len(tf_grid) > 1 else 0.01
    step_p = float(np.max(np.diff(ploidy_grid))) if len(ploidy_grid) > 1 else 0.1
    tf, ploidy, scale, loglik = search(
        np.clip(tf + np.linspace(-step_t, step_t, 11), 0.0, 0.99),
        np.clip(ploidy + np.linspace(-step_p, step_p, 11), 1.0, None),
        scale * 2.0 ** np.linspace(-0.5, 0.5, 5),
    )
    null = search(np.zeros(1), np.full(1, 2.0), scale * 2.0 ** np.arange(-2.0, 2.01, 0.25))[3]

    tf, ploidy = round(tf, 4), round(ploidy, 4)
    mu = _expected_log2(np.array([tf]), np.array([ploidy]), st)[0]
    path = _viterbi_path(y, new_chrom, mu, scale, df, log_pi, np.log(trans))
    states_all = np.full(len(log2), -1)
    states_all[ok] = st[path].astype(int)
    expected = np.full(len(log2), np.nan)
    expected[ok] = mu[path]
    return CopyNumberFit(tf, ploidy, scale, loglik, null, states_all, expected, tuple(int(s) for s in states))


def cna_features(log2: np.ndarray, fit: CopyNumberFit, grid: BinGrid) -> dict[str, float]:
    """``tf_estimate`` and copy-number summaries: ploidy, fraction of genome altered, segment count, noise,
    likelihood gain over a tumour-free model, and the mean log2 ratio of each chromosome (``cna_log2_{chrom}``)."""
    valid = fit.states >= 0
    out = {
        "tf_estimate": fit.tumour_fraction,
        "cna_ploidy": fit.ploidy,
        "cna_fga": float(np.mean(fit.states[valid] != 2)) if valid.any() else float("nan"),
        "cna_n_segments": float("nan"),
        "cna_noise": fit.scale,
        "cna_llr": fit.loglik - fit.loglik_null,
    }
    if valid.any():
        st, ch = fit.states[valid], grid.chrom_index[valid]
        out["cna_n_segments"] = float(1 + np.sum((st[1:] != st[:-1]) | (ch[1:] != ch[:-1])))
    sums = np.bincount(grid.chrom_index, weights=np.where(np.isfinite(log2), log2, 0.0), minlength=len(grid.chroms))
    ns = np.bincount(grid.chrom_index, weights=np.isfinite(log2).astype(float), minlength=len(grid.chroms))
    for i, chrom in enumerate(grid.chroms):
        out[f"cna_log2_{chrom}"] = float(sums[i] / ns[i]) if ns[i] else float("nan")
    return out


# --------------------------------------------------------------------------------------------------- extractor


@functools.lru_cache(maxsize=4)
def _load_panel(stamp: tuple[str, int, int]) -> PanelOfNormals:
    return PanelOfNormals.load(stamp[0])


class FragmentomicsExtractor(Extractor):
    """cfDNA fragmentomics features of one fragment file or BAM per sample (see the module docstring).

    Feature groups (``groups``) and their names:

    - ``length``: ``len_mean, len_median, len_sd, len_mode, len_s150, len_short_100_150, len_short_long_ratio,
      len_period10_amp, len_bin_{lo}_{hi}`` (fragments with MAPQ >= ``min_mapq``, ``min_length`` - ``max_length``);
    - ``coverage``: ``cov_{chrom}_{k}``, fragments per million by ``intersect_policy`` in ``coarse_bin_size`` bins
      (a chromosome's last coarse bin, when shorter than ``coarse_merge_tail`` x ``coarse_bin_size``, is merged into
      the one before);
    - ``delfi``: ``delfi_ratio_{chrom}_{k}``, GC-corrected short/long ratio in ``bin_size`` bins merged to
      ``coarse_bin_size`` (GC correction, and masking bins less than ``min_acgt`` A/C/G/T, need
      ``references: genome_fasta``);
    - ``motif`` (only with ``genome_fasta``): ``motif_{KMER}`` frequencies and ``mds``;
    - ``cna``: ``tf_estimate, cna_ploidy, cna_fga, cna_n_segments, cna_noise, cna_llr, cna_log2_{chrom}`` from
      ``cna_bin_size`` bins, normalised by ``panel_of_normals`` when given (a path, absolute or relative to the
      cohort, or the name of a cohort ``references:`` entry).

    Bins tile the chromosomes of ``references: chrom_sizes`` (else the FASTA index, else each sample's furthest
    fragment end, which makes the last bins sample-dependent); ``chroms`` selects them: ``"autosomes"`` (chr1-22,
    with or without ``chr``), ``"all"``, or a list of names.
    """

    name: ClassVar[str] = "fragmentomics"
    formats: ClassVar[tuple[str, ...]] = ("fragments",)
    version: ClassVar[str] = "1"
    per_sample: ClassVar[bool] = True

    def __init__(
        self,
        groups: Sequence[str] = FEATURE_GROUPS,
        *,
        min_mapq: int = 30,
        min_length: int = 50,
        max_length: int = 350,
        length_bin_width: int = 10,
        intersect_policy: IntersectPolicy = "midpoint",
        bin_size: int = 100_000,
        coarse_bin_size: int = 1_000_000,
        coarse_merge_tail: float = 0.5,
        cna_bin_size: int = 100_000,
        min_acgt: float = 0.95,
        delfi_short: Sequence[int] = (100, 150),
        delfi_long: Sequence[int] = (151, 220),
        delfi_trim_percentile: float = 10.0,
        kmer: int = 4,
        motif_min_mapq: int = 20,
        motif_min_length: int | None = 50,
        motif_max_length: int | None = None,
        motif_ends: Literal["both", "strand"] = "both",
        chroms: str | Sequence[str] = "autosomes",
        panel_of_normals: str | None = None,
        cna_states: Sequence[int] = (1, 2, 3, 4, 5),
        cna_switch_prob: float = 0.01,
    ):
        unknown = sorted(set(groups) - set(FEATURE_GROUPS))
        if unknown:
            raise ValueError(f"unknown feature group(s) {unknown}; choose from {', '.join(FEATURE_GROUPS)}")
        if intersect_policy not in ("midpoint", "any"):
            raise ValueError(f"intersect_policy must be 'midpoint' or 'any', got {intersect_policy!r}")
        if coarse_bin_size % bin_size:
            raise ValueError(f"coarse_bin_size ({coarse_bin_size}) must be a multiple of bin_size ({bin_size})")
        if not 0 < min_length <= max_length:
            raise ValueError(f"need 0 < min_length <= max_length, got {min_length}, {max_length}")
        if motif_ends not in ("both", "strand"):
            raise ValueError(f"motif_ends must be 'both' or 'strand', got {motif_ends!r}")
        self.groups = tuple(g for g in FEATURE_GROUPS if g in set(groups))
        self.min_mapq = int(min_mapq)
        self.min_length = int(min_length)
        self.max_length = int(max_length)
        self.length_bin_width = int(length_bin_width)
        self.intersect_policy = intersect_policy
        self.bin_size = int(bin_size)
        self.coarse_bin_size = int(coarse_bin_size)
        self.coarse_merge_tail = float(coarse_merge_tail)
        self.cna_bin_size = int(cna_bin_size)
        self.min_acgt = float(min_acgt)
        self.delfi_short = (int(delfi_short[0]), int(delfi_short[1]))
        self.delfi_long = (int(delfi_long[0]), int(delfi_long[1]))
        self.delfi_trim_percentile = float(delfi_trim_percentile)
        self.kmer = int(kmer)
        self.motif_min_mapq = int(motif_min_mapq)
        self.motif_min_length = None if motif_min_length is None else int(motif_min_length)
        self.motif_max_length = None if motif_max_length is None else int(motif_max_length)
        self.motif_ends = motif_ends
        self.chroms = chroms if isinstance(chroms, str) else tuple(str(c) for c in chroms)
        self.panel_of_normals = panel_of_normals
        self.cna_states = tuple(int(s) for s in cna_states)
        self.cna_switch_prob = float(cna_switch_prob)

    # ----------------------------------------------------------------------------------------------- inputs

    def _panel_path(self, cohort: Cohort) -> Path | None:
        if not self.panel_of_normals:
            return None
        if self.panel_of_normals in cohort.spec.references:
            return cohort.path(cohort.spec.references[self.panel_of_normals])
        p = Path(self.panel_of_normals)
        return p if p.is_absolute() else cohort.path(str(p))

    def references(self, cohort: Cohort) -> dict[str, Path]:
        refs = {k: cohort.path(v) for k, v in cohort.spec.references.items() if k in ("genome_fasta", "chrom_sizes")}
        pon = self._panel_path(cohort)
        if pon is not None:
            refs["panel_of_normals"] = pon
        return refs

    def _select_chroms(self, sizes: Mapping[str, int]) -> dict[str, int]:
        if self.chroms == "all":
            return dict(sizes)
        if self.chroms == "autosomes":
            out = {c: s for c, s in sizes.items() if AUTOSOME_RE.match(c)}
            return dict(sorted(out.items(), key=lambda kv: int(AUTOSOME_RE.match(kv[0]).group(2))))
        if isinstance(self.chroms, str):
            raise ValueError(f"chroms must be 'autosomes', 'all' or a list of names, got {self.chroms!r}")
        return {c: sizes[c] for c in self.chroms if c in sizes}

    def _chrom_sizes(self, refs: Mapping[str, Path], fasta: ReferenceGenome | None, frags: Fragments) -> dict[str, int]:
        if "chrom_sizes" in refs:
            return read_chrom_sizes(refs["chrom_sizes"])
        if fasta is not None:
            return fasta.sizes
        ends = pd.Series(frags.end).groupby(frags.chrom).max()
        return {frags.chrom_names[int(c)]: int(e) for c, e in ends.items()}

    def _inputs(self, cohort: Cohort, frags: Fragments) -> tuple[BinGrid, ReferenceGenome | None, np.ndarray | None]:
        """The bin grid (at ``bin_size``), the reference (if any) and the panel of normals' log2 on the CNA grid."""
        refs = self.references(cohort)
        fasta = ReferenceGenome(refs["genome_fasta"]) if "genome_fasta" in refs else None
        sizes = self._select_chroms(self._chrom_sizes(refs, fasta, frags))
        if not sizes:
            raise SampleFailure(
                f"no chromosome left for binning with chroms={self.chroms!r}; set the extractor's chroms to the "
                "names your reference uses"
            )
        grid = BinGrid.from_sizes(sizes, self.bin_size)
        if not np.isin(grid.chrom_codes(frags.chrom_names), np.arange(len(grid.chroms))).any():
            raise SampleFailure(
                f"none of the fragment chromosomes ({', '.join(frags.chrom_names[:5])}) is among the binned "
                f"chromosomes ({', '.join(grid.chroms[:5])}, ...); use the reference's chromosome names"
            )
        panel = None
        pon_path = refs.get("panel_of_normals")
        if pon_path is not None and "cna" in self.groups:
            try:
                panel = _load_panel(_stamp(pon_path)).on(grid.with_bin_size(self.cna_bin_size))
            except FileNotFoundError as exc:
                raise SampleFailure(f"panel of normals {pon_path} not found") from exc
            except (DataFileError, ValueError) as exc:
                raise SampleFailure(f"panel of normals {pon_path}: {exc}") from exc
        return grid, fasta, panel

    def _read(self, cohort: Cohort, sample: pd.Series) -> Fragments:
        path = cohort.path(sample["path"])
        q = self.min_mapq if "motif" not in self.groups else min(self.min_mapq, self.motif_min_mapq)
        try:
            frags = read_fragments(path, min_mapq=q)
        except DataFileError as exc:
            raise SampleFailure(str(exc)) from exc
        except OSError as exc:  # permissions, a vanished file: still this sample's file only
            raise SampleFailure(f"{path} cannot be read ({exc.strerror or exc})") from exc
        if len(frags) == 0:
            raise SampleFailure(f"{path}: no fragments with MAPQ >= {q}")
        return frags

    # ----------------------------------------------------------------------------------------------- features

    def cna_profile(
        self, frags: Fragments, grid: BinGrid, fasta: ReferenceGenome | None, panel: np.ndarray | None = None
    ) -> tuple[BinGrid, np.ndarray]:
        """GC-corrected log2 ratios on the ``cna_bin_size`` grid (fragments already filtered)."""
        cgrid = grid.with_bin_size(self.cna_bin_size)
        counts = bin_counts(frags, cgrid, "midpoint")
        gc = None
        bases = (cgrid.end - cgrid.start).astype(float)
        if fasta is not None:
            gc, acgt = fasta.bin_composition(cgrid)
            bases = bases * acgt
        return cgrid, copy_number_log2(counts, bases, gc=gc, panel=panel, min_bases=0.5 * self.cna_bin_size)

    def features(
        self, frags: Fragments, grid: BinGrid, fasta: ReferenceGenome | None = None, panel: np.ndarray | None = None
    ) -> dict[str, float]:
        """All features of one library (``frags`` as read, before filtering) on ``grid`` (at ``bin_size``)."""
        main = frags.filter(min_mapq=self.min_mapq, min_length=self.min_length, max_length=self.max_length)
        if len(main) == 0:
            raise SampleFailure(
                f"no fragments with MAPQ >= {self.min_mapq} and length {self.min_length}-{self.max_length} bp"
            )
        out: dict[str, float] = {}
        if "length" in self.groups:
            hist = length_histogram(main.lengths, self.min_length, self.max_length)
            out.update(
                length_features(
                    hist, self.min_length, bin_width=self.length_bin_width, short=self.delfi_short, long=self.delfi_long
                )
            )
        coarse = grid.with_bin_size(self.coarse_bin_size, self.coarse_merge_tail)
        if "coverage" in self.groups:
            cov = bin_counts(main, coarse, self.intersect_policy) * (1e6 / len(main))
            out.update(zip(coarse.labels("cov"), (float(v) for v in cov), strict=True))
        if "delfi" in self.groups:
            gc = mask = None
            if fasta is not None:
                gc, acgt = fasta.bin_composition(grid)
                mask = acgt >= self.min_acgt
            prof = delfi_profile(
                frags.filter(min_mapq=self.min_mapq),
                grid,
                gc=gc,
                mask=mask,
                short=self.delfi_short,
                long=self.delfi_long,
                trim_percentile=self.delfi_trim_percentile,
            )
            ratio = delfi_merge(prof, grid, coarse)
            out.update(zip(coarse.labels("delfi_ratio"), (float(v) for v in ratio), strict=True))
        if "motif" in self.groups and fasta is not None:
            mf = frags.filter(
                min_mapq=self.motif_min_mapq, min_length=self.motif_min_length, max_length=self.motif_max_length
            )
            counts = end_motif_counts(mf, fasta, self.kmer, self.motif_ends)
            total = counts.sum()
            freqs = counts / total if total else np.full(len(counts), np.nan)
            out.update(zip((f"motif_{m}" for m in motif_names(self.kmer)), (float(v) for v in freqs), strict=True))
            out["mds"] = motif_diversity_score(counts, self.kmer)
        if "cna" in self.groups:
            cgrid, log2 = self.cna_profile(main, grid, fasta, panel)
            fit = fit_tumour_fraction(log2, cgrid.chrom_index, states=self.cna_states, switch_prob=self.cna_switch_prob)
            out.update(cna_features(log2, fit, cgrid))
        return out

    def extract_sample(self, cohort: Cohort, sample: pd.Series) -> dict[str, float]:
        frags = self._read(cohort, sample)
        grid, fasta, panel = self._inputs(cohort, frags)
        return self.features(frags, grid, fasta, panel)

    def build_panel_of_normals(
        self, cohort: Cohort, samples: pd.DataFrame | Iterable[str], *, min_samples: int = 1
    ) -> PanelOfNormals:
        """A panel of normals from ``samples`` (rows of samples.csv, or sample ids) of ``cohort``, with these settings.

        Use libraries without tumour DNA (healthy donors, or samples of a cohort known to be tumour-free); save it
        with :meth:`PanelOfNormals.save` and point ``panel_of_normals`` at the file. A library that cannot be used
        (unreadable, no fragment passing the filters, no usable copy-number bin) is left out with a warning naming
        it and the reason (also in ``skipped``), so one bad library does not cost the panel; fewer than
        ``min_samples`` usable libraries raise a ValueError listing every reason. A broken reference file raises.
        """
        if not isinstance(samples, pd.DataFrame):
            ids = list(samples)
            samples = cohort.samples[cohort.samples["sample_id"].isin(ids)]
        profiles = []
        skipped: dict[str, str] = {}
        grid = None
        for _, row in samples.iterrows():
            try:
                frags = self._read(cohort, row)
                sample_grid, fasta, _ = self._inputs(cohort, frags)
                main = frags.filter(min_mapq=self.min_mapq, min_length=self.min_length, max_length=self.max_length)
                if len(main) == 0:
                    raise SampleFailure(
                        f"{row['path']}: no fragments with MAPQ >= {self.min_mapq} and length "
                        f"{self.min_length}-{self.max_length} bp"
                    )
                profile = self.cna_profile(main, sample_grid, fasta)[1]
                if not np.isfinite(profile).any():
                    raise SampleFailure(f"{row['path']}: no copy-number bin with enough coverage")
            except SampleFailure as exc:
                skipped[str(row["sample_id"])] = str(exc)
                continue
            profiles.append(profile)
            grid = sample_grid
        shown = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        if grid is None or len(profiles) < max(1, min_samples):
            raise ValueError(
                f"a panel of normals needs at least {max(1, min_samples)} usable normal librar(ies); "
                f"{len(profiles)} of the {len(samples)} given are usable" + (f" (left out: {shown})" if skipped else "")
            )
        if skipped:
            warnings.warn(
                f"panel of normals built from {len(profiles)} of {len(samples)} libraries; left out: {shown}",
                stacklevel=2,
            )
        pon = PanelOfNormals.build(profiles, grid.with_bin_size(self.cna_bin_size))
        return PanelOfNormals(pon.grid, pon.log2, pon.n_samples, skipped)


def finaletoolkit_motif_multiplicity(frags: Fragments, sizes: dict[str, int], window: int = 1_000_000) -> np.ndarray:
    """How often FinaleToolkit 1.1.0's ``end-motifs`` counts each fragment: once per 1-Mb window it overlaps.

    Its windows are ``range(0, L - W, W)`` then ``[L - L % W, L)`` (``_genome_window_args``), so a fragment crossing
    a window edge is counted twice. Used to compare our (count-once) end motifs with FinaleToolkit's exactly, in the
    tests and in bench/bench_fragments.py.
    """
    mult = np.zeros(len(frags), dtype=np.int64)
    for ci, chrom in enumerate(frags.chrom_names):
        if chrom not in sizes:
            continue
        length = sizes[chrom]
        wins = [(s, s + window) for s in range(0, length - window, window)] + [(length - length % window, length)]
        sel = frags.chrom == ci
        for a, b in wins:
            mult[sel] += (frags.start[sel] < b) & (frags.end[sel] > a)
    return mult

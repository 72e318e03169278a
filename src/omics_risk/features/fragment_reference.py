"""The reference genome of cfDNA fragmentomics: a FASTA read as base codes, the GC content of genome bins, and
the LOESS correction against bin GC that DELFI ratios and copy-number profiles share."""

from __future__ import annotations

import functools
from functools import cached_property
from pathlib import Path

import numpy as np
import pysam
from statsmodels.nonparametric.smoothers_lowess import lowess

from omics_risk.data.readers import DataFileError
from omics_risk.features.fragment_bins import BinGrid

#: Base codes: A=0, C=1, G=2, T=3, anything else (N, IUPAC) = 4; lower case (soft-masked) is the same base.
_BASE_LUT = np.full(256, 4, dtype=np.uint8)
for _i, _b in enumerate("ACGT"):
    _BASE_LUT[ord(_b)] = _i
    _BASE_LUT[ord(_b.lower())] = _i
#: A reference up to this size is kept in memory as base codes (the synthetic genome, small panels); larger ones
#: (hg38) are read one chromosome at a time.
_CACHE_GENOME_BP = 400_000_000


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _encode(seq: str) -> np.ndarray:
    return _BASE_LUT[np.frombuffer(seq.encode("ascii", errors="replace"), dtype=np.uint8)]


@functools.lru_cache(maxsize=1)
def _whole_genome_codes(stamp: tuple[str, int, int]) -> dict[str, np.ndarray]:
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
        with pysam.FastaFile(str(self.path)) as fa:
            return _encode(fa.fetch(chrom))

    def bin_composition(self, grid: BinGrid) -> tuple[np.ndarray, np.ndarray]:
        """(GC fraction of the A/C/G/T bases, NaN when none; fraction of the bin that is A/C/G/T) per bin."""
        return _bin_composition(self._stamp, grid)


def gc_lowess_fit(gc: np.ndarray, y: np.ndarray, valid: np.ndarray, frac: float = 0.75) -> np.ndarray:
    """LOESS (statsmodels ``lowess``, span ``frac``) fit of ``y`` against bin GC, evaluated at every bin.

    Fitted on the ``valid`` bins only; bins with a GC outside the fitted range get the nearest end of the curve.
    """
    x = gc[valid]
    span = float(np.ptp(x)) if len(x) else 0.0
    fit = lowess(y[valid], x, frac=frac, it=3, delta=0.005 * span, return_sorted=True)
    xs, ys = fit[:, 0], fit[:, 1]
    out = np.full(len(gc), np.nan)
    ok = np.isfinite(gc)
    out[ok] = np.interp(gc[ok], xs, ys)
    return out

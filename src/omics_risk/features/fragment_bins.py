"""Genome bins for cfDNA fragments: a fixed-width grid over the chromosomes and fragment counts per bin or per
interval (FinaleToolkit's ``coverage`` semantics), the counting every fragmentomics feature builds on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd

from omics_risk.data.readers import Fragments
from omics_risk.features._fragment_kernels import bin_counts_kernel

IntersectPolicy = Literal["midpoint", "any"]


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

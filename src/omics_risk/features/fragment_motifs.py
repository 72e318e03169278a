"""5' end motifs of cfDNA fragments: k-mer counts against the reference, the motif diversity score, and
FinaleToolkit's per-window count multiplicity for exact comparisons."""

from __future__ import annotations

from typing import Literal

import numpy as np

from omics_risk.data.readers import Fragments
from omics_risk.features.fragment_reference import ReferenceGenome


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

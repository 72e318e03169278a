"""Numba kernels of cfDNA fragmentomics: the copy-number HMM (:mod:`omics_risk.features.fragment_copy_number`) and
bin counting (:mod:`omics_risk.features.fragment_bins`).

The tumour-fraction fit scores thousands of (tumour fraction, ploidy, noise scale) candidates with the forward
algorithm; a compiled loop does it without materialising the candidates x bins x states emission array.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True)
def _t_logpdf(x: float, scale: float, df: float, const: float) -> float:
    z = x / scale
    return const - math.log(scale) - 0.5 * (df + 1.0) * math.log1p(z * z / df)


@numba.njit(cache=True)
def forward_loglik(
    y: np.ndarray,
    new_chrom: np.ndarray,
    mu: np.ndarray,
    scale: np.ndarray,
    df: float,
    log_pi: np.ndarray,
    trans: np.ndarray,
) -> np.ndarray:
    """Log-likelihood of ``y`` under each candidate ``g``: state means ``mu[g]``, Student-t scale ``scale[g]``.

    Scaled forward algorithm; the chain restarts (initial probabilities ``exp(log_pi)``) wherever ``new_chrom``.
    """
    n_cand, n_states = mu.shape
    const = math.lgamma(0.5 * (df + 1.0)) - math.lgamma(0.5 * df) - 0.5 * math.log(df * math.pi)
    pi = np.exp(log_pi)
    out = np.zeros(n_cand)
    alpha = np.zeros(n_states)
    prev = np.zeros(n_states)
    emis = np.zeros(n_states)
    for g in range(n_cand):
        ll = 0.0
        for i in range(y.shape[0]):
            m = -np.inf
            for s in range(n_states):
                emis[s] = _t_logpdf(y[i] - mu[g, s], scale[g], df, const)
                if emis[s] > m:
                    m = emis[s]
            total = 0.0
            for s in range(n_states):
                if new_chrom[i]:
                    a = pi[s]
                else:
                    a = 0.0
                    for r in range(n_states):
                        a += prev[r] * trans[r, s]
                alpha[s] = a * math.exp(emis[s] - m)
                total += alpha[s]
            for s in range(n_states):
                prev[s] = alpha[s] / total
            ll += math.log(total) + m
        out[g] = ll
    return out


@numba.njit(cache=True)
def bin_counts_kernel(
    chrom: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    offset: np.ndarray,
    size: np.ndarray,
    n_local: np.ndarray,
    bin_size: int,
    n_bins: int,
    midpoint: bool,
) -> np.ndarray:
    """Fragments per bin in one pass (no per-fragment temporaries): by midpoint, or every bin a fragment overlaps.

    ``offset``, ``size`` and ``n_local`` are indexed by the fragments' chromosome code: the chromosome's first
    global bin (-1: not binned), its length and its number of bins (the last one absorbs a merged tail).
    """
    counts = np.zeros(n_bins + 1, dtype=np.int64)
    for i in range(chrom.shape[0]):
        c = chrom[i]
        o = offset[c]
        if o < 0:
            continue
        last = n_local[c] - 1
        if midpoint:
            m = (start[i] + end[i]) >> 1
            if m >= size[c] or m < 0:
                continue
            counts[o + min(m // bin_size, last)] += 1
        else:
            if start[i] >= size[c] or end[i] <= 0:
                continue
            first = min(max(start[i], 0) // bin_size, last)
            stop = min((end[i] - 1) // bin_size, last)
            counts[o + first] += 1  # difference array: +1 at the first bin, -1 after the last
            counts[o + stop + 1] -= 1
    if not midpoint:
        for b in range(1, n_bins + 1):
            counts[b] += counts[b - 1]
    return counts[:n_bins]

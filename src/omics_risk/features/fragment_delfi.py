"""DELFI short / long fragment ratios per genome bin (Cristiano 2019), GC-corrected and merged to coarse bins."""

from __future__ import annotations

import numpy as np
import pandas as pd

from omics_risk.data.readers import Fragments
from omics_risk.features.fragment_bins import BinGrid, bin_counts
from omics_risk.features.fragment_reference import gc_lowess_fit


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

"""Fragment-length features of cfDNA: the 1-bp length histogram and its summaries (median, short fraction,
10-bp periodicity, binned frequencies)."""

from __future__ import annotations

import numpy as np


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

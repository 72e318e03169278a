"""Copy number from cfDNA coverage, ichorCNA style: GC-corrected log2 ratios, a panel of normals, and the
tumour fraction and ploidy of a Student-t HMM over clonal copy states."""

from __future__ import annotations

import functools
import itertools
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import gammaln

from omics_risk.data.readers import DataFileError
from omics_risk.features._fragment_kernels import forward_loglik
from omics_risk.features.fragment_bins import BinGrid
from omics_risk.features.fragment_reference import gc_lowess_fit


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


@functools.lru_cache(maxsize=4)
def _load_panel(stamp: tuple[str, int, int]) -> PanelOfNormals:
    return PanelOfNormals.load(stamp[0])

"""Percentile bootstrap over patients: a point estimate with its CI (:class:`Estimate`), the lenient wrapper that
drops resamples a metric cannot evaluate, and the paired test of two scores' C-index difference.

One engine for every output: :func:`bootstrap_indices` is the only place resamples are drawn, and
:func:`paired_comparison` is the one comparison of a model against the reference that ``summary.json`` /
``summary.csv``, the run report (``report.html``, forest plot, ``comparison.csv``), the model card and
``evaluate.py mode=compare`` all report. Its settings come from one config entry (:class:`BootstrapSettings`,
:func:`bootstrap_settings`): the same size, seed and patients give the same resamples and so the same p everywhere.

With repeated cross-validation (risks given as ``(n_repeats, n_patients)``), the statistic of a resample is the mean
over repeats of the statistic of each repeat's pooled out-of-fold risks, computed on the same resampled patients
(patients are resampled jointly across repeats), so the point estimate, CI and p use every repeat. Beside the
bootstrap (which covers patient sampling only), :func:`corrected_resampled_t` is the corrected resampled t-test of
Nadeau & Bengio (2003) / Bouckaert & Frank (2004) on the per-fold C differences, which also covers the variability
of training (different folds, different fits).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from omics_risk.evaluation.pooling import within_fold_ranks
from omics_risk.evaluation.survival_metrics import harrell_c

__all__ = [
    "HEADLINE_P",
    "METRIC_RESAMPLES",
    "BootstrapSettings",
    "Estimate",
    "PairedComparison",
    "bootstrap_indices",
    "bootstrap_metric",
    "bootstrap_settings",
    "corrected_resampled_t",
    "fold_cindex",
    "metric_resamples",
    "paired_bootstrap_difference",
    "paired_comparison",
    "pooled_cindex",
    "resampled_cindex",
]

#: The p-values a comparison can headline (``evaluation.headline_p``).
HEADLINE_P = ("bootstrap", "corrected_t")


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a percentile bootstrap confidence interval."""

    value: float
    low: float
    high: float
    n_boot: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}": self.value, f"{prefix}_ci_low": self.low, f"{prefix}_ci_high": self.high}

    def __str__(self) -> str:
        return f"{self.value:.3f} ({self.low:.3f}-{self.high:.3f})"


@dataclass(frozen=True)
class BootstrapSettings:
    """The one bootstrap of a run (``evaluation.bootstrap``): resamples, seed and which p a comparison headlines."""

    n: int = 1000
    seed: int = 0
    headline_p: str = "bootstrap"

    def __post_init__(self) -> None:
        if int(self.n) < 1:
            raise ValueError(f"evaluation.bootstrap (resamples) must be at least 1, got {self.n}")
        if self.headline_p not in HEADLINE_P:
            raise ValueError(f"evaluation.headline_p must be one of {', '.join(HEADLINE_P)}, got {self.headline_p!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"n": int(self.n), "seed": int(self.seed), "headline_p": self.headline_p}


def _get(cfg: Any, key: str) -> Any:
    if cfg is None:
        return None
    if isinstance(cfg, Mapping):
        return cfg.get(key)
    return getattr(cfg, "get", lambda k, d=None: None)(key)


def bootstrap_settings(evaluation: Any) -> BootstrapSettings:
    """The bootstrap of an ``evaluation`` config section (train.py's ``evaluation`` or evaluate.py's).

    ``evaluation.bootstrap`` is either the number of resamples (with ``evaluation.seed``, default 0) or a mapping
    ``{n, seed}``; ``evaluation.headline_p`` picks the p that tables headline (``bootstrap`` or ``corrected_t``).
    Old keys: evaluate.py's ``evaluation.n_boot`` (null by default) is still read as the size, and wins when given;
    train.py's ``evaluation.report.n_boot`` (a second, smaller bootstrap of the run report) is refused with a
    one-line error naming the new key.
    """
    boot, seed, n_old = _get(evaluation, "bootstrap"), _get(evaluation, "seed"), _get(evaluation, "n_boot")
    report = _get(evaluation, "report")
    if _get(report, "n_boot") is not None:
        raise ValueError("evaluation.report.n_boot is gone: every output (summary, report, forest plot, model card, "
                         "compare) uses one bootstrap, evaluation.bootstrap (e.g. evaluation.bootstrap="
                         f"{int(_get(report, 'n_boot'))} evaluation.report.n_boot=null)")
    if boot is None:
        n = n_old
    elif isinstance(boot, int | float | str):
        n = boot
    else:  # a mapping {n, seed}
        n = _get(boot, "n")
        seed = _get(boot, "seed") if _get(boot, "seed") is not None else seed
    if n_old is not None:  # evaluate.py's old name, null unless given: it wins over the default size
        n = n_old
    return BootstrapSettings(n=int(n if n is not None else 1000), seed=int(seed if seed is not None else 0),
                             headline_p=str(_get(evaluation, "headline_p") or "bootstrap"))


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """The ``(n_boot, n)`` patient indices of the resamples: the only place resamples are drawn, so the same size,
    seed and number of patients give the same resamples in every output."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


_indices = bootstrap_indices  # the old private name (tests, benchmarks)

#: Resamples behind the CIs of the run report's and ``evaluate.py mode=compare``'s secondary metrics (Uno's C, td-AUC,
#: Brier scores, calibration in the large, log-rank p, hazard ratios): one scikit-survival / lifelines call per
#: resample each (~0.1-0.3 s per model and resample on 2 cores), against a matrix product for Harrell's C.
METRIC_RESAMPLES = 200


def metric_resamples(n_boot: int) -> int:
    """How many of the run's ``n_boot`` resamples the secondary metrics use: the first ``min(n_boot, 200)``.

    They are the same draws: ``bootstrap_indices(n, k, seed)`` is the first ``k`` rows of
    ``bootstrap_indices(n, n_boot, seed)`` (one generator, drawn row by row). Harrell's C, every paired difference
    and every p-value use all ``n_boot``; with 1,000 resamples the secondary metrics would take 5x as long (minutes
    per model on 2 cores)."""
    return min(int(n_boot), METRIC_RESAMPLES)


def bootstrap_metric(metric, *arrays: np.ndarray, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> Estimate:
    """Percentile bootstrap CI of ``metric(*arrays)`` over patients."""
    arrays = tuple(np.asarray(a) for a in arrays)
    value = metric(*arrays)
    boots = np.array([metric(*(a[idx] for a in arrays))
                      for idx in bootstrap_indices(len(arrays[0]), n_boot, seed)], dtype=float)
    boots = boots[np.isfinite(boots)]
    if len(boots) == 0:
        return Estimate(value, float("nan"), float("nan"), 0)
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(value), float(low), float(high), len(boots))


def _lenient(metric: Callable[..., float]) -> Callable[..., float]:
    """``metric`` returning NaN on a resample it cannot evaluate (no event before a horizon, no comparable pair, a
    Cox fit that does not converge); bootstrap_metric drops those resamples."""

    def wrapped(*arrays: np.ndarray) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return float(metric(*arrays))
            except (ValueError, ZeroDivisionError, np.linalg.LinAlgError):  # incl. HorizonError, ConvergenceError
                return float("nan")

    return wrapped


def _with_ci(metric: Callable[..., float], *arrays: np.ndarray, n_boot: int, seed: int, alpha: float,
             name: str = "metric") -> Estimate:
    """Point estimate computed strictly (errors surface), CI by bootstrap_metric over patients; warns when many
    resamples could not be evaluated, because the CI is then conditional on the ones that could."""
    value = float(metric(*arrays))
    est = bootstrap_metric(_lenient(metric), *arrays, n_boot=n_boot, seed=seed, alpha=alpha)
    if n_boot and est.n_boot < 0.9 * n_boot:
        warnings.warn(f"{name}: only {est.n_boot} of {n_boot} bootstrap resamples could be evaluated (a horizon or "
                      "time grid at the edge of the follow-up, or too few events); its CI is unreliable", stacklevel=3)
    return Estimate(value, est.low, est.high, est.n_boot)


def _by_patient(risk: np.ndarray, n: int) -> np.ndarray:
    """``(n,)`` or ``(n_repeats, n)`` risks as ``(n, n_repeats)`` (patients on the resampled axis)."""
    r = np.asarray(risk, dtype=float)
    if r.ndim == 1:
        r = r[None, :]
    if r.ndim != 2 or r.shape[1] != n:
        raise ValueError(f"risks must be (n_patients,) or (n_repeats, n_patients) with {n} patients, got {r.shape}")
    return r.T


def _mean_c(time: np.ndarray, event: np.ndarray, risks: np.ndarray) -> float:
    """Harrell's C of each repeat's risks (columns of ``risks``), averaged over the repeats."""
    return float(np.mean([harrell_c(time, event, risks[:, j]) for j in range(risks.shape[1])]))


#: Patients up to which resampled C-indices come from the pair matrices (two n x n float arrays per score) rather
#: than one scikit-survival call per resample.
DENSE_MAX = 4000


def _resampled_c(time: np.ndarray, event: np.ndarray, risks: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Harrell's C on each resample ``idx`` (rows of patient indices), averaged over the repeats (columns of
    ``risks``); NaN where a resample has no comparable pair.

    A resample is the original patients with multiplicities w, so its C is sum w_i w_j A_ij / sum w_i w_j M_ij over
    the original pairs, M_ij = 1 when (i, j) is comparable and A_ij = M_ij x (1 if i is ranked riskier, 1/2 on a
    tie): the pair rules of ``sksurv.metrics.concordance_index_censored`` (event i before j, or at the time j was
    censored; risks within 1e-8 tie; copies of one patient are never comparable), whose C on every resample it
    equals (tests check it). One matrix product per resample set instead of a scikit-survival call per resample:
    1,000 resamples of a few hundred patients take well under a second.
    """
    time, event = np.asarray(time, dtype=float), np.asarray(event).astype(bool)
    n, n_boot = len(time), len(idx)
    if n > DENSE_MAX:
        return np.array([_mean_c(time[i], event[i], risks[i]) for i in idx], dtype=float)
    later = time[None, :] > time[:, None]
    tied_censored = (time[None, :] == time[:, None]) & ~event[None, :]
    comparable = (event[:, None] & (later | tied_censored)).astype(float)
    counts = np.bincount((idx + n * np.arange(n_boot)[:, None]).ravel(), minlength=n_boot * n)
    w = counts.reshape(n_boot, n).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        den = ((w @ comparable) * w).sum(axis=1)
        out = np.zeros(n_boot)
        for j in range(risks.shape[1]):
            d = risks[:, j][:, None] - risks[:, j][None, :]
            score = comparable * np.where(np.abs(d) <= 1e-8, 0.5, (d > 0).astype(float))
            out += ((w @ score) * w).sum(axis=1) / den
    return np.where(den > 0, out / risks.shape[1], np.nan)


def resampled_cindex(time: np.ndarray, event: np.ndarray, risk: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Harrell's C of ``risk`` (``(n,)``, or ``(n_repeats, n)``: the mean over repeats) on each resample of ``idx``
    (rows of :func:`bootstrap_indices`), NaN where a resample has no comparable pair: the engine's C of a resample
    set, for callers that compare several scores on the same resamples (e.g. the modality ablation)."""
    time = np.asarray(time)
    return _resampled_c(time, event, _by_patient(risk, len(time)), np.asarray(idx))


def _p_two_sided(b: np.ndarray) -> float:
    """Share of resamples on the other side of zero, doubled (percentile bootstrap test)."""
    return float(min(1.0, 2 * min((b <= 0).mean(), (b >= 0).mean())))


def paired_bootstrap_difference(time: np.ndarray, event: np.ndarray, risk_a: np.ndarray, risk_b: np.ndarray, *,
                                n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[Estimate, float]:
    """C(a) - C(b) on the same resampled patients, and a two-sided bootstrap p-value for no difference.

    ``risk_a`` / ``risk_b``: ``(n,)``, or ``(n_repeats, n)`` for repeated cross-validation, where C is the mean over
    repeats of each repeat's C and a resample draws the same patients in every repeat."""
    time, event = np.asarray(time), np.asarray(event)
    a, b = _by_patient(risk_a, len(time)), _by_patient(risk_b, len(time))
    if a.shape != b.shape:
        raise ValueError(f"risk_a {a.shape} and risk_b {b.shape} differ in repeats")
    diff = _mean_c(time, event, a) - _mean_c(time, event, b)
    idx = bootstrap_indices(len(time), n_boot, seed)
    boots = _resampled_c(time, event, a, idx) - _resampled_c(time, event, b, idx)
    boots = boots[np.isfinite(boots)]
    if len(boots) == 0:
        return Estimate(float(diff), float("nan"), float("nan"), 0), float("nan")
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(diff), float(low), float(high), len(boots)), _p_two_sided(boots)


def _ranks(risk: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
    """``(n_repeats, n)`` risks ranked within each repeat's test folds (as ``train()`` pools them)."""
    r = np.atleast_2d(np.asarray(risk, dtype=float))
    if folds is None:
        return r
    f = np.atleast_2d(np.asarray(folds))
    if f.shape != r.shape:
        raise ValueError(f"folds {f.shape} and risks {r.shape} differ in shape")
    return np.vstack([within_fold_ranks(r[j], f[j]) for j in range(r.shape[0])])


def pooled_cindex(time: np.ndarray, event: np.ndarray, risk: np.ndarray, folds: np.ndarray | None = None, *,
                  n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> Estimate:
    """Harrell's C of pooled out-of-fold risks (``(n,)`` or ``(n_repeats, n)``; ranked within ``folds`` when given),
    averaged over repeats, with its percentile bootstrap CI (patients resampled jointly across repeats)."""
    time, event = np.asarray(time), np.asarray(event)
    ranks = _by_patient(_ranks(risk, folds), len(time))
    value = _mean_c(time, event, ranks)
    boots = _resampled_c(time, event, ranks, bootstrap_indices(len(time), n_boot, seed))
    boots = boots[np.isfinite(boots)]
    if len(boots) == 0:
        return Estimate(value, float("nan"), float("nan"), 0)
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return Estimate(value, float(low), float(high), len(boots))


def fold_cindex(time: np.ndarray, event: np.ndarray, risk: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Harrell's C of each test fold, ``(n_repeats, n_folds)`` (NaN where a fold has no comparable pair)."""
    time, event = np.asarray(time, float), np.asarray(event).astype(bool)
    r, f = np.atleast_2d(np.asarray(risk, dtype=float)), np.atleast_2d(np.asarray(folds))
    ids = np.unique(f[f >= 0])
    out = np.full((r.shape[0], len(ids)), np.nan)
    for j in range(r.shape[0]):
        for k, fold in enumerate(ids):
            sel = f[j] == fold
            out[j, k] = harrell_c(time[sel], event[sel], r[j, sel])
    return out


def corrected_resampled_t(differences: np.ndarray, test_train_ratio: float, *,
                          alpha: float = 0.05) -> tuple[Estimate, float]:
    """The corrected resampled t-test (Nadeau & Bengio 2003; Bouckaert & Frank 2004) of per-fold differences.

    ``differences``: one value per (repeat, fold), the model's C minus the reference's on that test fold;
    ``test_train_ratio``: n_test / n_train of a fold (1 / (K - 1) for K-fold CV). The variance of the mean is
    ``(1 / (R K) + n_test / n_train) * s^2`` instead of ``s^2 / (R K)``: the folds share training patients, so their
    differences are correlated, and the naive t-test is far too liberal. Returns the mean difference with its
    ``1 - alpha`` t interval (``n_boot`` = the number of differences) and the two-sided p, with R K - 1 degrees of
    freedom (``scipy.stats.t``); NaN when fewer than two finite differences.
    """
    d = np.asarray(differences, dtype=float).ravel()
    d = d[np.isfinite(d)]
    k = len(d)
    if k < 2:
        return Estimate(float(np.mean(d)) if k else float("nan"), float("nan"), float("nan"), k), float("nan")
    mean, var = float(d.mean()), 0.0 if np.ptp(d) == 0 else float(d.var(ddof=1))
    se = float(np.sqrt((1.0 / k + float(test_train_ratio)) * var))
    df = k - 1
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    p = (1.0 if mean == 0.0 else 0.0) if se == 0.0 else float(2 * stats.t.sf(abs(mean) / se, df))
    return Estimate(mean, mean - half, mean + half, k), p


@dataclass(frozen=True)
class PairedComparison:
    """A model against the reference on the same patients: its pooled C (with CI), the paired bootstrap difference
    and p, and where repeats x folds allow, the corrected resampled t-test of the per-fold differences."""

    cindex: Estimate
    difference: Estimate
    p_bootstrap: float
    repeats: int
    fold_difference: Estimate | None = None  # mean per-fold difference with its corrected t interval
    p_corrected_t: float = float("nan")
    headline_p: str = "bootstrap"

    @property
    def p(self) -> float:
        """The headline p (``evaluation.headline_p``); the bootstrap p where the t-test could not run (a single
        fold, a hold-out)."""
        return self.p_corrected_t if self.p_method == "corrected_t" else self.p_bootstrap

    @property
    def p_method(self) -> str:
        """Which test :attr:`p` comes from."""
        return ("corrected_t" if self.headline_p == "corrected_t" and np.isfinite(self.p_corrected_t)
                else "bootstrap")

    def row(self) -> dict[str, Any]:
        """The comparison-table columns: ``delta_c`` (+ CI), ``p_value`` (the headline p) and ``p_method``,
        ``p_bootstrap``, ``p_corrected_t``, ``delta_c_fold_mean`` (+ corrected t CI), ``repeats_pooled``."""
        fd = self.fold_difference
        nan = float("nan")
        return {"delta_c": self.difference.value, "delta_c_ci_low": self.difference.low,
                "delta_c_ci_high": self.difference.high, "p_value": self.p, "p_method": self.p_method,
                "p_bootstrap": self.p_bootstrap,
                "p_corrected_t": self.p_corrected_t, "delta_c_fold_mean": fd.value if fd else nan,
                "delta_c_fold_mean_ci_low": fd.low if fd else nan, "delta_c_fold_mean_ci_high": fd.high if fd else nan,
                "repeats_pooled": float(self.repeats)}


def _test_train_ratio(folds: np.ndarray) -> float:
    """Mean n_test / n_train over the folds of every repeat."""
    f = np.atleast_2d(np.asarray(folds))
    ratios = []
    for row in f:
        scored = row >= 0
        for fold in np.unique(row[scored]):
            n_test = int((row == fold).sum())
            ratios.append(n_test / max(int(scored.sum()) - n_test, 1))
    return float(np.mean(ratios)) if ratios else float("nan")


def paired_comparison(time: np.ndarray, event: np.ndarray, risk: np.ndarray, reference: np.ndarray,
                      folds: np.ndarray | None = None, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                      headline_p: str = "bootstrap", cindex: Estimate | None = None) -> PairedComparison:
    """The one comparison of a model's pooled out-of-fold risks with the reference's (see the module docstring).

    ``risk``, ``reference``: ``(n,)`` or ``(n_repeats, n)`` out-of-fold risks in the same patient order;
    ``folds``: the test fold of each patient in each repeat (same shape): risks are ranked within folds, and the
    corrected resampled t-test runs on the per-fold C differences. ``cindex``: the model's pooled C when already
    computed (:func:`pooled_cindex` with the same settings), to save its bootstrap.
    """
    time, event = np.asarray(time), np.asarray(event)
    ra, rb = _ranks(risk, folds), _ranks(reference, folds)
    c = cindex if cindex is not None else pooled_cindex(time, event, ra, n_boot=n_boot, seed=seed, alpha=alpha)
    diff, p = paired_bootstrap_difference(time, event, ra, rb, n_boot=n_boot, seed=seed, alpha=alpha)
    fold_diff, p_t = None, float("nan")
    if folds is not None:
        d = fold_cindex(time, event, risk, folds) - fold_cindex(time, event, reference, folds)
        if np.isfinite(d).sum() >= 2:
            fold_diff, p_t = corrected_resampled_t(d, _test_train_ratio(folds), alpha=alpha)
    return PairedComparison(cindex=c, difference=diff, p_bootstrap=p, repeats=ra.shape[0],
                            fold_difference=fold_diff, p_corrected_t=p_t, headline_p=headline_p)

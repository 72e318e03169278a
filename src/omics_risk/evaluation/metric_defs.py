"""The one list of metric definitions: every metric of the evaluation, with its name, how it is computed, which
direction is better, its display label and format.

Everything that shows or logs a metric reads :data:`METRICS`: ``evaluate_survival`` / ``evaluate_response`` (what is
computed, under which key), the run report's tables and descriptions (``describe_metric``), ``evaluate.py
mode=compare`` (which metrics it logs) and the MLflow metric names (``<name>`` in a run about one model,
``<model>/<name>`` in a run holding several: docs/evaluation.md). Adding a metric is one :class:`MetricDef`
appended with :func:`register` (docs/architecture.md, "Adding a metric").

A survival metric's ``jobs`` turns the inputs of one evaluation (:class:`SurvivalInputs`) into
``{key: (function, arrays)}``: the function is bootstrapped over patients with the arrays resampled together; a
metric that needs inputs the caller did not give (training data, horizons, survival curves, risk groups) returns
no job. Templated names carry ``{h}`` (a horizon in days, ``auc_365d``) or ``{group}``/``{reference}`` (risk groups).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np

from omics_risk.evaluation import survival_metrics as sm
from omics_risk.evaluation.bootstrap import Estimate
from omics_risk.evaluation.horizons import _check_grid, _hkey, _surv_at, horizon_label
from omics_risk.evaluation.response_metrics import balanced_accuracy, response_auc, response_brier
from omics_risk.evaluation.riskgroups import hazard_ratios, logrank_p

__all__ = [
    "METRICS",
    "PIPELINE_SUMMARY",
    "PRIMARY",
    "SUMMARY_ONLY",
    "MetricDef",
    "ResponseInputs",
    "SurvivalInputs",
    "cindex_summary",
    "describe_metric",
    "find_metric",
    "headline_metrics",
    "metric_names",
    "model_run_metrics",
    "rank_invalid_patterns",
    "register",
    "registered",
    "slow_metric_patterns",
]

#: A metric's jobs: ``{key: (function of the resampled arrays, arrays)}``.
Jobs = dict[str, tuple[Callable[..., float], tuple[np.ndarray, ...]]]


@dataclass(frozen=True)
class SurvivalInputs:
    """What one survival evaluation has (checked by ``evaluate_survival``): the evaluated patients' outcome and risk,
    and optionally the training outcome (IPCW), horizons, survival curves and risk groups."""

    time: np.ndarray
    event: np.ndarray
    risk: np.ndarray
    train_time: np.ndarray | None = None
    train_event: np.ndarray | None = None
    horizons: np.ndarray | None = None  # checked, sorted (days)
    tau: float | None = None  # Uno's C truncation, resolved when the training data are given
    surv: np.ndarray | None = None  # (n, len(times)) survival curves
    times: np.ndarray | None = None
    surv_at_own_time: np.ndarray | None = None
    group_codes: np.ndarray | None = None  # 0 = lowest-risk group
    group_labels: tuple[str, ...] = ()

    @property
    def has_train(self) -> bool:
        return self.train_time is not None and self.train_event is not None

    @property
    def train(self) -> dict[str, np.ndarray]:
        return {"train_time": self.train_time, "train_event": self.train_event}


@dataclass(frozen=True)
class ResponseInputs:
    """The labelled patients of a response evaluation."""

    label: np.ndarray
    prob: np.ndarray
    threshold: float = 0.5


@dataclass(frozen=True)
class MetricDef:
    """One metric: ``name`` (the key everywhere, possibly templated), ``label`` and ``description`` (reports),
    ``higher_is_better`` (None: a target value such as a slope of 1, or a p-value), ``kind`` (survival or
    response), ``jobs`` (how it is computed), ``fmt`` (display format), ``slow`` (left out of the quick setting),
    ``needs_log_hazard`` (meaningless on ranks), ``needs_groups`` (risk groups), ``headline`` (logged by the
    comparison), ``by_horizon_with`` (listed horizon by horizon together with that metric's keys)."""

    name: str
    label: str
    description: str
    higher_is_better: bool | None
    kind: Literal["survival", "response"]
    jobs: Callable[[SurvivalInputs], Jobs] | Callable[[ResponseInputs], Jobs]
    fmt: str = ".3f"
    slow: bool = False
    needs_log_hazard: bool = False
    needs_groups: bool = False
    headline: bool = False
    by_horizon_with: str | None = None

    def pattern(self) -> re.Pattern[str]:
        """The keys this metric produces, as a regex (``{h}`` a number of days, ``{group}`` a word)."""
        text = re.escape(self.name)
        for field, rx in (("h", r"(?P<h>\d+(?:\.\d+)?)"), ("group", r"(?P<group>\w+)"),
                          ("reference", r"(?P<reference>\w+)")):
            text = text.replace(re.escape("{" + field + "}"), rx)
        return re.compile(text)

    def glob(self) -> str:
        """The keys as a shell-style pattern (``evaluate_survival(exclude=...)``)."""
        return re.sub(r"\{\w+\}", "*", self.name)


# ------------------------------------------------------------------------------------------------ how each is computed
def _risk(x: SurvivalInputs) -> tuple[np.ndarray, ...]:
    return (x.time, x.event, x.risk)


def _harrell(x: SurvivalInputs) -> Jobs:
    return {"harrell_c": (sm.harrell_c, _risk(x))}


def _uno(x: SurvivalInputs) -> Jobs:
    return {"uno_c": (partial(sm.uno_c, tau=x.tau, **x.train), _risk(x))} if x.has_train else {}


def _auc_at(x: SurvivalInputs) -> Jobs:
    if not x.has_train or x.horizons is None:
        return {}
    return {f"auc_{_hkey(h)}d": (partial(lambda *a, h: sm.time_dependent_auc(*a, [h], **x.train)[0][0], h=h), _risk(x))
            for h in x.horizons}


def _mean_auc(x: SurvivalInputs) -> Jobs:
    if not x.has_train or x.horizons is None:
        return {}
    return {"mean_auc": (lambda *a: sm.time_dependent_auc(*a, x.horizons, **x.train)[1], _risk(x))}


def _ibs(x: SurvivalInputs) -> Jobs:
    if not x.has_train or x.surv is None or len(x.times) < 2:
        return {}
    _check_grid(x.times, x.time, x.event, x.train_time, x.train_event)
    return {"ibs": (partial(sm.integrated_brier, times=x.times, **x.train), (x.time, x.event, x.surv))}


def _brier(x: SurvivalInputs) -> Jobs:
    if not x.has_train or x.surv is None or x.horizons is None:
        return {}
    return {f"brier_{_hkey(h)}d": (partial(lambda t, e, s, h: sm.brier_at(t, e, s, [h], **x.train)[0], h=h),
                                   (x.time, x.event, _surv_at(x.surv, x.times, h))) for h in x.horizons}


def _citl(x: SurvivalInputs) -> Jobs:
    if x.surv is None or x.horizons is None:
        return {}
    return {f"calibration_in_the_large_{_hkey(h)}d": (partial(sm.calibration_in_the_large, horizon=h),
                                                      (x.time, x.event, _surv_at(x.surv, x.times, h)))
            for h in x.horizons}


def _slope(x: SurvivalInputs) -> Jobs:
    return {"calibration_slope": (sm.calibration_slope, _risk(x))}


def _dcal(x: SurvivalInputs) -> Jobs:
    if x.surv_at_own_time is None:
        return {}
    return {"d_calibration_p": (lambda t, e, s: sm.d_calibration(t, e, s)["p_value"],
                                (x.time, x.event, np.asarray(x.surv_at_own_time, float)))}


def _logrank(x: SurvivalInputs) -> Jobs:
    return {} if x.group_codes is None else {"logrank_p": (logrank_p, (x.time, x.event, x.group_codes))}


class _SharedFit:
    """Memoise one fit per resample so that metrics read from the same model (the HRs of all groups) share it: every
    metric sees the same resamples, so the second HR reuses the Cox fit made for the first."""

    def __init__(self, fit: Callable[..., np.ndarray]) -> None:
        self.fit, self.cache = fit, {}

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        key = hashlib.blake2b(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays), digest_size=16).digest()
        if key not in self.cache:
            self.cache[key] = self.fit(*arrays)
        return self.cache[key]


def _hrs(x: SurvivalInputs) -> Jobs:
    if x.group_codes is None:
        return {}
    labels = x.group_labels
    hrs = _SharedFit(lambda t, e, c: hazard_ratios(t, e, c, range(len(labels)))["hr"].to_numpy())
    return {f"hr_{labels[k]}_vs_{labels[0]}": (partial(lambda t, e, c, k: hrs(t, e, c)[k], k=k),
                                               (x.time, x.event, x.group_codes)) for k in range(1, len(labels))}


def _response(fn: Callable[..., float], name: str) -> Callable[[ResponseInputs], Jobs]:
    return lambda x: {name: (fn, (x.label, x.prob))}


def _bal(x: ResponseInputs) -> Jobs:
    return {"balanced_accuracy": (partial(balanced_accuracy, threshold=x.threshold), (x.label, x.prob))}


#: Every metric, in the order reports list them. Append with :func:`register`.
METRICS: list[MetricDef] = [
    MetricDef("harrell_c", "Harrell's C",
              "Harrell's C-index: share of comparable pairs ranked correctly (0.5 random, higher better)", True,
              "survival", _harrell, headline=True),
    MetricDef("uno_c", "Uno's C", "Uno's C-index, IPCW, truncated at tau (0.5 random, higher better)", True,
              "survival", _uno, headline=True),
    MetricDef("auc_{h}d", "td-AUC at {h}", "Cumulative/dynamic AUC at {h} (higher better)", True, "survival",
              _auc_at),
    MetricDef("mean_auc", "Mean td-AUC", "Time-dependent AUC averaged over the horizons (higher better)", True,
              "survival", _mean_auc, headline=True),
    MetricDef("ibs", "Integrated Brier score",
              "Integrated Brier score over the time grid (lower better; 0.25 = constant 50%)", False, "survival",
              _ibs),
    MetricDef("brier_{h}d", "Brier score at {h}", "Brier score at {h} (lower better)", False, "survival", _brier),
    MetricDef("calibration_in_the_large_{h}d", "Calibration-in-the-large at {h}",
              "Mean predicted minus observed (KM) event probability at {h} (0 ideal)", None, "survival", _citl,
              by_horizon_with="brier_{h}d"),
    MetricDef("calibration_slope", "Calibration slope",
              "Cox coefficient of the outcome on the score (1 ideal; <1 too extreme, >1 too modest)", None,
              "survival", _slope, slow=True, needs_log_hazard=True),
    MetricDef("d_calibration_p", "D-calibration p",
              "D-calibration goodness-of-fit p (small = survival curves miscalibrated)", None, "survival", _dcal),
    MetricDef("logrank_p", "Log-rank p", "Log-rank test across risk groups (small = groups separate)", None,
              "survival", _logrank, needs_groups=True),
    MetricDef("hr_{group}_vs_{reference}", "HR {group} vs {reference}",
              "Hazard ratio of the {group}-risk group vs the {reference}-risk group (Cox, lifelines)", True,
              "survival", _hrs, slow=True, needs_groups=True),
    MetricDef("auc", "Response AUC", "ROC AUC of the response probability (0.5 random, higher better)", True,
              "response", _response(response_auc, "auc")),
    MetricDef("brier", "Response Brier score", "Brier score of the response probability (lower better)", False,
              "response", _response(response_brier, "brier")),
    MetricDef("balanced_accuracy", "Balanced accuracy",
              "Balanced accuracy at probability 0.5 (0.5 random, higher better)", True, "response", _bal),
]

#: The metric of the paired test and the forest plots.
PRIMARY = "harrell_c"


def register(metric: MetricDef) -> MetricDef:
    """Add ``metric`` to :data:`METRICS` (after the others); its name must be new."""
    if any(m.name == metric.name for m in METRICS):
        raise ValueError(f"a metric named '{metric.name}' is already defined")
    METRICS.append(metric)
    return metric


@contextmanager
def registered(metric: MetricDef) -> Iterator[MetricDef]:
    """:func:`register` ``metric`` for the duration of a ``with`` block (tests, a one-off report)."""
    register(metric)
    try:
        yield metric
    finally:
        METRICS.remove(metric)


def metric_names(kind: str | None = None) -> list[str]:
    """The (possibly templated) names of the metrics of ``kind`` (all when None), in list order."""
    return [m.name for m in METRICS if kind is None or m.kind == kind]


def headline_metrics() -> list[str]:
    """The metrics a comparison logs to MLflow (``<model>/<name>``)."""
    return [m.name for m in METRICS if m.headline]


def slow_metric_patterns() -> tuple[str, ...]:
    """``exclude`` patterns of the quick setting: the metrics marked slow (lifelines Cox fits per resample)."""
    return tuple(m.glob() for m in METRICS if m.slow)


def rank_invalid_patterns(*, groups: bool = False) -> tuple[str, ...]:
    """``exclude`` patterns of metrics that mean nothing on percentile ranks (they need log hazards), and with
    ``groups`` also those that need risk groups (a comparison has none)."""
    return tuple(m.glob() for m in METRICS if m.needs_log_hazard or (groups and m.needs_groups))


def find_metric(key: str) -> tuple[MetricDef, dict[str, str]] | None:
    """The definition behind a metric key (``auc_365d`` -> the ``auc_{h}d`` entry, ``{"h": "365"}``); prefixes
    ``response_`` / ``external/`` / ``<model>/`` are not understood here (see :func:`describe_metric`)."""
    for m in METRICS:
        hit = m.pattern().fullmatch(key)
        if hit:
            return m, hit.groupdict()
    return None


def describe_metric(name: str) -> str:
    """A one-line description of a metric key of ``evaluate_survival`` / ``evaluate_response`` (prefixes such as
    ``response_`` are understood); "" for keys that are not metrics of the list."""
    for key in dict.fromkeys((name, name.removeprefix("response_"))):
        found = find_metric(key)
        if found:
            m, parts = found
            if "h" in parts:
                parts["h"] = horizon_label(float(parts["h"]))
            return m.description.format(**parts)
    return ""


def survival_jobs(inputs: SurvivalInputs) -> Jobs:
    """Every survival metric's jobs, in list order (metrics computed ``by_horizon_with`` another are interleaved
    with it, horizon by horizon)."""
    order: dict[str, tuple[int, int, int]] = {}
    jobs: Jobs = {}
    defs = [m for m in METRICS if m.kind == "survival"]
    position = {m.name: i for i, m in enumerate(defs)}
    for i, m in enumerate(defs):
        block = position.get(m.by_horizon_with, i) if m.by_horizon_with else i
        for j, (key, job) in enumerate(m.jobs(inputs).items()):
            jobs[key] = job
            order[key] = (block, j, i)
    return {k: jobs[k] for k in sorted(jobs, key=order.__getitem__)}


def response_jobs(inputs: ResponseInputs) -> Jobs:
    """Every response metric's jobs, in list order."""
    jobs: Jobs = {}
    for m in METRICS:
        if m.kind == "response":
            jobs.update(m.jobs(inputs))
    return jobs


# ------------------------------------------------------------------------------------------------ train()'s summary
#: The keys of ``train()``'s own C-index summary (``<model>/<key>`` in summary.json and summary.csv, a stable
#: interface) and what each is in terms of :data:`METRICS`.
PIPELINE_SUMMARY: dict[str, str] = {
    "cindex": "harrell_c of each test fold, mean over the folds (the sweep objective, optimized_metric)",
    "cindex_sd": "harrell_c of each test fold, standard deviation over the folds",
    "cindex_pooled": "harrell_c of the pooled out-of-fold risks (ranked within folds), pooled over all CV repeats "
                     "(mean over the repeats); its paired difference from the reference has the bootstrap p and the "
                     "corrected resampled t-test p beside it; MLflow: the model run's harrell_c",
    "cindex_ci_low": "95% bootstrap CI of cindex_pooled (evaluation.bootstrap resamples, patients resampled jointly "
                     "across repeats)",
    "cindex_ci_high": "95% bootstrap CI of cindex_pooled (evaluation.bootstrap resamples, patients resampled jointly "
                      "across repeats)",
}
#: Summary keys that repeat a run-report metric under another name: kept in summary.json, but logged to MLflow
#: once, as the run report's ``harrell_c`` of the model run (+ CI), whenever the run report is on.
SUMMARY_ONLY: tuple[str, ...] = ("cindex_pooled", "cindex_ci_low", "cindex_ci_high")


def cindex_summary(model: str, fold_c: Sequence[float], pooled: Estimate) -> dict[str, float]:
    """``train()``'s C-index summary of one model: per-fold Harrell's C (mean, SD) and the pooled out-of-fold C with
    its bootstrap CI, under the :data:`PIPELINE_SUMMARY` keys."""
    return {f"{model}/cindex": float(np.nanmean(fold_c)), f"{model}/cindex_sd": float(np.nanstd(fold_c)),
            f"{model}/cindex_pooled": pooled.value, f"{model}/cindex_ci_low": pooled.low,
            f"{model}/cindex_ci_high": pooled.high}


def model_run_metrics(summary: Mapping[str, float], *, report: bool) -> dict[str, float]:
    """A model's summary (``<model>/<key>``) as the metrics of its MLflow model run (``<key>``), without the
    :data:`SUMMARY_ONLY` duplicates when the run report logs that metric (``report``)."""
    out = {k.split("/", 1)[1]: v for k, v in summary.items()}
    return {k: v for k, v in out.items() if not (report and k in SUMMARY_ONLY)}


def _check(defs: Sequence[MetricDef]) -> Mapping[str, MetricDef]:
    """The names are unique (one name per metric)."""
    out: dict[str, MetricDef] = {}
    for m in defs:
        if m.name in out:
            raise ValueError(f"metric '{m.name}' is defined twice")
        out[m.name] = m
    return out


_check(METRICS)

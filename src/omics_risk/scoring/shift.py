"""Distribution shift between a scored cohort and the model's training patients: calibrated so that chance is quiet.

A model only knows the feature values it was trained on. A new cohort measured on another scanner, another
sequencing depth or another assay kit can move a feature away from that range, where the network extrapolates and
the score is unreliable, without anything failing. But a cohort *from* the training distribution also has patients
outside the training range: with ``n`` training patients a new patient lies beyond the training extremes with
probability about ``2 / (n + 1)`` per feature, so with hundreds of (often heavy-tailed) features some always do.
Listing those reads as an alarm where there is none. So:

* **per value** (about a patient, never an alarm by itself): a value is *far* outside when it lies below
  ``p01 - margin * (p99 - p01)`` or above ``p99 + margin * (p99 - p01)`` (``margin = 0.5``); the count per patient
  is the output's ``n_out_of_range`` column.
* **per feature, over the cohort** (the alarm), two ways:

  - *more patients beyond the training 1st / 99th percentiles than chance explains, materially*. If ``a`` of the
    ``n`` training patients lay beyond the percentiles, the band between them runs from the ``(a_lo+1)``-th lowest
    to the ``(a_hi+1)``-th highest training value or inside it, so a new patient from the training distribution lies
    beyond it with a probability distributed at most ``Beta(a + 2, n - a - 1)`` (order statistics: whatever the
    feature's shape, ties or tails) and the count among ``m`` scored patients is at most beta-binomial
    ``(m, a + 2, n - a - 1)``. A small training set widens this null by itself. The p-values are Holm-adjusted over
    all features (``alpha = 0.01``); a significant feature alarms when the shift is also material: at least
    :data:`MIN_EXCESS` of the patients beyond the percentiles on top of chance (one column moved), or its modality
    as a whole :data:`MODALITY_RATIO` times beyond what chance gives (a batch effect across the modality);
  - *implausibly far*: a value more than :data:`GROSS_WIDTHS` = 10 times the p01-p99 width beyond it, in a
    feature where no training patient lay that far (a unit changed, a column swapped, a corrupt value). This one is
    a plausibility rule, not a test: chance does not reach it for the features of the demo cohorts, nor for
    t-distributed (3 df) ones.

At log time :func:`training_ranges` stores per numeric input column of the flat scoring frame the 1st and 99th
percentiles, the median, the number of training patients and (``tails``) how many of them lay below p01, above p99
and implausibly far (aggregates only: no patient's value is stored). Missing values are never out of range
(missingness is handled by the presence mask, not here).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.scoring.frames import CLINICAL, FeatureManifest

__all__ = ["DEFAULT_ALPHA", "DEFAULT_MARGIN", "GROSS_WIDTHS", "MIN_EXCESS", "MODALITY_RATIO", "QUANTILES",
           "ShiftCheck", "ShiftReport", "check_frames", "holm", "outside_pvalues", "state_delta", "training_ranges"]

#: Percentiles of the training patients that bound the "training range" of a feature.
QUANTILES: tuple[float, float] = (0.01, 0.99)
#: How far beyond the training range (in units of its width) a value must lie to count as far outside.
DEFAULT_MARGIN = 0.5
#: Family-wise error rate of the cohort-level test over all features (Holm).
DEFAULT_ALPHA = 0.01
#: A significant feature is materially shifted with this fraction of the scored patients or more beyond the training
#: percentiles on top of chance (one column moved) ...
MIN_EXCESS = 0.25
#: ... or when its modality has this many times the values beyond the percentiles that chance gives (a batch effect
#: across the modality: another scanner, kit or depth; a cohort from the training distribution stays near 1 or below).
MODALITY_RATIO = 1.5
#: Beyond the training p01-p99 by this many times its width (for a normal feature about 45 SD), farther than any
#: training patient: implausible (a unit, a swapped column, a corrupt value). The heaviest-tailed feature of the demo
#: cohorts reaches 4.6 widths in training; a heavy tail seen in fewer patients than that is left to the count test.
GROSS_WIDTHS = 10.0
#: Relative tolerance around a feature that was constant in training.
_CONSTANT_RTOL = 1e-6
_MAX_MESSAGES = 5
_COUNTERS = ("counts", "observed", "below", "above", "gross")


def _numeric_columns(manifest: FeatureManifest) -> list[str]:
    cols = [f"{CLINICAL}/{c}" for c, kind in manifest.clinical.items() if kind == "double"]
    for m in manifest.modalities:
        cols.extend(manifest.modality_columns(m))
    return cols


def _bands(lo: np.ndarray, hi: np.ndarray, widths: float) -> tuple[np.ndarray, np.ndarray]:
    """``[p01 - widths * w, p99 + widths * w]``; around a feature constant in training, a rounding tolerance (so
    that 7.0 + 1e-9 is not outside)."""
    w = hi - lo
    pad = np.where(w > 0, widths * w, _CONSTANT_RTOL * np.maximum(1.0, np.abs(lo)))
    return lo - pad, hi + pad


def training_ranges(frame: pd.DataFrame, manifest: FeatureManifest, *,
                    quantiles: tuple[float, float] = QUANTILES) -> dict[str, Any]:
    """Per numeric input column of ``frame`` (the training patients' flat frame): ``[p01, p99, median, n]``, and
    under ``tails`` the number of training patients below p01, above p99 and implausibly far (the tests' nulls).

    Columns with no observed value are left out (nothing to compare with). The result is JSON-serialisable and is
    stored in the logged model's ``scoring.json`` under ``feature_ranges``.
    """
    lo_q, hi_q = quantiles
    if not 0.0 <= lo_q < hi_q <= 1.0:
        raise ValueError(f"quantiles must satisfy 0 <= low < high <= 1, got {quantiles}")
    cols = [c for c in _numeric_columns(manifest) if c in frame.columns]
    values = frame[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    n = np.isfinite(values).sum(axis=0)
    keep = n > 0
    cols = [c for c, k in zip(cols, keep, strict=True) if k]
    values = values[:, keep]
    with np.errstate(all="ignore"):
        q = np.nanquantile(values, [lo_q, hi_q, 0.5], axis=0) if cols else np.empty((3, 0))
        p_lo, p_hi = _bands(q[0], q[1], 0.0)
        g_lo, g_hi = _bands(q[0], q[1], GROSS_WIDTHS)
        tails = np.stack([(values < p_lo).sum(axis=0), (values > p_hi).sum(axis=0),
                          ((values < g_lo) | (values > g_hi)).sum(axis=0)]) if cols else np.empty((3, 0))
    columns = {c: [float(q[0, j]), float(q[1, j]), float(q[2, j]), int(n[keep][j])] for j, c in enumerate(cols)}
    return {"quantiles": [lo_q, hi_q], "columns": columns,
            "tails": {c: [int(x) for x in tails[:, j]] for j, c in enumerate(cols)}}


def outside_pvalues(k: np.ndarray, m: np.ndarray, a: np.ndarray, n: np.ndarray) -> np.ndarray:
    """P(K >= k) for K ~ beta-binomial(m, a + 2, n - a - 1): ``k`` of ``m`` scored patients outside a band between
    two order statistics of ``n`` training patients with ``a`` beyond it (the conservative null of the module
    docstring)."""
    from scipy.stats import betabinom  # lazy: scipy.stats is heavy for the CLI's start-up

    k, m, a, n = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (k, m, a, n)))
    out = np.ones(k.shape)
    ok = (k > 0) & (m > 0) & (n - a - 1 > 0)
    if ok.any():
        out[ok] = betabinom.sf(k[ok] - 1, m[ok], a[ok] + 2, n[ok] - a[ok] - 1)
    return np.clip(out, 0.0, 1.0)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error over all features, whatever their dependence)."""
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0:
        return p
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((p.size - np.arange(p.size)) * p[order]))
    return adjusted


def _default_tails(ranges: Mapping[str, list[float]], quantiles: Iterable[float]) -> dict[str, list[int]]:
    """Training counts for ranges stored before the counts were: beyond p01 / p99 the most the interpolated
    percentiles allow without ties (a wider null: an old model alarms less rather than more), none implausibly far."""
    lo_q, hi_q = quantiles
    return {c: [math.ceil((int(v[3]) - 1) * lo_q), int(v[3]) - 1 - math.floor((int(v[3]) - 1) * hi_q), 0]
            for c, v in ranges.items()}


def _per_modality(columns: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in columns:
        mod = c.split("/", 1)[0]
        out[mod] = out.get(mod, 0) + 1
    return out


def _p_text(p: float) -> str:
    return "p < 1e-12" if p < 1e-12 else f"p = {p:.2g}"


@dataclass
class ShiftReport:
    """Per column over the scored patients: values far outside the training range (per patient), beyond the training
    percentiles and implausibly far; :meth:`tests` turns them into the cohort-level verdict."""

    n_patients: int
    counts: dict[str, int]  # column -> patients with a value far outside the training range
    observed: dict[str, int]  # column -> patients with a value at all
    ranges: dict[str, list[float]]  # column -> [p01, p99, median, n]
    margin: float = DEFAULT_MARGIN
    examples: dict[str, float] = field(default_factory=dict)  # column -> the most extreme value seen
    below: dict[str, int] = field(default_factory=dict)  # column -> patients below the training p01
    above: dict[str, int] = field(default_factory=dict)  # column -> patients above the training p99
    gross: dict[str, int] = field(default_factory=dict)  # column -> patients implausibly far outside
    tails: dict[str, list[int]] = field(default_factory=dict)  # column -> training [below p01, above p99, gross]
    alpha: float = DEFAULT_ALPHA
    patients_far: int = 0  # patients with at least one value far outside

    @property
    def shifted(self) -> list[str]:
        """Columns with at least one patient far out of range, most affected first (per value, not a verdict)."""
        return sorted((c for c, k in self.counts.items() if k > 0), key=lambda c: (-self.counts[c], c))

    def by_modality(self) -> dict[str, int]:
        """Number of columns with a value far out of range per modality (``clinical`` included)."""
        return _per_modality(self.shifted)

    def tests(self) -> pd.DataFrame:
        """One row per column (index): patients observed, beyond p01 / p99, how many chance puts beyond them (at
        most), the excess fraction, the p-value and its Holm adjustment, the modality's ratio of values beyond to
        chance, the patients implausibly far, and ``shift``: the verdict."""
        cols = list(self.ranges)

        def arr(d: Mapping[str, Any], i: int | None = None) -> np.ndarray:
            return np.array([(d[c][i] if i is not None else d.get(c, 0)) for c in cols], dtype=np.float64)

        tails = {**_default_tails(self.ranges, QUANTILES), **self.tails}  # a report built without them: the widest
        n, m = arr(self.ranges, 3), arr(self.observed)
        a = arr(tails, 0) + arr(tails, 1)
        k = arr(self.below) + arr(self.above)
        expected = m * (a + 2) / (n + 1)
        p = outside_pvalues(k, m, a, n)
        t = pd.DataFrame({"modality": [c.split("/", 1)[0] for c in cols], "observed": m.astype(int),
                          "below_p01": arr(self.below).astype(int), "above_p99": arr(self.above).astype(int),
                          "expected_outside": expected, "excess": (k - expected) / np.maximum(m, 1), "p_value": p,
                          "p_holm": holm(p), "gross": arr(self.gross).astype(int)}, index=pd.Index(cols, name="column"))
        by_mod = t.assign(k=k).groupby("modality")[["k", "expected_outside"]].sum()
        ratio = by_mod["k"] / by_mod["expected_outside"].clip(lower=1e-12)
        t["modality_ratio"] = t["modality"].map(ratio).astype(float)
        width = arr(self.ranges, 1) - arr(self.ranges, 0)  # a feature constant in training has no scale to judge by
        t["implausible"] = (t["gross"] > 0) & (arr(tails, 2) == 0) & (width > 0)
        material = (t["excess"] >= MIN_EXCESS) | (t["modality_ratio"] >= MODALITY_RATIO)
        t["shift"] = t["implausible"] | ((t["p_holm"] < self.alpha) & material)
        return t

    @property
    def detected(self) -> list[str]:
        """Columns shifted beyond chance (materially) or implausibly far, implausible first, then by p."""
        t = self.tests()
        t = t[t["shift"]].assign(order=lambda d: ~d["implausible"], neg=lambda d: -d["excess"])
        return t.sort_values(["order", "p_value", "neg"], kind="stable").index.tolist()

    def summary(self) -> dict[str, Any]:
        """Counts for a person: values beyond the training percentiles vs chance, shifted features per modality (of
        those tested), features significant but not material, patients with far values."""
        t = self.tests()
        tested = _per_modality(t.index[t["observed"] > 0])
        det = _per_modality(self.detected)
        return {"features_tested": int((t["observed"] > 0).sum()), "features_shifted": sum(det.values()),
                "values_outside": int(t["below_p01"].sum() + t["above_p99"].sum()),
                "values_outside_expected": float(t["expected_outside"].sum()),
                "shifted_by_modality": {m: [det.get(m, 0), k] for m, k in sorted(tested.items())},
                "features_mildly_different": int(((t["p_holm"] < self.alpha) & ~t["shift"]).sum()),
                "features_far_outside": len(self.shifted), "patients_far_outside": int(self.patients_far)}

    def to_frame(self) -> pd.DataFrame:
        """One row per column with a value far out of range: modality, feature, patients out of range, observed,
        training range, most extreme value, and the column's cohort-level verdict (``p_holm``, ``shift_detected``)."""
        t = self.tests()
        rows = []
        for c in self.shifted:
            lo, hi, med = self.ranges[c][:3]
            mod, feat = c.split("/", 1)
            rows.append({"modality": mod, "feature": feat, "patients_out_of_range": self.counts[c],
                         "patients_observed": self.observed.get(c, 0), "train_p01": lo, "train_p99": hi,
                         "train_median": med, "most_extreme": self.examples.get(c, math.nan),
                         "p_holm": float(t.at[c, "p_holm"]), "shift_detected": bool(t.at[c, "shift"])})
        return pd.DataFrame(rows, columns=["modality", "feature", "patients_out_of_range", "patients_observed",
                                           "train_p01", "train_p99", "train_median", "most_extreme", "p_holm",
                                           "shift_detected"])

    def messages(self, limit: int = _MAX_MESSAGES) -> list[str]:
        """A summary for a person: when a shift is detected, the alarm with the shifted modalities and the worst
        features; else one line saying that what lies outside the training range is what chance gives."""
        s, t = self.summary(), self.tests()
        chance = (f"{s['values_outside']} value(s) beyond the training 1st-99th percentiles over "
                  f"{s['features_tested']} feature(s), up to about {s['values_outside_expected']:.1f} expected by "
                  "chance")
        far = (f"{s['patients_far_outside']} patient(s) have a value far outside the training range in "
               f"{s['features_far_outside']} feature(s) (column n_out_of_range)") if self.shifted else ""
        detected = self.detected
        if not detected:
            if not s["values_outside"] and not far:
                return []
            mild = t[(t["p_holm"] < self.alpha) & ~t["shift"]].sort_values("p_value", kind="stable").index.tolist()
            mild_text = "; ".join(f"{c} {t.at[c, 'below_p01'] + t.at[c, 'above_p99']} of {t.at[c, 'observed']} "
                                  f"beyond, about {t.at[c, 'expected_outside']:.1f} by chance" for c in mild[:3])
            return [f"no distribution shift detected: {chance}, as for a cohort from the training distribution"
                    + (f"; {len(mild)} feature(s) differ significantly but mildly ({mild_text}"
                       + (", ..." if len(mild) > 3 else "") + ")" if mild else "")
                    + (f"; {far}" if far else "")]
        mods = ", ".join(f"{m} ({k})" for m, (k, _) in s["shifted_by_modality"].items() if k)
        lines = [f"distribution shift in {len(detected)} feature(s), by modality {mods}: more patients outside the "
                 f"training range than chance explains (Holm-adjusted p < {self.alpha:g}, materially) or values "
                 f"implausibly far outside it (over {GROSS_WIDTHS:g} x the training p01-p99 width, farther than any "
                 "training patient); scores of the patients concerned extrapolate beyond what the model was trained "
                 f"on ({chance})"]
        for c in detected[:limit]:
            lo, hi = self.ranges[c][:2]
            r = t.loc[c]
            why = (f"{r['gross']} implausibly far" if r["implausible"] else
                   f"{r['below_p01']} below / {r['above_p99']} above its 1st-99th percentiles, about "
                   f"{r['expected_outside']:.1f} by chance, {_p_text(r['p_value'])}")
            lines.append(f"  {c}: {self.counts.get(c, 0)} of {r['observed']} patient(s) far outside the training "
                         f"range ({why}); training p01-p99 [{lo:.4g}, {hi:.4g}]"
                         + (f", most extreme here {self.examples[c]:.4g}" if c in self.examples else ""))
        if len(detected) > limit:
            lines.append(f"  ... and {len(detected) - limit} more feature(s): the report's shift table lists them")
        return lines

    def to_dict(self) -> dict[str, Any]:
        t = self.tests()
        return {"n_patients": self.n_patients, "margin": self.margin, "alpha": self.alpha, "summary": self.summary(),
                "shifted_features": t.loc[self.detected].reset_index().to_dict(orient="records"),
                "features": self.to_frame().to_dict(orient="records")}


class ShiftCheck:
    """Checks flat frames chunk by chunk against the training ranges and accumulates a :class:`ShiftReport`.

    ``update(frame)`` returns the number of far-out-of-range features per patient of that frame (for the output's
    ``n_out_of_range`` column); :meth:`state` / :meth:`merge_state` carry the accumulated counts across resumed runs.
    """

    def __init__(self, ranges: Mapping[str, Any] | None, margin: float = DEFAULT_MARGIN,
                 alpha: float = DEFAULT_ALPHA):
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
        self.margin, self.alpha = float(margin), float(alpha)
        ranges = ranges or {}
        self.ranges: dict[str, list[float]] = {str(k): list(v) for k, v in ranges.get("columns", {}).items()}
        self.tails = {**_default_tails(self.ranges, ranges.get("quantiles", QUANTILES)),
                      **{str(k): [int(x) for x in v] for k, v in ranges.get("tails", {}).items()}}
        self.columns = list(self.ranges)
        lo = np.array([v[0] for v in self.ranges.values()], dtype=np.float64)
        hi = np.array([v[1] for v in self.ranges.values()], dtype=np.float64)
        self._low, self._high = _bands(lo, hi, self.margin)
        self._p01, self._p99 = _bands(lo, hi, 0.0)
        self._gross_low, self._gross_high = _bands(lo, hi, GROSS_WIDTHS)
        self._median = np.array([v[2] for v in self.ranges.values()], dtype=np.float64)
        self.counters = {k: np.zeros(len(self.columns), dtype=np.int64) for k in _COUNTERS}
        self.extreme = np.full(len(self.columns), np.nan)
        self.n_patients = 0
        self.patients_far = 0

    @property
    def enabled(self) -> bool:
        return bool(self.columns)

    @property
    def counts(self) -> np.ndarray:
        return self.counters["counts"]

    @property
    def observed(self) -> np.ndarray:
        return self.counters["observed"]

    def update(self, frame: pd.DataFrame) -> np.ndarray:
        """Count out-of-range values of ``frame``'s rows; return the per-row count of far-out-of-range columns."""
        n = len(frame)
        self.n_patients += n
        if not self.columns or n == 0:
            return np.zeros(n, dtype=np.int64)
        have = [j for j, c in enumerate(self.columns) if c in frame.columns]
        values = np.full((n, len(self.columns)), np.nan)
        if have:
            block = frame[[self.columns[j] for j in have]].apply(pd.to_numeric, errors="coerce")
            values[:, have] = block.to_numpy(dtype=np.float64)
        finite = np.isfinite(values)
        with np.errstate(invalid="ignore"):
            out = finite & ((values < self._low) | (values > self._high))
            self.counters["below"] += (values < self._p01).sum(axis=0)
            self.counters["above"] += (values > self._p99).sum(axis=0)
            self.counters["gross"] += ((values < self._gross_low) | (values > self._gross_high)).sum(axis=0)
        self.counters["counts"] += out.sum(axis=0)
        self.counters["observed"] += finite.sum(axis=0)
        self.patients_far += int(out.any(axis=1).sum())
        # the most extreme offending value per column (largest distance from the training median)
        med = self._median
        dist = np.where(out, np.abs(values - med), -1.0)
        worst = dist.argmax(axis=0)
        hit = out.any(axis=0)
        prev = np.where(np.isfinite(self.extreme), np.abs(self.extreme - med), -1.0)
        cand = values[worst, np.arange(len(self.columns))]
        better = hit & (np.abs(cand - med) > prev)
        self.extreme[better] = cand[better]
        return out.sum(axis=1)

    def state(self) -> dict[str, Any]:
        """JSON-able accumulated counts (stored with each checkpointed chunk)."""
        return {"n_patients": self.n_patients, "patients_far": self.patients_far,
                **{k: v.tolist() for k, v in self.counters.items()},
                "extreme": [None if not np.isfinite(x) else float(x) for x in self.extreme]}

    def merge_state(self, state: Mapping[str, Any]) -> None:
        """Add the counts of a chunk scored earlier (``state()`` of a check over the same ranges)."""
        if any(len(state.get(k, [])) != len(self.columns) for k in _COUNTERS):
            raise ValueError("shift state does not match these training ranges")
        self.n_patients += int(state["n_patients"])
        self.patients_far += int(state.get("patients_far", 0))
        for k in _COUNTERS:
            self.counters[k] += np.asarray(state[k], dtype=np.int64)
        med = self._median
        other = np.array([np.nan if x is None else x for x in state["extreme"]], dtype=np.float64)
        prev = np.where(np.isfinite(self.extreme), np.abs(self.extreme - med), -1.0)
        better = np.isfinite(other) & (np.abs(other - med) > prev)
        self.extreme[better] = other[better]

    def report(self) -> ShiftReport:
        def per_column(k: str) -> dict[str, int]:
            return {c: int(x) for c, x in zip(self.columns, self.counters[k], strict=True)}

        return ShiftReport(
            n_patients=self.n_patients, counts=per_column("counts"), observed=per_column("observed"),
            ranges=self.ranges, margin=self.margin,
            examples={c: float(x) for c, x in zip(self.columns, self.extreme, strict=True) if np.isfinite(x)},
            below=per_column("below"), above=per_column("above"), gross=per_column("gross"), tails=self.tails,
            alpha=self.alpha, patients_far=self.patients_far)


def state_delta(after: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    """The counts one chunk added to a :class:`ShiftCheck` (``state()`` after minus before), so that chunks can be
    merged in any resumed run."""
    return {"n_patients": after["n_patients"] - before["n_patients"],
            "patients_far": after["patients_far"] - before["patients_far"],
            **{k: [x - y for x, y in zip(after[k], before[k], strict=True)] for k in _COUNTERS},
            "extreme": after["extreme"]}


def check_frames(frames: Iterable[pd.DataFrame], ranges: Mapping[str, Any] | None,
                 margin: float = DEFAULT_MARGIN, alpha: float = DEFAULT_ALPHA) -> ShiftReport:
    """:class:`ShiftReport` of one or more flat frames against ``ranges`` (convenience for notebooks and tests)."""
    check = ShiftCheck(ranges, margin, alpha)
    for f in frames:
        check.update(f)
    return check.report()

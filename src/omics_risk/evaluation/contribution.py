"""What a fitted model relies on: modality ablation and single-feature permutation importance.

Both are model-agnostic: they only call ``predict_risk`` (any :class:`~omics_risk.models.base.SurvivalModel`, or
any ``predict(data) -> risk`` callable) on modified copies of the evaluation data, and never refit.

- :func:`modality_ablation` hides one modality at a time the way missing data looks in omics-risk (its rows all
  NaN and ``present[m] = False``, see :mod:`omics_risk.data.multimodal`), so a model is scored exactly as it
  would score patients lacking that modality. The drop in Harrell's C (higher = the model leans on it) gets a
  paired percentile-bootstrap CI: each resample draws the same patients for the full and every ablated score.
  The resamples are the run's one bootstrap (:func:`~omics_risk.evaluation.bootstrap.bootstrap_indices` with
  ``evaluation.bootstrap`` / ``evaluation.seed``), and the resampled C-indices come from the engine's
  :func:`~omics_risk.evaluation.bootstrap.resampled_cindex` (one matrix product per score, not a
  scikit-survival call per resample).
- :func:`top_features` permutes one feature at a time among the patients that have it (the missingness pattern
  is kept) and reports the mean drop in C over ``n_repeats`` permutations. To stay cheap it only tries a short
  candidate list (see its docstring); ``method="coefficients"`` instead returns a linear model's ``coef_``.

Binary endpoints (``data.label`` set, no survival time) use the response ROC AUC of ``-risk`` instead of C; the
column names stay the same and ``metric`` says which was used. Evaluate on held-out patients: on the training
patients these measure what the model memorised.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.data.multimodal import MultimodalData
from omics_risk.evaluation.bootstrap import bootstrap_indices, resampled_cindex
from omics_risk.evaluation.metrics import harrell_c, response_auc
from omics_risk.progress import progress_bar

__all__ = ["hide_modality", "modality_ablation", "top_features"]

CLINICAL = "clinical"
RiskFn = Callable[[MultimodalData], np.ndarray]


# ------------------------------------------------------------------------------------------------ helpers
class _Scorer:
    """Harrell's C (survival) or response AUC of ``-risk`` (binary) on the patients with a known outcome."""

    def __init__(self, data: MultimodalData):
        if data.time is not None and data.event is not None:
            t, e = np.asarray(data.time, float), np.asarray(data.event, float)
            self.ok = np.isfinite(t) & np.isfinite(e)
            if e[self.ok].sum() == 0:
                raise ValueError(f"endpoint '{data.endpoint}' has no event among the evaluated patients: "
                                 "C is undefined")
            self.metric, self.outcome = "harrell_c", (t[self.ok], e[self.ok])
        elif data.label is not None:
            lab = np.asarray(data.label, float)
            self.ok = np.isfinite(lab)
            if len(np.unique(lab[self.ok])) < 2:
                raise ValueError(f"binary endpoint '{data.endpoint}' has a single class among the evaluated patients")
            self.metric, self.outcome = "response_auc", (lab[self.ok],)
        else:
            raise ValueError(f"endpoint '{data.endpoint}' has neither time/event nor label: nothing to evaluate")
        self.n = int(self.ok.sum())

    def __call__(self, risk: np.ndarray, idx: np.ndarray | None = None) -> float:
        """The metric of ``risk`` (already restricted to the usable patients), on resample ``idx`` if given."""
        outcome = self.outcome if idx is None else tuple(o[idx] for o in self.outcome)
        r = risk if idx is None else risk[idx]
        if self.metric == "harrell_c":
            return harrell_c(*outcome, r)
        return response_auc(*outcome, -r)  # higher risk = lower response probability

    def resampled(self, risk: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """The metric of ``risk`` on every resample (rows of ``idx``); NaN where a resample cannot be evaluated."""
        if self.metric == "harrell_c":
            return resampled_cindex(*self.outcome, risk, idx)
        out = np.full(len(idx), np.nan)
        for b, i in enumerate(idx):
            if len(np.unique(self.outcome[0][i])) == 2:  # both classes drawn
                out[b] = self(risk, i)
        return out


def _risk(predict: RiskFn, data: MultimodalData, what: str) -> np.ndarray:
    risk = np.asarray(predict(data), dtype=np.float64).ravel()
    if risk.shape != (len(data),):
        raise ValueError(f"predict_risk returned shape {risk.shape} for {len(data)} patients ({what})")
    if not np.isfinite(risk).all():
        raise ValueError(f"predict_risk returned {int((~np.isfinite(risk)).sum())} non-finite scores ({what}); "
                         "SurvivalModel.predict_risk must give every patient a finite score")
    return risk


def _predict_fn(model: Any, predict: RiskFn | None) -> RiskFn:
    if predict is not None:
        return predict
    if not hasattr(model, "predict_risk"):
        raise TypeError(f"{type(model).__name__} has no predict_risk; pass predict=callable(data) -> risk")
    return model.predict_risk


def hide_modality(data: MultimodalData, modality: str) -> MultimodalData:
    """A copy of ``data`` in which no patient has ``modality``: its rows all NaN and ``present`` False.

    ``clinical`` blanks every clinical column (models impute them with their training values). Other tables
    and the outcome are shared with ``data``, not copied.
    """
    present = data.present.copy()
    present[modality] = False
    if modality == CLINICAL:
        blank = data.clinical.mask(np.ones(data.clinical.shape, dtype=bool))
        return dataclasses.replace(data, clinical=blank, present=present)
    if modality not in data.modalities:
        raise KeyError(f"modality '{modality}' is not in the data (has: {', '.join([CLINICAL, *data.modalities])})")
    table = data.modalities[modality]
    blank = pd.DataFrame(np.nan, index=table.index, columns=table.columns)
    return dataclasses.replace(data, modalities={**data.modalities, modality: blank}, present=present)


def _n_present(data: MultimodalData, modality: str) -> int:
    if modality == CLINICAL:
        return int(data.clinical.notna().any(axis=1).sum())
    if modality in data.present.columns:
        return int(data.present[modality].sum())
    return int(data.modalities[modality].notna().any(axis=1).sum())


# ------------------------------------------------------------------------------------------------ ablation
def modality_ablation(model: Any, data: MultimodalData, *, modalities: Sequence[str] | None = None,
                      n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, predict: RiskFn | None = None,
                      progress: bool = False) -> pd.DataFrame:
    """Drop in C-index when each modality is hidden from a fitted model, with paired bootstrap CIs.

    Args:
        model: a fitted model with ``predict_risk(data)`` (higher = riskier).
        data: evaluation patients with their outcome (held-out ideally).
        modalities: which to hide, one at a time (default: ``clinical`` and every modality of ``data``).
        n_boot, seed: the bootstrap (``evaluation.bootstrap``, ``evaluation.seed``: the resamples of
            :func:`~omics_risk.evaluation.bootstrap.bootstrap_indices`, as every other output of the run); the
            full and ablated scores are compared on the same resamples.
        predict: overrides ``model.predict_risk``, e.g. ``lambda d: model.predict_risk(d, images=provider)``;
            note that modalities read from elsewhere than ``data`` (CT image tensors through an image
            provider) are not hidden by blanking their table.

    Returns:
        One row per modality, largest drop first: ``modality``, ``n_present`` (patients that had it),
        ``metric``, ``full`` and ``ablated`` (metric on all patients), ``delta_cindex`` (full - ablated),
        ``low``/``high`` (percentile CI), ``p_value`` (two-sided bootstrap test of no drop), ``n_boot`` (finite
        resamples).
    """
    predict = _predict_fn(model, predict)
    mods = list(modalities) if modalities is not None else [CLINICAL, *data.modality_names]
    score = _Scorer(data)
    ok, metric = score.ok, score.metric
    full = _risk(predict, data, "full data")[ok]
    ablated = {}
    for m in progress_bar(mods, desc="modality ablation", disable=not progress):
        ablated[m] = _risk(predict, hide_modality(data, m), f"without {m}")[ok]

    idx = bootstrap_indices(score.n, n_boot, seed)  # the same resampled patients for the full and every ablated score
    c_full_boot = score.resampled(full, idx)
    boots = np.column_stack([c_full_boot - score.resampled(ablated[m], idx) for m in mods]) if mods \
        else np.empty((n_boot, 0))

    rows = []
    c_full = score(full)
    for j, m in enumerate(mods):
        bj = boots[:, j][np.isfinite(boots[:, j])]
        c_abl = score(ablated[m])
        low, high = np.quantile(bj, [alpha / 2, 1 - alpha / 2]) if len(bj) else (np.nan, np.nan)
        p = float(min(1.0, 2 * min((bj <= 0).mean(), (bj >= 0).mean()))) if len(bj) else float("nan")
        rows.append({"modality": m, "n_present": _n_present(data, m), "metric": metric, "full": c_full,
                     "ablated": c_abl, "delta_cindex": c_full - c_abl, "low": float(low), "high": float(high),
                     "p_value": p, "n_boot": len(bj)})
    return pd.DataFrame(rows).sort_values("delta_cindex", ascending=False, ignore_index=True)


# ------------------------------------------------------------------------------------------- top features
def _model_modalities(model: Any, data: MultimodalData) -> list[str] | None:
    """The tables a model says it reads (``modality``, ``modalities_``/``modalities``, or the union over the
    sub-models of a stacker's ``base_models``); None when it does not say."""
    every = [CLINICAL, *data.modality_names]
    single = getattr(model, "modality", None)
    if isinstance(single, str) and single in every:
        return [single]
    for attr in ("modalities_", "modalities"):
        many = getattr(model, attr, None)
        if isinstance(many, list | tuple) and many and all(isinstance(m, str) for m in many):
            known = [m for m in many if m in every]
            if known:
                extra = [CLINICAL] if getattr(model, "use_clinical", False) and CLINICAL not in known else []
                return known + extra
    subs = getattr(model, "fitted_base_", None) or getattr(model, "base_models", None)
    if isinstance(subs, Mapping) and subs:
        found = [_model_modalities(sub, data) for sub in subs.values()]
        if all(f is not None for f in found):
            return [m for m in every if any(m in f for f in found)]
    return None


def _table(data: MultimodalData, modality: str) -> pd.DataFrame:
    return data.clinical if modality == CLINICAL else data.modalities[modality]


def _candidates(model: Any, data: MultimodalData, per_modality: int) -> tuple[list[tuple[str, str]], str]:
    """Features worth permuting: every clinical column, and per omics modality the nonzero coefficients of a
    single-modality linear model (``coef_`` indexed by column) or else the ``per_modality`` most variable
    features (variance of the present values; NaN-heavy features, < 10 values, are skipped)."""
    out: list[tuple[str, str]] = []
    how = []
    coef = getattr(model, "coef_", None)
    for m in _model_modalities(model, data) or [CLINICAL, *data.modality_names]:
        table = _table(data, m)
        if m == CLINICAL:
            out += [(m, str(c)) for c in table.columns]
            how.append("all clinical columns")
            continue
        if isinstance(coef, pd.Series) and getattr(model, "modality", None) == m:
            nz = coef[(coef != 0) & coef.index.isin(table.columns)]
            if len(nz):
                out += [(m, str(c)) for c in nz.abs().sort_values(ascending=False).index[:per_modality]]
                how.append(f"{m}: nonzero coefficients")
                continue
        num = table.select_dtypes("number")
        enough = num.notna().sum() >= 10
        var = num.loc[:, enough].var(skipna=True).sort_values(ascending=False)
        out += [(m, str(c)) for c in var.index[:per_modality]]
        how.append(f"{m}: {per_modality} most variable")
    return out, "; ".join(how)


def _parse_features(features: Sequence[str | tuple[str, str]], data: MultimodalData) -> list[tuple[str, str]]:
    out = []
    for f in features:
        if isinstance(f, tuple):
            m, c = f
        elif "/" in str(f):
            m, c = str(f).split("/", 1)
        else:
            raise ValueError(f"feature {f!r} must be 'modality/column' (as in MultimodalData.frame())")
        if m != CLINICAL and m not in data.modalities:
            raise KeyError(f"feature {f!r}: modality '{m}' is not in the data")
        if c not in _table(data, m).columns:
            raise KeyError(f"feature {f!r}: column '{c}' is not in the {m} table")
        out.append((m, c))
    return out


def _permuted(data: MultimodalData, modality: str, column: str, rng: np.random.Generator) -> MultimodalData:
    """``data`` with ``column`` shuffled among the patients that have a value (missingness pattern kept)."""
    table = _table(data, modality)
    values = table[column].to_numpy(copy=True)
    has = pd.notna(values)
    if modality != CLINICAL and modality in data.present.columns:
        has &= data.present[modality].to_numpy(dtype=bool)
    pos = np.flatnonzero(has)
    values[pos] = values[rng.permutation(pos)]
    new = table.copy(deep=False)
    new[column] = pd.Series(values, index=table.index, dtype=table[column].dtype)
    if modality == CLINICAL:
        return dataclasses.replace(data, clinical=new)
    return dataclasses.replace(data, modalities={**data.modalities, modality: new})


def top_features(model: Any, data: MultimodalData, n: int = 20, *,
                 features: Sequence[str | tuple[str, str]] | None = None, per_modality: int = 10,
                 n_repeats: int = 5, seed: int = 0, method: str = "permutation", predict: RiskFn | None = None,
                 progress: bool = False) -> pd.DataFrame:
    """The ``n`` features whose permutation lowers the C-index most (model-agnostic).

    Candidates: ``features`` (``"modality/column"`` names as in ``MultimodalData.frame()``), else every
    clinical column plus up to ``per_modality`` features per omics modality the model reads: the nonzero
    coefficients of a single-modality linear model (e.g. ``ModalityCoxnet.coef_``), otherwise the most variable
    features. Features outside the candidates are not ranked, so a feature of a modality the model ignores is
    never reported; ``attrs["candidates"]`` says how the list was made.

    ``method="coefficients"`` skips permutation and returns the model's ``coef_`` (Series indexed by the
    model's encoded feature names; scikit-survival Coxnet coefficients are on standardised features, so their
    sizes compare) as ``importance``.

    Returns:
        ``feature`` (``modality/column``), ``modality``, ``importance`` (mean drop in C; coefficient for
        ``method="coefficients"``), ``std`` (across repeats), ``n_repeats``; largest first. ``attrs``: ``method``,
        ``metric``, ``baseline`` (C on the unpermuted data), ``candidates``.
    """
    if method == "coefficients":
        coef = getattr(model, "coef_", None)
        if coef is None:
            raise ValueError(f"{type(model).__name__} exposes no coef_: use method='permutation'")
        coef = coef if isinstance(coef, pd.Series) else pd.Series(np.ravel(coef))
        mod = getattr(model, "modality", "") or ""
        out = pd.DataFrame({"feature": [f"{mod}/{c}" if mod else str(c) for c in coef.index], "modality": mod,
                            "importance": coef.to_numpy(float)})
        out = out[out["importance"] != 0]
        out = out.reindex(out["importance"].abs().sort_values(ascending=False).index).head(n).reset_index(drop=True)
        out.attrs.update(method="coefficients", metric="coefficient", candidates="nonzero coef_ of the model")
        return out
    if method != "permutation":
        raise ValueError(f"method must be 'permutation' or 'coefficients', got {method!r}")

    predict = _predict_fn(model, predict)
    score = _Scorer(data)
    ok, metric = score.ok, score.metric
    if features is not None:
        cands, how = _parse_features(features, data), "given list"
    else:
        cands, how = _candidates(model, data, per_modality)
    base = score(_risk(predict, data, "unpermuted")[ok])
    rng = np.random.default_rng(seed)
    rows = []
    for m, c in progress_bar(cands, desc="permutation importance", disable=not progress):
        drops = [base - score(_risk(predict, _permuted(data, m, c, rng), f"{m}/{c} permuted")[ok])
                 for _ in range(n_repeats)]
        rows.append({"feature": f"{m}/{c}", "modality": m, "importance": float(np.nanmean(drops)),
                     "std": float(np.nanstd(drops, ddof=1)) if n_repeats > 1 else float("nan"),
                     "n_repeats": n_repeats})
    out = pd.DataFrame(rows, columns=["feature", "modality", "importance", "std", "n_repeats"])
    out = out.sort_values("importance", ascending=False, ignore_index=True).head(n)
    out.attrs.update(method="permutation", metric=metric, baseline=float(base), candidates=how)
    return out

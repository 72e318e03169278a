"""Late-fusion stacking (MSB / PIONeeR style): per-modality models, out-of-fold risks, a penalised Cox on top.

Blockwise missingness (not every patient has CT + cfDNA + metabolomics) is where late fusion shines: each base
model only needs its own modality, and the meta-model learns how much each one adds. Inside ``fit`` (the outer
training fold):

1. ``inner_folds`` stratified folds split the training patients; every base model is fitted on the inner
   training part and scores the inner held-out part, giving *out-of-fold* risks: the meta-learner never sees a
   base model's in-sample predictions (which would make it trust overfitted models);
2. each base model's OOF risks are centred on their median and scaled by their SD over the patients that have
   its modality; a patient lacking the modality gets 0 (the centre) and a missingness indicator of 1 (one
   indicator column per base model whose modality is missing for some training patients);
3. the meta-model, a ridge-penalised lifelines Cox (``meta_penalizer``) -- or, for a binary endpoint, logistic
   regression with the same penalty (``C = 1 / (meta_penalizer * n)``) -- is fitted on those columns (minus
   any that are constant, e.g. a base model that selected no feature; ``meta_coef_`` has the weights);
4. every base model is refitted on the whole training fold; at predict time their risks go through the same
   centring, scaling and indicators into the meta-model.

Base models are given as ``{name: spec}`` where a spec is an unfitted :class:`SurvivalModel` (deep-copied for
every fit), a zero-argument factory, or a Hydra config (``{"_target_": ..., ...}``). Which modality a base
model needs is read from its ``modality`` attribute (``modalities`` for multi-omic models; none = always
available). A base model that cannot be fitted in some inner fold (e.g. too few patients with its modality) is
dropped with a warning (listed in ``dropped_``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from lifelines import CoxPHFitter
from sklearn.linear_model import LogisticRegression

from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.base import SurvivalModel
from omics_risk.models.tabular import (
    BaselineModel,
    inner_splits,
    modality_present,
    outcome_of,
    risk_from_response,
)

__all__ = ["LateFusionStacker", "build_model", "model_present", "oof_scales"]

BaseSpec = SurvivalModel | Callable[[], SurvivalModel] | Mapping[str, Any]


def oof_scales(oof: np.ndarray, present: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Each base model's SD of out-of-fold risk over the patients that have its modality (1 when constant), and the
    base models whose modality some but not all patients lack (they get a missingness indicator column). Two base
    models of one modality (an elastic-net Cox model and a forest) share one indicator, the first's: identical
    columns would only split one weight between them."""
    sd = np.array([oof[present[:, j], j].std() if present[:, j].sum() > 1 else 0.0 for j in range(len(names))])
    n = len(oof)
    indicators: list[str] = []
    patterns: list[np.ndarray] = []
    for j, m in enumerate(names):
        absent = ~present[:, j]
        if 0 < absent.sum() < n and not any(np.array_equal(absent, seen) for seen in patterns):
            indicators.append(m)
            patterns.append(absent)
    return np.where(sd > 1e-12, sd, 1.0), indicators


def build_model(spec: BaseSpec) -> SurvivalModel:
    """A fresh, unfitted model from a prototype instance, a factory or a Hydra ``_target_`` config."""
    if isinstance(spec, SurvivalModel):
        return copy.deepcopy(spec)
    if isinstance(spec, Mapping):
        if "_target_" not in spec:
            raise ValueError(f"a base-model config needs a _target_ (got keys {sorted(spec)})")
        model = instantiate(dict(spec))
    elif callable(spec):
        model = spec()
    else:
        raise TypeError(f"a base model must be a SurvivalModel, a factory or a _target_ config, got {type(spec)}")
    if not isinstance(model, SurvivalModel):
        raise TypeError(f"base-model spec built {type(model).__name__}, which is not a SurvivalModel")
    return model


def model_present(model: SurvivalModel, data: MultimodalData) -> np.ndarray:
    """Which patients have the input ``model`` needs (its ``modality``, any of its ``modalities``, else all)."""
    modality = getattr(model, "modality", None)
    if isinstance(modality, str):
        return modality_present(data, modality)
    modalities = getattr(model, "modalities", None)
    if modalities:
        known = [m for m in modalities if m == "clinical" or m in data.modalities]
        if known:
            return np.any([modality_present(data, m) for m in known], axis=0)
    return np.ones(len(data), dtype=bool)


class LateFusionStacker(BaselineModel):
    """Stacked per-modality models with a penalised Cox meta-learner on out-of-fold risks. Name ``late_fusion``.

    Args:
        base_models: ``{name: spec}`` (see module docstring), typically one model per modality.
        meta: ``cox`` (lifelines ``CoxPHFitter``; logistic regression for binary endpoints).
        inner_folds: folds for the out-of-fold risks.
        meta_penalizer: ridge penalty of the meta-model.
        task: ``auto`` | ``survival`` | ``binary``.
        seed: inner fold assignment.

    Capabilities (:meth:`BaselineModel.capabilities`): survival curves for a survival endpoint (the meta Cox
    model's), P(response) for a binary one.
    """

    name = "late_fusion"

    def __init__(
        self,
        base_models: Mapping[str, BaseSpec],
        meta: str = "cox",
        inner_folds: int = 5,
        *,
        meta_penalizer: float = 0.1,
        task: str = "auto",
        seed: int = 0,
    ):
        self.base_models = base_models
        self.meta = meta
        self.inner_folds = inner_folds
        self.meta_penalizer = meta_penalizer
        self.task = task
        self.seed = seed

    # --------------------------------------------------------------------------------------------- design
    def _design(self, risks: np.ndarray, present: np.ndarray) -> pd.DataFrame:
        z = (risks - self.centre_) / self.scale_
        z[~present] = 0.0
        cols = {f"risk_{n}": z[:, i] for i, n in enumerate(self.names_)}
        for i, n in enumerate(self.names_):
            if n in self.indicators_:
                cols[f"missing_{n}"] = (~present[:, i]).astype(np.float64)
        return pd.DataFrame(cols)

    def fit(self, data: MultimodalData) -> LateFusionStacker:
        if self.meta != "cox":
            raise ValueError(f"meta must be 'cox' (penalised Cox; logistic for binary endpoints), got {self.meta!r}")
        if not self.base_models:
            raise ValueError("LateFusionStacker needs at least one base model")
        with self._timed():
            out = outcome_of(data, self.task)
            rows = np.flatnonzero(out.usable)
            d = data.subset(rows)
            names = list(self.base_models)
            protos = {n: build_model(self.base_models[n]) for n in names}
            present = np.column_stack([model_present(protos[n], d) for n in names])
            oof = np.zeros((len(d), len(names)))
            self.dropped_: dict[str, str] = {}
            for tr, va in inner_splits(out.strata(rows), self.inner_folds, self.seed,
                                      survival=out.task == "survival"):
                dtr, dva = d.subset(tr), d.subset(va)
                for i, n in enumerate(names):
                    if n in self.dropped_:
                        continue
                    try:
                        oof[va, i] = build_model(self.base_models[n]).fit(dtr).predict_risk(dva)
                    except ValueError as e:
                        self.dropped_[n] = str(e)
                        warnings.warn(f"late_fusion: base model '{n}' dropped: {e}", stacklevel=2)
            keep = [i for i, n in enumerate(names) if n not in self.dropped_]
            if not keep:
                raise ValueError(f"late_fusion: every base model failed in the inner folds: {self.dropped_}")
            self.names_ = [names[i] for i in keep]
            oof, present = oof[:, keep], present[:, keep]
            self.centre_ = np.array(
                [np.median(oof[present[:, j], j]) if present[:, j].any() else 0.0 for j in range(len(keep))]
            )
            self.scale_, self.indicators_ = oof_scales(oof, present, self.names_)
            self.oof_risk_ = pd.DataFrame(np.where(present, oof, np.nan), index=d.patients, columns=self.names_)
            X = self._design(oof, present)
            self.design_columns_ = [c for c in X.columns if X[c].std(ddof=0) > 0]  # constant columns carry nothing
            if not self.design_columns_:
                raise ValueError("late_fusion: every base model gave a constant out-of-fold risk; nothing to stack")
            X = X[self.design_columns_]
            if out.task == "survival":
                df = X.assign(__time=out.time[rows], __event=out.event[rows])
                self.meta_model_ = CoxPHFitter(penalizer=self.meta_penalizer)
                self.meta_model_.fit(df, duration_col="__time", event_col="__event")
                self.meta_coef_ = self.meta_model_.params_.copy()
            else:
                C = np.inf if self.meta_penalizer == 0 else 1.0 / (self.meta_penalizer * len(d))
                self.meta_model_ = LogisticRegression(C=C, max_iter=2000).fit(X, out.label[rows].astype(int))
                self.meta_coef_ = pd.Series(self.meta_model_.coef_.ravel(), index=X.columns)
            self.fitted_base_ = {n: build_model(self.base_models[n]).fit(d) for n in self.names_}
            self.task_ = out.task
            self.risk_median_ = float(np.median(self._meta_risk(X)))
        return self

    # -------------------------------------------------------------------------------------------- predict
    def _base_design(self, data: MultimodalData) -> pd.DataFrame:
        risks = np.column_stack([self.fitted_base_[n].predict_risk(data) for n in self.names_])
        present = np.column_stack([model_present(self.fitted_base_[n], data) for n in self.names_])
        return self._design(risks, present)[self.design_columns_]

    def _meta_risk(self, X: pd.DataFrame) -> np.ndarray:
        if self.task_ == "survival":
            return np.asarray(self.meta_model_.predict_log_partial_hazard(X), dtype=np.float64).ravel()
        return risk_from_response(self.meta_model_.predict_proba(X)[:, 1])

    def base_risks(self, data: MultimodalData) -> pd.DataFrame:
        """Each refitted base model's risk for ``data`` (NaN where its modality is absent)."""
        self._check_fitted()
        out = {}
        for n in self.names_:
            r = self.fitted_base_[n].predict_risk(data)
            out[n] = np.where(model_present(self.fitted_base_[n], data), r, np.nan)
        return pd.DataFrame(out, index=data.patients)

    def predict_risk(self, data: MultimodalData) -> np.ndarray:
        self._check_fitted()
        risk = self._meta_risk(self._base_design(data))
        return np.where(np.isfinite(risk), risk, self.risk_median_)

    def predict_survival(self, data: MultimodalData, times: np.ndarray) -> np.ndarray:
        self._need_task("survival", "predict_survival")
        times = np.asarray(times, dtype=np.float64)
        sf = self.meta_model_.predict_survival_function(self._base_design(data), times=times)
        return np.asarray(sf, dtype=np.float64).T

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "model": self.name,
            "meta": self.meta,
            "inner_folds": self.inner_folds,
            "meta_penalizer": self.meta_penalizer,
            "task": self.task,
            "seed": self.seed,
            "base_models": ",".join(self.base_models),
        }
        for n, spec in self.base_models.items():
            if isinstance(spec, SurvivalModel):
                for k, v in spec.describe().items():
                    info[f"base.{n}.{k}"] = v
            elif isinstance(spec, Mapping):
                for k, v in spec.items():
                    info[f"base.{n}.{k}"] = v if isinstance(v, str | int | float | bool) or v is None else str(v)
        return info

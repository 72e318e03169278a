"""The fused model: the clinical model as its backbone, each modality adding only what held-out data supports.

Peers' deep fusion models lose to their own clinical Cox model (MultiSurv: 0.787 with six modalities against
0.796 clinical only; SurvBoard: statistical models match deep fusion), and so did a network trained end to end on
clinical + omics tables here (TCGA LUSC PFI: 0.614 against clinical Cox 0.639). A statistician will only use a
multimodal model that is never worse than the clinical model they already have. :class:`FusedSuperLearner`
therefore stacks, inside the training fold, the run's own kinds of models with **non-negative weights fitted out of
fold** (a super learner, van der Laan et al. 2007):

* ``clinical``: the clinical Cox model (:class:`~omics_risk.models.clinical_cox.ClinicalCox`), the backbone;
* ``reference``: the cohort's declared clinical reference column (stage; ``clinical_reference``), when given;
* ``coxnet_<m>``: one elastic-net Cox model per omics modality (:class:`~omics_risk.models.coxnet.ModalityCoxnet`,
  alpha by inner cross-validation);
* ``rsf_<m>``: one random survival forest per omics modality (:class:`~omics_risk.models.rsf.ModalityRSF`), for
  what a linear model cannot see (``stack.forests``; a random forest classifier for a binary endpoint);
* ``network``: the multimodal network (:class:`~omics_risk.models.fused.FusedSurvivalModel`: per-modality
  encoders, a MONAI 3D ResNet for CT images, fusion with a presence mask, Cox / discrete / binary heads).

``fit`` (one outer training fold): each elastic-net base model chooses its alpha once, on the whole fold, and its
``inner_folds`` copies keep it; the stratified inner folds give every base model's out-of-fold risk; each risk is
centred on its median and scaled by its SD over the patients that have its modality (0 and a missingness indicator
where absent); the meta-model, a Cox partial likelihood (torchsurv, Efron ties) -- or a logistic loss for a binary
endpoint -- is fitted on those columns with **weights >= 0** (L-BFGS-B), so a base model whose risk does not help
held-out patients gets weight 0 instead of a sign flip that overfits. The clinical backbone's weight is barely
penalised; every other column is shrunk by a ridge penalty chosen by second-level cross-validation, and the backbone
alone wins unless the omics beat it by a likelihood-ratio bar (:meth:`FusedSuperLearner._shrink`). Base models with
a weight are then refitted on the whole fold. A modality that carries no signal therefore costs the clinical backbone
nothing, and one that does is weighted by what it adds beyond the others.

Saved without pickle (:meth:`save`): the linear base models as JSON coefficients with their fitted preprocessing in
skops files, the forests (leaf risks only) in skops files, the network in its own format
(:mod:`omics_risk.models.fused_io`), the weights and the Breslow baseline hazard in JSON. A survival task's response
probability (``task.response``) comes from the network's binary head.
"""

from __future__ import annotations

import copy
import json
import time as _time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize
from torchsurv.loss.cox import neg_partial_log_likelihood

from omics_risk import __version__
from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.base import InsufficientTrainingData, ModelCapabilities, SurvivalModel
from omics_risk.models.baselines import BASELINE_DEFAULTS, LATE_FUSION_BASE_DEFAULTS
from omics_risk.models.clinical_cox import ClinicalCox
from omics_risk.models.coxnet import ModalityCoxnet
from omics_risk.models.fused import FusedSurvivalModel
from omics_risk.models.fused_training import breslow_baseline
from omics_risk.models.images import ImageProvider
from omics_risk.models.preprocessing import load_trusted, save_trusted
from omics_risk.models.reference import ClinicalReference
from omics_risk.models.rsf import ModalityRSF
from omics_risk.models.saved import plain, read_config
from omics_risk.models.stacking import oof_scales
from omics_risk.models.tabular import CLINICAL, inner_splits, modality_frame, modality_present, outcome_of

__all__ = ["FORMAT", "STACK_DEFAULTS", "ForestBase", "FusedSuperLearner", "LinearBase", "TableBase", "base_of",
           "fit_nonnegative_meta"]

FORMAT = "omics-risk-fused-super-learner"
FORMAT_VERSION = 1
NETWORK = "network"

#: Settings of the stack (``model.estimator.stack`` in configs/model/fused.yaml); any key may be overridden.
STACK_DEFAULTS: dict[str, Any] = {
    "enabled": True,            # false: the network alone (the end-to-end fused network, for ablations)
    "inner_folds": 5,           # out-of-fold risks for the meta-model
    "network": True,            # the multimodal network as a base model
    "network_inner_members": 1,  # ensemble members of the network inside the inner folds (the refit keeps n_members)
    "coxnet": {},               # ModalityCoxnet settings over the baselines' late-fusion defaults
    "forests": True,            # a random survival forest per omics modality as a base model too (rsf_<m>)
    "rsf": {},                  # ModalityRSF settings over the baselines' defaults
    "clinical_cox": {},         # ClinicalCox settings over the baselines' defaults
    "preprocessing": {},        # modality -> the table bases' ``preprocessing`` (kind, or {kind, screening})
    "meta_penalizer": 0.01,     # ridge penalty of the clinical backbone's weight (per patient; columns in SD units)
    # ridge penalties of every other column (base risks, missingness indicators), one chosen by second-level CV; the
    # clinical backbone alone is always a candidate too, left only for a CV log-likelihood gain above min_gain
    "shrinkage": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0],
    "select": False,            # true: forward selection from the backbone instead (a base model enters or not)
    "meta_cv_repeats": 3,       # fold assignments of the second-level CV (its log-likelihood is their mean)
    "min_gain": 3.32,           # the second-level CV log-likelihood gain over the backbone alone (or, select=true, of
                                # each base model that enters) needed to move away from the backbone
    "indicators": True,         # missingness indicators of base models whose modality some patients lack
}


# ------------------------------------------------------------------------------------------ table bases
class TableBase:
    """A fitted base model that reads one table: risk = score(transform(table)) - centre, 0 where the modality is
    absent (a missingness indicator carries those patients).

    ``transformer`` is the model's own fitted preprocessing (a ClinicalEncoder for the clinical table, whose output
    ``columns`` are kept; else a scikit-learn pipeline); ``centre`` is the median raw risk of its training patients,
    so the risks of models fitted on different inner folds are on one scale."""

    name: str
    modality: str
    transformer: Any
    centre: float
    columns: list[str] | None

    def _score(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def raw(self, data: MultimodalData) -> tuple[np.ndarray, np.ndarray]:
        """Uncentred risk for the patients that have the modality, and the presence mask (a table the data does not
        carry at all, e.g. a scoring cohort without that modality, is absent for everyone)."""
        if self.modality != CLINICAL and self.modality not in data.modalities:
            return np.empty(0), np.zeros(len(data), dtype=bool)
        present = modality_present(data, self.modality)
        frame = modality_frame(data, self.modality).iloc[np.flatnonzero(present)]
        if not len(frame):
            return np.empty(0), present
        X = self.transformer.transform(frame)
        if self.columns is not None:
            X = X[self.columns]
        return self._score(np.nan_to_num(np.asarray(X, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)), present

    def risk(self, data: MultimodalData) -> tuple[np.ndarray, np.ndarray]:
        """Centred risk of every patient of ``data`` (0 where absent) and the presence mask."""
        vals, present = self.raw(data)
        out = np.zeros(len(present))
        out[present] = vals - self.centre
        return out, present


@dataclass
class LinearBase(TableBase):
    """A linear base model (clinical Cox, the clinical reference, elastic-net Cox): score = X @ coef + intercept,
    times ``sign`` = -1 for a logistic model (risk = minus the response logit)."""

    name: str
    modality: str
    transformer: Any
    coef: np.ndarray
    intercept: float = 0.0
    centre: float = 0.0
    columns: list[str] | None = None
    sign: float = 1.0

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self.sign * (X @ self.coef + self.intercept)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "linear", "name": self.name, "modality": self.modality, "coef": self.coef.tolist(),
                "intercept": self.intercept, "centre": self.centre, "columns": self.columns, "sign": self.sign}


#: bounds of a forest's risk before its log (summed cumulative hazard) or logit (P(no response)): a leaf without
#: events, or a forest whose every tree votes one way, would otherwise give an infinite column
_FOREST_EPS = 1e-3


@dataclass
class ForestBase(TableBase):
    """A random forest base model on one omics table (``rsf_<m>``, :class:`~omics_risk.models.rsf.ModalityRSF`):
    the trees find what a linear model cannot (thresholds, interactions). Score = the log of the survival forest's
    summed cumulative hazard, or the logit of P(no response) for a binary endpoint: a log-scale risk, as the linear
    base models' are, for the Cox (or logistic) meta-model."""

    name: str
    modality: str
    transformer: Any
    forest: Any
    centre: float = 0.0
    columns: list[str] | None = None

    def _score(self, X: np.ndarray) -> np.ndarray:
        if hasattr(self.forest, "predict_proba"):  # a classifier: the last class is response
            p = np.clip(1.0 - self.forest.predict_proba(X)[:, -1], _FOREST_EPS, 1.0 - _FOREST_EPS)
            return np.log(p / (1.0 - p))
        return np.log(np.maximum(np.asarray(self.forest.predict(X), dtype=np.float64), _FOREST_EPS))

    def to_json(self) -> dict[str, Any]:
        return {"kind": "forest", "name": self.name, "modality": self.modality, "centre": self.centre,
                "columns": self.columns}


def base_of(name: str, model: SurvivalModel, data: MultimodalData) -> TableBase:
    """The :class:`TableBase` form of a fitted ClinicalCox, ClinicalReference, ModalityCoxnet or ModalityRSF
    (centred on the median risk of ``data``, its training patients)."""
    binary = getattr(model, "task_", "survival") != "survival"
    base: TableBase
    if isinstance(model, ClinicalReference):
        base = LinearBase(name, CLINICAL, model.pipeline_, model.coef_.to_numpy(dtype=np.float64),
                          float(model.model_.intercept_[0]) if binary else 0.0, sign=-1.0 if binary else 1.0)
    elif isinstance(model, ClinicalCox):
        clf = getattr(model, "clf_", None)
        base = LinearBase(name, CLINICAL, model.encoder_, model.coef_.to_numpy(dtype=np.float64),
                          float(clf.intercept_[0]) if binary and clf is not None else 0.0,
                          columns=list(model.columns_), sign=-1.0 if binary else 1.0)
    elif isinstance(model, ModalityCoxnet):
        base = LinearBase(name, model.modality, model.pipeline_, model.coef_.to_numpy(dtype=np.float64),
                          float(model.model_.intercept_[0]) if binary else 0.0, sign=-1.0 if binary else 1.0)
    elif isinstance(model, ModalityRSF):
        base = ForestBase(name, model.modality, model.pipeline_, model.model_)
    else:
        raise TypeError(f"{type(model).__name__} cannot be a base model of the fused super learner")
    vals, _ = base.raw(data)
    base.centre = float(np.median(vals)) if len(vals) else 0.0
    return base


# ------------------------------------------------------------------------------------------- meta-model
def fit_nonnegative_meta(X: np.ndarray, nonnegative: np.ndarray, *, time: np.ndarray | None = None,
                         event: np.ndarray | None = None, label: np.ndarray | None = None,
                         penalizer: float | np.ndarray = 0.01) -> tuple[np.ndarray, float]:
    """Weights (and, for a binary label, an intercept) minimising the mean Cox negative partial log-likelihood
    (torchsurv, Efron ties) or the mean logistic loss, plus ``sum_j penalizer_j / 2 * w_j^2`` (``penalizer``: one
    value, or one per column), with ``w >= 0`` where ``nonnegative`` (L-BFGS-B). torchsurv evaluates the likelihood
    in float32: weights agree with lifelines' Cox fit to about 1e-3, far below what the out-of-fold risks they are
    fitted on can resolve."""
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
    _, p = Xt.shape
    pen = torch.as_tensor(np.broadcast_to(np.asarray(penalizer, dtype=np.float64), (p,)).copy())
    survival = label is None
    if survival:
        t = torch.as_tensor(np.asarray(time, dtype=np.float64))
        e = torch.as_tensor(np.asarray(event, dtype=np.float64) > 0.5)
    else:
        y = torch.as_tensor(np.asarray(label, dtype=np.float64))

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        th = torch.as_tensor(theta, dtype=torch.float64).requires_grad_(True)
        w = th[:p]
        lin = Xt @ w
        if survival:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Ties in `time` detected; using efron": as asked
                loss = neg_partial_log_likelihood(lin, e, t, ties_method="efron", reduction="mean")
        else:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(lin + th[p], y)
        loss = loss + 0.5 * (pen * w * w).sum()
        loss.backward()
        return float(loss.detach()), th.grad.detach().numpy().astype(np.float64)

    k = p if survival else p + 1
    bounds = [(0.0, None) if nonnegative[j] else (None, None) for j in range(p)] + ([] if survival else [(None, None)])
    res = minimize(objective, np.zeros(k), jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 1000, "gtol": 1e-10, "ftol": 1e-14})
    theta = np.asarray(res.x, dtype=np.float64)
    return theta[:p], (0.0 if survival else float(theta[p]))


def _log_partial_likelihood(eta: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Cox log partial likelihood (torchsurv, Efron ties) of the linear predictor ``eta``; 0 without events."""
    e = np.asarray(event, dtype=np.float64) > 0.5
    if not e.any():
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ties: Efron, as asked
        nll = neg_partial_log_likelihood(torch.as_tensor(np.asarray(eta, dtype=np.float64)), torch.as_tensor(e),
                                         torch.as_tensor(np.asarray(time, dtype=np.float64)), ties_method="efron",
                                         reduction="sum")
    return -float(nll)


def _columns_of(X: pd.DataFrame, chosen: list[str]) -> list[str]:
    """The meta-model columns of the ``chosen`` base models: their risks and their missingness indicators."""
    return [c for c in X.columns if c in chosen or c.removesuffix("_missing") in chosen]


def _with_fixed_alpha(model: SurvivalModel, alpha: float) -> SurvivalModel:
    model.fixed_alpha = float(alpha)  # type: ignore[attr-defined]  # a ModalityCoxnet (see _whole_fold_coxnets)
    return model


def _centred_network_risk(net: FusedSurvivalModel, data: MultimodalData, images: ImageProvider | None,
                          raw: np.ndarray | None = None, scale: float = 1.0) -> np.ndarray:
    """The network's risk centred on its training median, in units of ``scale`` (``raw``: its risk from an earlier
    forward pass)."""
    risk = raw if raw is not None else net.predict_risk(data, images=images)
    return (risk - net.train_median_risk_) / scale


def _network_scale(net: FusedSurvivalModel, data: MultimodalData, images: ImageProvider | None) -> float:
    """SD of a fitted network's risk over its own training patients. Each fit of the network is put in these units
    before stacking: the spread of its risk moves with where early stopping ended (one inner fit's held-out SD was
    twice the others' on the demo cohort), and the meta-model has one weight for all of them."""
    sd = float(np.std(_centred_network_risk(net, data, images)))
    return sd if sd > 1e-12 else 1.0


# ------------------------------------------------------------------------------------------------ model
class FusedSuperLearner(SurvivalModel):
    """Clinical backbone + per-modality elastic-net Cox and random survival forests + the multimodal network,
    stacked with non-negative weights fitted out of fold (module docstring).

    Args:
        stack: :data:`STACK_DEFAULTS` overrides (``enabled=False``: the network alone).
        clinical_reference: the cohort's clinical reference column (e.g. stage), stacked as its own base model.
        **network: :class:`~omics_risk.models.fused.FusedSurvivalModel` settings (the run passes ``modalities``,
            ``clinical_types``, ``seed``, ``device`` and, for a response task, ``response_label`` / ``heads``).

    Fitted attributes: ``weights_`` (per base model, in SD units of its out-of-fold risk), ``bases_`` (name ->
    :class:`TableBase`), ``network_model_``, ``scale_``, ``indicators_``, ``oof_risk_``, ``dropped_`` (base models
    that could not be fitted, with the reason), ``modalities_``, ``feature_manifest_``, Breslow ``baseline_times_`` /
    ``baseline_cumhaz_``.
    """

    def __init__(self, *, stack: Mapping[str, Any] | None = None, clinical_reference: str | None = None,
                 **network: Any):
        given = plain(dict(stack or {}))
        unknown = sorted(set(given) - set(STACK_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown stack setting(s) {', '.join(unknown)} (known: {', '.join(STACK_DEFAULTS)})")
        self.stack = {**copy.deepcopy(STACK_DEFAULTS), **given}
        self.clinical_reference = clinical_reference
        self.network_settings = plain(network)
        self.name = str(self.network_settings.get("name", "fused"))
        self.seed = int(self.network_settings.get("seed", 0))
        self.clinical_types = self.network_settings.get("clinical_types")
        self.use_ct_images = bool(self.network_settings.get("use_ct_images", False))
        self.ct_timepoints = self.network_settings.get("ct_timepoints")
        self._template = FusedSurvivalModel(**self.network_settings)  # checks the network settings now
        if not self.stack["enabled"] and not self.stack["network"]:
            raise ValueError("stack.enabled=false means the network alone: it needs stack.network=true")

    def __getattr__(self, name: str) -> Any:
        """The network's settings read through (``model.heads``, ``model.use_clinical``, ``model.preprocessing``)."""
        template = self.__dict__.get("_template")
        if template is not None and name in FusedSurvivalModel._setting_names():
            return getattr(template, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------------------------------ settings
    def get_params(self) -> dict[str, Any]:
        return {"stack": copy.deepcopy(self.stack), "clinical_reference": self.clinical_reference,
                **copy.deepcopy(self.network_settings)}

    def describe(self) -> dict[str, Any]:
        flat = {f"network.{k}": v for k, v in self._template.describe().items()}
        for k, v in self.stack.items():
            flat[f"stack.{k}"] = json.dumps(v) if isinstance(v, Mapping) else v
        flat["clinical_reference"] = self.clinical_reference
        for k, w in getattr(self, "weights_", {}).items():
            flat[f"weight.{k}"] = round(float(w), 4)
        if hasattr(self, "shrinkage_") and not self.stack["select"]:  # the chosen penalty; "backbone": it alone
            flat["shrinkage_chosen"] = "backbone" if self.shrinkage_ is None else float(self.shrinkage_)
        return flat

    def capabilities(self) -> ModelCapabilities:
        net = self._template.capabilities()
        survival = net.survival or (self.stack["enabled"] and "binary" not in self._template.heads)
        response = net.response and bool(self.stack["network"])
        return ModelCapabilities(survival=survival, response=response, images=net.images, epoch_callback=True)

    def set_images(self, images: ImageProvider | None) -> FusedSuperLearner:
        """Default CT image provider of the network for later ``predict_*`` calls."""
        if hasattr(self, "network_model_"):
            self.network_model_.set_images(images)
        self._template.set_images(images)
        return self

    # ----------------------------------------------------------------------------------------------- fit
    def _network(self, members: int | None = None, progress: bool | None = None) -> FusedSurvivalModel:
        settings = dict(self.network_settings)
        if members is not None:
            settings["n_members"] = members
        if progress is not None:
            settings["progress"] = progress
        return FusedSurvivalModel(**settings)

    def _table_specs(self, data: MultimodalData, task: str) -> dict[str, Callable[[], SurvivalModel]]:
        """Factories of the base models that read one table: clinical Cox, the reference, and per omics modality an
        elastic-net Cox model and (``stack.forests``) a random survival forest."""
        common = {"task": task, "random_state": self.seed, "clinical_types": self.clinical_types}
        cox = {**BASELINE_DEFAULTS["clinical_cox"], **dict(self.stack["clinical_cox"] or {})}
        coxnet = {**BASELINE_DEFAULTS["coxnet"], **LATE_FUSION_BASE_DEFAULTS["coxnet"],
                  **dict(self.stack["coxnet"] or {})}
        forest = {**BASELINE_DEFAULTS["rsf"], **dict(self.stack["rsf"] or {}), "low_memory": True}
        wanted = self.network_settings.get("modalities")
        given = dict(self.stack["preprocessing"] or {})
        omics = [m for m in data.modality_names if m != CLINICAL and (wanted is None or m in wanted)
                 and not (self.use_ct_images and m == self.network_settings.get("ct_modality", "ct"))]
        prep = {m: given.get(m, "auto") for m in omics}  # per omics modality, for its elastic-net model and forest
        specs: dict[str, Callable[[], SurvivalModel]] = {}
        if self.network_settings.get("use_clinical", True):
            specs["clinical"] = lambda: ClinicalCox(**cox, **common)
            if self.clinical_reference:
                specs["reference"] = lambda: ClinicalReference(self.clinical_reference, **common)
        for m in prep:
            specs[f"coxnet_{m}"] = lambda m=m: ModalityCoxnet(m, **coxnet, preprocessing=prep[m], **common)
        if self.stack["forests"]:
            for m in prep:
                specs[f"rsf_{m}"] = lambda m=m: ModalityRSF(m, **forest, preprocessing=prep[m], **common)
        return specs

    def _whole_fold_coxnets(self, d: MultimodalData, specs: Mapping[str, Callable[[], SurvivalModel]]
                            ) -> tuple[dict[str, TableBase], dict[str, Callable[[], SurvivalModel]]]:
        """Each elastic-net base model fitted on the whole fold (its alpha chosen by its own inner CV there), and
        factories of its inner-fold copies that keep that alpha (``fixed_alpha``): the out-of-fold risks the weights
        are fitted on then come from the model the stack uses, on the same scale. A base model that cannot be fitted
        is left out (``dropped_``)."""
        whole: dict[str, TableBase] = {}
        inner = dict(specs)
        for n, make in specs.items():
            model = make()
            if not isinstance(model, ModalityCoxnet):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(d)
            except ValueError as exc:  # InsufficientTrainingData included
                self.dropped_[n] = str(exc).splitlines()[0]
                warnings.warn(f"{self.name}: base model '{n}' left out: {self.dropped_[n]}", stacklevel=3)
                continue
            whole[n] = base_of(n, model, d)
            inner[n] = lambda make=make, alpha=model.alpha_: _with_fixed_alpha(make(), alpha)
        return whole, inner

    def _fit_bases(self, d: MultimodalData, specs: Mapping[str, Callable[[], SurvivalModel]], names: list[str],
                   images: ImageProvider | None, *, final: bool,
                   on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
        fitted: dict[str, Any] = {}
        for n in names:
            if n == NETWORK:
                net = self._network(None if final else int(self.stack["network_inner_members"]),
                                    None if final else False)
                kw: dict[str, Any] = {"images": images}
                if final:
                    kw["on_epoch"] = on_epoch
                with warnings.catch_warnings():
                    if not final:
                        warnings.simplefilter("ignore")
                    fitted[n] = net.fit(d, **kw)
            else:
                fitted[n] = base_of(n, specs[n]().fit(d), d)
        return fitted

    @staticmethod
    def _base_risk(base: Any, data: MultimodalData, images: ImageProvider | None,
                   train: MultimodalData) -> tuple[np.ndarray, np.ndarray]:
        """A base model's risk on ``data`` (a network's in SD units of its risk on its ``train`` patients)."""
        if isinstance(base, TableBase):
            return base.risk(data)
        scale = _network_scale(base, train, images)
        return _centred_network_risk(base, data, images, scale=scale), np.ones(len(data), dtype=bool)

    def fit(self, data: MultimodalData, images: ImageProvider | None = None,
            on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> FusedSuperLearner:
        """Fit on ``data`` (a training fold): out-of-fold base risks, non-negative meta weights, refitted bases."""
        t0 = _time.perf_counter()
        if images is not None:
            self._template.set_images(images)
        images = images if images is not None else self._template.image_provider
        out = outcome_of(data)
        rows = np.flatnonzero(out.usable)
        d = data.subset(rows)
        self.task_ = out.task
        self.dropped_: dict[str, str] = {}
        if not self.stack["enabled"]:
            self.network_model_ = self._network().fit(d, images=images, on_epoch=on_epoch)
            self.network_scale_ = 1.0
            self.names_, self.weights_, self.bases_ = [NETWORK], {NETWORK: 1.0}, {}
            self.base_modality_ = {NETWORK: CLINICAL}
            self.scale_, self.indicators_, self.intercept_ = np.ones(1), [], 0.0
            self._finish(d, out, rows, images)
            self.fit_seconds_ = _time.perf_counter() - t0
            return self
        specs = self._table_specs(d, out.task)
        names = list(specs) + ([NETWORK] if self.stack["network"] else [])
        if not names:
            raise ValueError("the fused super learner has no base model: enable the network or the clinical table")
        whole, inner_specs = self._whole_fold_coxnets(d, specs)
        present = np.zeros((len(d), len(names)), dtype=bool)
        oof = np.zeros((len(d), len(names)))
        splits = inner_splits(out.strata(rows), int(self.stack["inner_folds"]), self.seed,
                              survival=out.task == "survival")
        for tr, va in splits:
            dtr, dva = d.subset(tr), d.subset(va)
            for i, n in enumerate(names):
                if n in self.dropped_:
                    continue
                try:
                    base = self._fit_bases(dtr, inner_specs, [n], images, final=False)[n]
                except ValueError as exc:  # InsufficientTrainingData included: a small inner fold
                    self.dropped_[n] = str(exc).splitlines()[0]
                    warnings.warn(f"{self.name}: base model '{n}' left out: {self.dropped_[n]}", stacklevel=2)
                    continue
                oof[va, i], present[va, i] = self._base_risk(base, dva, images, dtr)
        keep = [i for i, n in enumerate(names) if n not in self.dropped_]
        if not keep:
            raise InsufficientTrainingData(f"{self.name}: no base model could be fitted in the inner folds "
                                           f"({self.dropped_})")
        self.names_ = [names[i] for i in keep]
        oof, present = oof[:, keep], present[:, keep]
        self.scale_, self.indicators_ = oof_scales(oof, present, self.names_)
        if not self.stack["indicators"]:
            self.indicators_ = []
        X = self._design({n: oof[:, j] for j, n in enumerate(self.names_)},
                         {n: present[:, j] for j, n in enumerate(self.names_)})
        survival = out.task == "survival"
        # A binary endpoint's label is 1 = response (favourable): the meta-model predicts non-response, so that
        # every base risk (higher = worse) enters with a non-negative weight.
        target = ({"time": out.time[rows], "event": out.event[rows]} if survival
                  else {"label": 1.0 - out.label[rows]})
        if self.stack["select"]:
            self.selection_ = self._select(X, target, out.strata(rows))
            self.shrinkage_ = None
        else:
            self.selection_, self.shrinkage_ = self._shrink(X, target, out.strata(rows))
        cols = _columns_of(X, self.selection_)
        nonneg = np.array([c in self.names_ for c in cols])
        w, self.intercept_ = fit_nonnegative_meta(X[cols].to_numpy(), nonneg, **target,
                                                  penalizer=self._penalties(cols, self.shrinkage_))
        self.weights_ = {c: 0.0 for c in X.columns} | {c: float(v) for c, v in zip(cols, w, strict=True)}
        if "clinical" in self.names_ and not any(self.weights_[n] > 0 for n in self.names_):
            # Nothing, not even the backbone, ranks held-out patients better than chance (a tiny or signal-free
            # fold): the fused model is its clinical backbone rather than a constant that reads no input.
            self.weights_ = {c: (1.0 if c == "clinical" else 0.0) for c in X.columns}
            self.intercept_ = 0.0 if survival else self.intercept_
        self.oof_risk_ = pd.DataFrame(np.where(present, oof, np.nan), index=d.patients, columns=self.names_)
        self.base_modality_ = {n: self._modality_of(n, specs) for n in self.names_}
        used = [n for n in self.names_ if self.weights_[n] > 0 and n != NETWORK]
        if (self.weights_.get(NETWORK, 0.0) > 0 or (self.stack["network"] and self._network_needed())
                or (NETWORK in self.names_ and self.use_ct_images)):
            # also at weight 0 (or left out of the stack) when its binary head answers response, and a CT model
            # keeps its CT network: the 3D encoder is what it is for (attention, base_risks, the CT scores)
            used.append(NETWORK)
        fitted = self._fit_bases(d, specs, [n for n in used if n not in whole], images, final=True, on_epoch=on_epoch)
        fitted.update({n: whole[n] for n in used if n in whole})
        self.bases_ = {n: b for n, b in fitted.items() if isinstance(b, TableBase)}
        if NETWORK in fitted:
            self.network_model_ = fitted[NETWORK]
            self.network_scale_ = _network_scale(self.network_model_, d, images)
        self._finish(d, out, rows, images)
        self.fit_seconds_ = _time.perf_counter() - t0
        return self

    def _penalties(self, cols: list[str], shrinkage: float | None) -> np.ndarray:
        """Ridge penalty per meta column: ``meta_penalizer`` for the clinical backbone, ``shrinkage`` for every other
        column (``meta_penalizer`` for all when ``shrinkage`` is None: forward selection)."""
        base = float(self.stack["meta_penalizer"])
        return np.array([base if shrinkage is None or c == "clinical" else float(shrinkage) for c in cols])

    def _meta_splits(self, strata: np.ndarray, *, survival: bool) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """``stack.meta_cv_repeats`` independent fold assignments of the second-level cross-validation."""
        k = int(self.stack["inner_folds"])
        return [inner_splits(strata, k, self.seed + 1 + r, survival=survival)
                for r in range(int(self.stack["meta_cv_repeats"]))]

    def _cv_score(self, X: pd.DataFrame, cols: list[str], target: Mapping[str, np.ndarray],
                  splits: list[list[tuple[np.ndarray, np.ndarray]]], shrinkage: float | None = None) -> float:
        """Second-level cross-validated log-likelihood of a meta-model on columns ``cols`` of the out-of-fold risks.

        Survival: Verweij & van Houwelingen's cross-validated partial log-likelihood, sum over folds k of
        ``l(w_-k) - l_-k(w_-k)`` (the full-data minus the other folds' partial log-likelihood at the weights fitted
        without fold k); binary: the held-out Bernoulli log-likelihood. Less noisy than a held-out C-index on a few
        hundred patients, and on the scale of a likelihood-ratio test. With several fold assignments (``splits``, one
        list per repeat), the mean over them: one assignment's choice of penalty moved with its seed (0.01 or 0.3 on
        the demo cohort, external C 0.704 or 0.717)."""
        nonneg = np.array([c in self.names_ for c in cols])
        Z = X[cols].to_numpy()
        pen = self._penalties(cols, shrinkage)
        total = 0.0
        for tr, va in (fold for repeat in splits for fold in repeat):
            w, b = fit_nonnegative_meta(Z[tr], nonneg, **{k: v[tr] for k, v in target.items()}, penalizer=pen)
            if "label" in target:
                eta = Z[va] @ w + b
                y = target["label"][va]
                total += float(np.sum(y * eta - np.logaddexp(0.0, eta)))
            else:
                total += (_log_partial_likelihood(Z @ w, target["time"], target["event"])
                          - _log_partial_likelihood(Z[tr] @ w, target["time"][tr], target["event"][tr]))
        return total / len(splits)

    def _select(self, X: pd.DataFrame, target: Mapping[str, np.ndarray], strata: np.ndarray) -> list[str]:
        """The base models the meta-model may use: forward selection from the clinical backbone, adding the base
        model (with its missingness indicator) that most raises the second-level cross-validated log-likelihood,
        while it raises it by more than ``stack.min_gain`` (3.32 = half the 99% chi-square quantile of one degree of
        freedom: a likelihood-ratio test at p < 0.01, about 5% family-wise over a handful of candidates). A modality
        that does not help held-out patients stays out, so on data where the omics carry nothing the fused model is its
        clinical backbone."""
        if not self.stack["select"]:
            return list(self.names_)
        splits = self._meta_splits(strata, survival="label" not in target)

        def score(chosen: list[str]) -> float:
            return self._cv_score(X, _columns_of(X, chosen), target, splits)

        chosen = ["clinical"] if "clinical" in self.names_ else []
        if not chosen:  # no clinical backbone: start from the best single base model
            chosen = [max(self.names_, key=lambda n: score([n]))]
        best = score(chosen)
        self.selection_path_ = [(list(chosen), best)]
        while True:
            rest = [n for n in self.names_ if n not in chosen]
            if not rest:
                break
            scores = {n: score([*chosen, n]) for n in rest}
            top = max(scores, key=lambda n: scores[n])
            if scores[top] <= best + float(self.stack["min_gain"]):
                break
            chosen, best = [*chosen, top], scores[top]
            self.selection_path_.append((list(chosen), best))
        return chosen

    def _shrink(self, X: pd.DataFrame, target: Mapping[str, np.ndarray],
                strata: np.ndarray) -> tuple[list[str], float | None]:
        """How strongly the omics may move the clinical backbone: every base model enters, the backbone's weight is
        barely penalised and every other column (base risks, missingness indicators) is shrunk by a ridge penalty
        chosen from ``stack.shrinkage`` by the second-level cross-validated log-likelihood (:meth:`_cv_score`), with
        the clinical backbone alone as one more candidate. A continuous shrinkage rather than an in-or-out choice: on a
        few hundred patients forward selection kept one or two modalities whose out-of-fold strength did not transfer
        to an independent cohort (docs/fused_model.md). The stack leaves the backbone only when its best penalty beats
        the backbone alone by more than ``stack.min_gain`` (a likelihood-ratio bar at p < 0.01), so on data whose
        omics carry nothing the fused model is its clinical backbone. Returns the base models that may speak and the
        chosen penalty (None: the backbone alone)."""
        splits = self._meta_splits(strata, survival="label" not in target)
        grid = sorted(float(v) for v in (self.stack["shrinkage"] or []))
        if any(v <= 0 for v in grid):
            raise ValueError(f"stack.shrinkage must be positive ridge penalties, got {grid}")
        path: list[tuple[float | None, float]] = []
        if "clinical" in self.names_:
            path.append((None, self._cv_score(X, _columns_of(X, ["clinical"]), target, splits)))
        if len(self.names_) > 1 or "clinical" not in self.names_:
            cols = list(X.columns)
            path += [(lam, self._cv_score(X, cols, target, splits, lam)) for lam in grid]
        if not path:  # only the backbone, and no grid: nothing to choose
            return list(self.names_), None
        self.shrinkage_path_ = path
        best, score = max(path, key=lambda item: item[1])
        if path[0][0] is None and best is not None and score <= path[0][1] + float(self.stack["min_gain"]):
            best = None  # the omics must beat the backbone alone by the likelihood-ratio bar (as forward selection)
        return (["clinical"], None) if best is None else (list(self.names_), best)

    @staticmethod
    def _modality_of(name: str, specs: Mapping[str, Callable[[], SurvivalModel]]) -> str:
        """The table a base model reads (the network: the clinical table, always present)."""
        if name == NETWORK or name in ("clinical", "reference"):
            return CLINICAL
        return str(specs[name]().modality)

    def _network_needed(self) -> bool:
        """The network is refitted even at weight 0 when it answers the response question (its binary head)."""
        return "binary" in self._template.heads and self.task_ == "survival"

    def _finish(self, d: MultimodalData, out: Any, rows: np.ndarray, images: ImageProvider | None) -> None:
        risk = self._combine(d, images)
        self.train_median_risk_ = float(np.median(risk))
        if out.task == "survival":
            self.baseline_times_, self.baseline_cumhaz_ = breslow_baseline(risk, out.time[rows], out.event[rows])
        self._set_manifest(d)

    def _set_manifest(self, d: MultimodalData) -> None:
        mods: dict[str, dict[str, Any]] = {}
        net = getattr(self, "network_model_", None)
        if net is not None:
            mods.update(copy.deepcopy(net.feature_manifest_))
            self.preprocessors_ = net.preprocessors_
        for base in self.bases_.values():
            if base.modality not in mods:
                cols = [str(c) for c in modality_frame(d, base.modality).columns]
                kind = CLINICAL if base.modality == CLINICAL else "tabular"
                mods[base.modality] = {"kind": kind, "columns_in": cols, "features_out": cols}
        self.feature_manifest_ = mods
        self.modalities_ = list(mods)

    # ------------------------------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "weights_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(data) or load(directory) first")

    def _design(self, risks: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray]) -> pd.DataFrame:
        """Meta-model columns: each base risk in SD units of its out-of-fold risk (0 where absent), then the
        missingness indicators (free sign)."""
        cols = {n: np.where(present[n], risks[n], 0.0) / self.scale_[j] for j, n in enumerate(self.names_)}
        for n in self.indicators_:
            cols[f"{n}_missing"] = (~present[n]).astype(np.float64)
        return pd.DataFrame(cols)

    def _combine(self, data: MultimodalData, images: ImageProvider | None,
                 net_risk: np.ndarray | None = None) -> np.ndarray:
        """The stacked risk: sum of weight x column (+ the intercept of a binary meta-model). A base model with
        weight 0 and no indicator weight is not evaluated."""
        risks: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        for n in self.names_:
            if self.weights_.get(n, 0.0) == 0.0:  # only its missingness indicator, if any, can count
                risks[n] = np.zeros(len(data))
                m = self.base_modality_[n]
                present[n] = (modality_present(data, m) if m == CLINICAL or m in data.modalities
                              else np.zeros(len(data), dtype=bool))
            elif n == NETWORK:
                risks[n] = _centred_network_risk(self.network_model_, data, images, net_risk, self.network_scale_)
                present[n] = np.ones(len(data), dtype=bool)
            else:
                risks[n], present[n] = self.bases_[n].risk(data)
        X = self._design(risks, present)
        w = np.array([self.weights_[c] for c in X.columns])
        return X.to_numpy() @ w + float(self.intercept_)

    def _net_outputs(self, data: MultimodalData, times: np.ndarray | None, images: ImageProvider | None,
                     response: bool = False) -> dict[str, np.ndarray] | None:
        """The network's outputs in one pass, when the stack uses its risk or ``response`` is asked for."""
        net = getattr(self, "network_model_", None)
        used = self.weights_.get(NETWORK, 0.0) != 0.0 or self.weights_.get(f"{NETWORK}_missing", 0.0) != 0.0
        if net is None or not (used or response):
            return None
        return net.predict_outputs(data, times if self.names_ == [NETWORK] else None, images=images)

    def predict_risk(self, data: MultimodalData, images: ImageProvider | None = None) -> np.ndarray:
        """Stacked log relative hazard (higher = riskier; minus the stacked response logit for a binary endpoint)."""
        self._check_fitted()
        outs = self._net_outputs(data, None, images)
        return self._risk(data, outs, images)

    def _risk(self, data: MultimodalData, outs: Mapping[str, np.ndarray] | None,
              images: ImageProvider | None) -> np.ndarray:
        return self._combine(data, images, None if outs is None else np.asarray(outs["risk"]))

    def _survival(self, risk: np.ndarray, times: Any) -> np.ndarray:
        if not hasattr(self, "baseline_times_"):
            raise NotImplementedError("this model was fitted on a binary endpoint: it predicts response, not survival")
        times = np.atleast_1d(np.asarray(times, dtype=np.float64))
        pos = np.searchsorted(self.baseline_times_, times, side="right") - 1
        h0 = np.where(pos >= 0, self.baseline_cumhaz_[np.clip(pos, 0, None)], 0.0)
        return np.exp(-np.exp(risk)[:, None] * h0[None, :])

    def _response(self, risk: np.ndarray, outs: Mapping[str, np.ndarray] | None) -> np.ndarray:
        if self.task_ != "survival":
            return 1.0 / (1.0 + np.exp(risk))  # risk = the stacked logit of non-response
        if outs is None or "response" not in outs:
            raise NotImplementedError("this model has no response head: add 'binary' to the network's heads")
        return np.asarray(outs["response"], dtype=np.float64)

    def predict_survival(self, data: MultimodalData, times: np.ndarray,
                         images: ImageProvider | None = None) -> np.ndarray:
        """Survival probabilities (patients x times, days): Breslow baseline of the stacked risk on the training
        fold (the network's own curve when the stack is off)."""
        self._check_fitted()
        if self.names_ == [NETWORK]:
            return self.network_model_.predict_survival(data, times, images=images)
        return self._survival(self.predict_risk(data, images=images), times)

    def predict_response(self, data: MultimodalData, images: ImageProvider | None = None) -> np.ndarray:
        """P(response): the stacked logistic model for a binary endpoint; the network's binary head otherwise."""
        self._check_fitted()
        outs = self._net_outputs(data, None, images, response=self.task_ == "survival")
        return self._response(self._risk(data, outs, images), outs)

    def predict_outputs(self, data: MultimodalData, times: np.ndarray | None = None,
                        images: ImageProvider | None = None) -> dict[str, np.ndarray]:
        """``risk``, ``survival`` (when ``times`` is given) and ``response`` with one pass of the network, equal to
        the separate ``predict_*`` calls."""
        self._check_fitted()
        outs = self._net_outputs(data, times, images, response=self.capabilities().response)
        risk = self._risk(data, outs, images)
        result = {"risk": risk}
        if times is not None:
            result["survival"] = (outs["survival"] if self.names_ == [NETWORK] else self._survival(risk, times))
        if self.task_ != "survival" or (outs is not None and "response" in outs):
            result["response"] = self._response(risk, outs)
        return result

    def attention(self, data: MultimodalData, images: ImageProvider | None = None, *,
                  per_patient: bool = False) -> pd.Series | pd.DataFrame:
        """The network's gated-attention weights (see FusedSurvivalModel.attention)."""
        if getattr(self, "network_model_", None) is None:
            raise ValueError("this fused model has no network (stack.network=false)")
        return self.network_model_.attention(data, images=images, per_patient=per_patient)

    def base_risks(self, data: MultimodalData, images: ImageProvider | None = None) -> pd.DataFrame:
        """Each refitted base model's centred risk for ``data`` (NaN where its modality is absent)."""
        self._check_fitted()
        out = {}
        for n in self.names_:
            if n == NETWORK and getattr(self, "network_model_", None) is not None:
                out[n] = _centred_network_risk(self.network_model_, data, images, scale=self.network_scale_)
            elif n in self.bases_:
                r, p = self.bases_[n].risk(data)
                out[n] = np.where(p, r, np.nan)
        return pd.DataFrame(out, index=data.patients)

    # ------------------------------------------------------------------------------------------ save/load
    def save(self, directory: str | Path) -> Path:
        """Write the fitted model (no pickle): ``config.json`` (settings, weights, scales, manifest, Breslow),
        ``bases/<name>.skops`` (fitted preprocessing of each table base; a forest's trees in
        ``bases/<name>.forest.skops``), ``network/`` (the network's own layout)."""
        self._check_fitted()
        root = Path(directory)
        (root / "bases").mkdir(parents=True, exist_ok=True)
        for n, base in self.bases_.items():
            save_trusted(base.transformer, root / "bases" / f"{n}.skops")
            if isinstance(base, ForestBase):
                save_trusted(base.forest, root / "bases" / f"{n}.forest.skops")
        if getattr(self, "network_model_", None) is not None:
            self.network_model_.save(root / NETWORK)
        config = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "settings": self.get_params(), "task": self.task_, "names": self.names_, "weights": self.weights_,
            "intercept": self.intercept_, "scale": self.scale_.tolist(), "indicators": self.indicators_,
            "bases": {n: b.to_json() for n, b in self.bases_.items()}, "dropped": self.dropped_,
            "base_modality": self.base_modality_,
            "network_scale": getattr(self, "network_scale_", 1.0),
            "train_median_risk": self.train_median_risk_, "feature_manifest": self.feature_manifest_,
            "baseline_times": getattr(self, "baseline_times_", np.empty(0)).tolist(),
            "baseline_cumhaz": getattr(self, "baseline_cumhaz_", np.empty(0)).tolist(),
            "versions": {"omics_risk": __version__},
        }
        (root / "config.json").write_text(json.dumps(plain(config), indent=2))
        return root

    @classmethod
    def load(cls, directory: str | Path) -> FusedSuperLearner:
        """Rebuild a model written by :meth:`save` (JSON, trusted skops, the network's weights-only torch)."""
        root = Path(directory)
        cfg = read_config(root, FORMAT, FORMAT_VERSION, cls.__name__)
        model = cls(**cfg["settings"])
        model.task_, model.names_ = cfg["task"], list(cfg["names"])
        model.weights_ = {k: float(v) for k, v in cfg["weights"].items()}
        model.intercept_ = float(cfg["intercept"])
        model.scale_ = np.asarray(cfg["scale"], dtype=np.float64)
        model.indicators_, model.dropped_ = list(cfg["indicators"]), dict(cfg["dropped"])
        model.base_modality_ = dict(cfg["base_modality"])
        model.bases_ = {}
        for n, spec in cfg["bases"].items():
            transformer = load_trusted(root / "bases" / f"{n}.skops")
            columns = None if spec["columns"] is None else list(spec["columns"])
            if spec.get("kind", "linear") == "forest":
                model.bases_[n] = ForestBase(spec["name"], spec["modality"], transformer,
                                             load_trusted(root / "bases" / f"{n}.forest.skops"),
                                             float(spec["centre"]), columns)
            else:
                model.bases_[n] = LinearBase(
                    spec["name"], spec["modality"], transformer, np.asarray(spec["coef"], dtype=np.float64),
                    float(spec["intercept"]), float(spec["centre"]), columns, float(spec["sign"]))
        if (root / NETWORK / "config.json").is_file():
            model.network_model_ = FusedSurvivalModel.load(root / NETWORK)
            model.preprocessors_ = model.network_model_.preprocessors_
            model.network_scale_ = float(cfg.get("network_scale", 1.0))  # saved before it existed: unscaled
        model.train_median_risk_ = float(cfg["train_median_risk"])
        if cfg["baseline_times"]:
            model.baseline_times_ = np.asarray(cfg["baseline_times"], dtype=np.float64)
            model.baseline_cumhaz_ = np.asarray(cfg["baseline_cumhaz"], dtype=np.float64)
        model.feature_manifest_ = cfg["feature_manifest"]
        model.modalities_ = list(model.feature_manifest_)
        return model

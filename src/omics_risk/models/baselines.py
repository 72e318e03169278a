"""The baselines every training run reports next to the fused model, on the same folds.

Peers find a clinical-only Cox model hard to beat (MultiSurv: clinical Cox C = 0.796 against 0.787 for all six
modalities; SurvBoard: elastic-net Cox and forests match deep models), so each run fits:

- :class:`~omics_risk.models.clinical_cox.ClinicalCox` (``clinical_cox``): penalised lifelines ``CoxPHFitter`` on
  the encoded clinical table;
- :class:`~omics_risk.models.reference.ClinicalReference` (``reference_<column>``, when ``clinical_reference`` names
  a clinical column, e.g. stage): a one-covariate Cox model on that column alone, the bar any model must clear;
- :class:`~omics_risk.models.coxnet.ModalityCoxnet` (``coxnet_<modality>``): scikit-survival elastic-net Cox on one
  modality, alpha chosen by inner cross-validated C-index on the training fold;
- :class:`~omics_risk.models.rsf.ModalityRSF` (``rsf_<modality>``): scikit-survival random survival forest on one
  modality;
- ``deepprog`` (:mod:`omics_risk.models.deepprog`) and ``late_fusion`` (:mod:`omics_risk.models.stacking`);

built together by :func:`make_baselines`. All follow :class:`~omics_risk.models.base.SurvivalModel`: every
preprocessing step (see :mod:`omics_risk.models.tabular`) is fitted inside ``fit`` on the training patients
that have the modality, and a patient lacking it scores the training median risk.

Binary endpoints (``data.label``, 1 = response): the same classes switch to penalised logistic regression /
random forest classification, expose ``predict_response`` = P(response), and ``predict_risk`` = 1 - P(response)
so that higher = worse everywhere. Fit times are kept in ``fit_seconds_``. This module holds the defaults and the
factory; the classes live in their own modules and are re-exported here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from omics_risk.models.base import SurvivalModel
from omics_risk.models.clinical_cox import ClinicalCox
from omics_risk.models.coxnet import ModalityCoxnet
from omics_risk.models.deepprog import DeepProgStyle
from omics_risk.models.per_modality import MIN_TRAIN
from omics_risk.models.reference import REFERENCE_PREFIX, ClinicalReference, reference_name
from omics_risk.models.rsf import ModalityRSF
from omics_risk.models.stacking import LateFusionStacker
from omics_risk.models.tabular import CLINICAL

__all__ = [
    "BASELINE_DEFAULTS",
    "LATE_FUSION_BASE_DEFAULTS",
    "MIN_TRAIN",
    "ClinicalCox",
    "ClinicalReference",
    "ModalityCoxnet",
    "ModalityRSF",
    "make_baselines",
]


# ----------------------------------------------------------------------------------------------- factory
#: Defaults of :func:`make_baselines`, sized for 5-fold CV of ~300 patients on 2 CPU cores (override any key).
BASELINE_DEFAULTS: dict[str, Any] = {
    "include": None,  # names or families to keep, e.g. [clinical_cox, coxnet, late_fusion]; None = all
    "exclude": [],
    "seed": 0,
    "n_jobs": 1,
    "clinical_types": None,
    "clinical_reference": None,  # a clinical column (e.g. stage) fitted alone as reference_<column>; None = none
    "preprocessing": {},  # modality -> auto | standard | metabolomics | clinical
    "clinical_cox": {"penalizer": 0.1, "l1_ratio": 0.0},
    # 5 inner folds: with 3, alpha was tuned on 2/3 of the fold and lost to scikit-survival's own CV (BENCHMARKS.md)
    "coxnet": {"l1_ratio": 0.5, "n_alphas": 30, "cv_folds": 5, "max_features": None, "one_se": False},
    "rsf": {"n_estimators": 100, "min_samples_leaf": 10, "max_features": "sqrt", "screen_features": None},
    "deepprog": {"latent_dim": 8, "epochs": 30, "batch_size": 64},
    "late_fusion": {"inner_folds": 5, "base": "coxnet", "base_settings": {}, "meta_penalizer": 0.1},
}

#: Leaner settings of the stacker's per-modality base models (fitted ``inner_folds + 1`` times per fold), merged
#: over the family's settings above and under ``late_fusion.base_settings``.
LATE_FUSION_BASE_DEFAULTS: dict[str, dict[str, Any]] = {
    "coxnet": {"n_alphas": 20, "max_features": 50, "cv_folds": 3},
    "rsf": {"n_estimators": 50},
}


def _plain(obj: Any) -> Any:
    """Hydra DictConfig / ListConfig -> plain dicts and lists (everything else unchanged)."""
    if isinstance(obj, DictConfig | ListConfig):
        return OmegaConf.to_container(obj, resolve=True)
    return obj


def _merge(defaults: dict[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        if key not in defaults:
            raise KeyError(f"unknown baseline setting '{key}' (known: {', '.join(defaults)})")
        if isinstance(out[key], dict) and isinstance(value, Mapping):
            out[key] = {**out[key], **dict(value)}
        else:
            out[key] = value
    return out


def _wanted(name: str, include: Sequence[str] | None, exclude: Sequence[str]) -> bool:
    family = name.split("_", 1)[0] if name.startswith(("coxnet_", "rsf_", REFERENCE_PREFIX)) else name
    if name in exclude or family in exclude:
        return False
    return include is None or name in include or family in include


def make_baselines(
    modalities: Sequence[str], task: str = "survival", settings: Mapping[str, Any] | None = None
) -> dict[str, SurvivalModel]:
    """The standard baselines of a run, unfitted, keyed by name.

    ``clinical_cox``; ``reference_<column>`` (family ``reference``) when ``settings["clinical_reference"]`` names
    a clinical column; ``coxnet_<m>`` and ``rsf_<m>`` for ``clinical`` and every modality in ``modalities``;
    ``deepprog`` over the omics modalities; ``late_fusion`` stacking one base model per modality (incl.
    clinical, through ClinicalCox). ``settings`` overrides :data:`BASELINE_DEFAULTS` key by key (a nested dict
    per family is merged), e.g. ``{"rsf": {"n_estimators": 50}, "include": ["clinical_cox", "coxnet"]}``.
    ``task`` is ``survival`` or ``binary``: every model checks the endpoint it is fitted on against it.
    """
    if task not in ("survival", "binary"):
        raise ValueError(f"task must be 'survival' or 'binary', got {task!r}")
    s = _merge(BASELINE_DEFAULTS, _plain(settings) or {})
    include, exclude = s["include"], list(s["exclude"] or [])
    seed, n_jobs, types = int(s["seed"]), s["n_jobs"], s["clinical_types"]
    omics = [m for m in dict.fromkeys(modalities) if m != CLINICAL]
    tables = [CLINICAL, *omics]
    prep = dict(s["preprocessing"] or {})
    common = {"task": task, "random_state": seed}

    models: dict[str, SurvivalModel] = {}
    models["clinical_cox"] = ClinicalCox(**s["clinical_cox"], clinical_types=types, **common)
    if (column := s["clinical_reference"]) is not None:
        models[reference_name(str(column))] = ClinicalReference(str(column), clinical_types=types, **common)
    for m in tables:
        models[f"coxnet_{m}"] = ModalityCoxnet(
            m, **s["coxnet"], preprocessing=prep.get(m, "auto"), clinical_types=types, **common
        )
    for m in tables:
        models[f"rsf_{m}"] = ModalityRSF(
            m, **{"n_jobs": n_jobs, **s["rsf"]}, preprocessing=prep.get(m, "auto"), clinical_types=types, **common
        )
    if omics:
        models["deepprog"] = DeepProgStyle(omics, **s["deepprog"], preprocessing=prep, task=task, seed=seed)
    lf = dict(s["late_fusion"])
    family, base_settings = lf.pop("base", "coxnet"), dict(lf.pop("base_settings", {}) or {})
    if family not in ("coxnet", "rsf"):
        raise ValueError(f"late_fusion.base must be 'coxnet' or 'rsf', got {family!r}")
    base: dict[str, SurvivalModel] = {CLINICAL: ClinicalCox(**s["clinical_cox"], clinical_types=types, **common)}
    for m in omics:
        kw = {**s[family], **LATE_FUSION_BASE_DEFAULTS[family], **base_settings}
        if family == "coxnet":
            base[m] = ModalityCoxnet(m, **kw, preprocessing=prep.get(m, "auto"), clinical_types=types, **common)
        else:
            base[m] = ModalityRSF(
                m, **{"n_jobs": n_jobs, **kw}, preprocessing=prep.get(m, "auto"), clinical_types=types, **common
            )
    models["late_fusion"] = LateFusionStacker(base, **lf, task=task, seed=seed)
    return {name: model for name, model in models.items() if _wanted(name, include, exclude)}

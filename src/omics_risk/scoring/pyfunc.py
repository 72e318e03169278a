"""Any omics-risk model as an MLflow pyfunc: log, register with an alias, load, and score flat frames in batch.

The logged model holds the model directory written by the model's own ``save(directory)`` (its ``config.json``
names the class and holds the feature manifest; weights load with ``torch.load(..., weights_only=True)``), a
``scoring.json`` with the default horizons, and the ``omics_risk`` package itself (``code_paths``), so scoring
needs the pinned requirements and nothing else.

:class:`OmicsRiskPyfunc` keeps no state when pickled: MLflow pickles the instance at logging time, so everything
is rebuilt in ``load_context`` from the artifacts. The class named in ``config.json`` is imported only if it lives
under one of :data:`ALLOWED_CLASS_PREFIXES` (``omics_risk.``) and is a
:class:`~omics_risk.models.base.SurvivalModel` defined there: a tampered model directory cannot make the scorer
import or call arbitrary code (``os.system``) through this path.

Batch scoring::

    model = load_scoring_model("models:/omics_risk@champion")
    scores = model.predict(frame)                       # frame: omics_risk.scoring.frames.to_frame(data)
    scores = model.predict(frame, params={"horizons": [365.0, 1095.0]})

    udf = mlflow.pyfunc.spark_udf(spark, "models:/omics_risk@champion",
                                  result_type="patient_id string, risk_score double, surv_1095d double")
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema
from tqdm.auto import tqdm

from omics_risk.features.clinical import ClinicalEncoder
from omics_risk.models.base import SurvivalModel
from omics_risk.scoring.frames import CLINICAL, ID_COLUMN, FeatureManifest, from_frame

__all__ = [
    "ALLOWED_CLASS_PREFIXES",
    "DEFAULT_HORIZONS",
    "SCORING_PACKAGES",
    "OmicsRiskPyfunc",
    "UntrustedModelClassError",
    "input_schema",
    "load_saved_model",
    "load_scoring_model",
    "log_model",
    "model_manifest",
    "pinned_requirements",
    "privacy_safe_example",
    "resolve_model_class",
    "score",
]

#: Only classes defined in modules under these prefixes are imported when a saved model is loaded.
ALLOWED_CLASS_PREFIXES: tuple[str, ...] = ("omics_risk.",)
DEFAULT_HORIZONS: tuple[float, ...] = (365.0, 730.0, 1095.0)
#: Distributions pinned (to the running versions) in the logged model's requirements.
SCORING_PACKAGES: tuple[str, ...] = (
    "torch",
    "monai",
    "torchsurv",
    "scikit-learn",
    "scikit-survival",
    "lifelines",
    "skops",
    "pandas",
    "numpy",
    "scipy",
    "pyyaml",
    "mlflow",
)
MODEL_DIR = "model_dir"
SCORING_FILE = "scoring.json"
CONFIG_FILE = "config.json"
_QUALNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_CODE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc", ".*")


class UntrustedModelClassError(ValueError):
    """``config.json`` names a class outside the allow-list (or not a SurvivalModel)."""


# --- loading a saved model directory ------------------------------------------------------------------------------
def resolve_model_class(qualname: Any) -> type[SurvivalModel]:
    """Import the SurvivalModel class ``qualname`` (``omics_risk.models.fused.FusedSurvivalModel``), allow-list first.

    The name is checked before anything is imported: it must be a dotted identifier under
    :data:`ALLOWED_CLASS_PREFIXES`; the object found must be a class defined in such a module and a subclass of
    :class:`~omics_risk.models.base.SurvivalModel` with a ``load`` classmethod.
    """
    if not isinstance(qualname, str) or not _QUALNAME.match(qualname):
        raise UntrustedModelClassError(f"model class {qualname!r} is not a dotted class name")
    if not qualname.startswith(ALLOWED_CLASS_PREFIXES):
        raise UntrustedModelClassError(
            f"model class {qualname!r} is not under {', '.join(ALLOWED_CLASS_PREFIXES)}: refusing to import it "
            "(only omics-risk model classes can be loaded from a model directory)"
        )
    module_name, _, attr = qualname.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UntrustedModelClassError(f"model class {qualname!r}: cannot import {module_name} ({err})") from err
    cls = getattr(module, attr, None)
    if not (
        isinstance(cls, type)
        and cls.__module__.startswith(ALLOWED_CLASS_PREFIXES)
        and issubclass(cls, SurvivalModel)
        and callable(getattr(cls, "load", None))
    ):
        raise UntrustedModelClassError(
            f"{qualname!r} is not an omics-risk SurvivalModel class with a load() method: refusing to use it"
        )
    return cls


def load_saved_model(directory: str | Path) -> SurvivalModel:
    """Load a model directory written by ``model.save(directory)``: class from ``config.json``, then ``cls.load``."""
    directory = Path(directory)
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} is missing: not a model directory written by model.save()")
    cfg = json.loads(cfg_path.read_text())
    if "class" not in cfg:
        raise ValueError(f"{cfg_path} has no 'class' key naming the model class")
    return resolve_model_class(cfg["class"]).load(directory)


def _clinical_types_of(model: Any) -> dict[str, Any]:
    """Clinical column types a fitted model encodes with (its ClinicalEncoder's, else its settings')."""
    pp = (
        getattr(model, "preprocessors_", {}).get(CLINICAL)
        if isinstance(getattr(model, "preprocessors_", None), Mapping)
        else None
    )
    for _, step in getattr(getattr(pp, "pipeline_", None), "steps", []):
        if isinstance(step, ClinicalEncoder) and step.types:
            return dict(step.types)
    return dict(getattr(model, "clinical_types", None) or {})


def model_manifest(model: Any, directory: str | Path | None = None) -> FeatureManifest:
    """The model's :class:`FeatureManifest`.

    From its ``feature_manifest`` attribute (a FeatureManifest or its dict), else the fused model's
    per-modality ``feature_manifest_`` (clinical kinds from the model's clinical encoder), else ``config.json``.
    """
    types = _clinical_types_of(model)
    for attr in ("feature_manifest", "feature_manifest_"):
        found = getattr(model, attr, None)
        if isinstance(found, FeatureManifest):
            return found
        if isinstance(found, Mapping):
            return FeatureManifest.from_dict(found, types)
    if directory is not None and (Path(directory) / CONFIG_FILE).is_file():
        cfg = json.loads((Path(directory) / CONFIG_FILE).read_text())
        if "feature_manifest" in cfg:
            return FeatureManifest.from_dict(cfg["feature_manifest"], types)
    raise ValueError(
        f"{type(model).__name__} has no feature manifest: set `feature_manifest` (a FeatureManifest) when fitting, "
        "or store it under 'feature_manifest' in config.json"
    )


def _supports(model: Any, method: str, flag: str) -> bool:
    """Whether the model really implements an optional SurvivalModel method (``flag`` attribute wins)."""
    declared = getattr(model, flag, None)
    if declared is not None:
        return bool(declared)
    impl = getattr(type(model), method, None)
    return impl is not None and impl is not getattr(SurvivalModel, method)


# --- scoring ------------------------------------------------------------------------------------------------------
def _horizon_name(h: float) -> str:
    return f"surv_{int(h)}d" if float(h).is_integer() else f"surv_{h:g}d"


def score(
    model: SurvivalModel,
    frame: pd.DataFrame,
    *,
    manifest: FeatureManifest | None = None,
    horizons: Sequence[float] | None = DEFAULT_HORIZONS,
    chunk_size: int = 1024,
    progress: bool = False,
) -> pd.DataFrame:
    """Score a flat frame in chunks under ``torch.inference_mode()``: the pyfunc's output, without MLflow.

    Columns: ``patient_id``, ``risk_score`` (higher = riskier), ``surv_<h>d`` per horizon (days) when the model
    predicts survival, ``response_prob`` when it has a response head, ``modalities_used`` (``clinical,cfdna,ct``).
    """
    manifest = manifest or model_manifest(model)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    data = from_frame(frame, manifest)
    n = len(data)
    hz = np.asarray([float(h) for h in (horizons or ())], dtype=float)
    if hz.size and (not np.isfinite(hz).all() or (hz <= 0).any()):
        raise ValueError(f"horizons must be positive days, got {hz.tolist()}")
    survival = _supports(model, "predict_survival", "has_survival_head") and hz.size > 0
    response = _supports(model, "predict_response", "has_response_head")
    risk = np.empty(n)
    surv = np.empty((n, hz.size))
    resp = np.empty(n)
    starts = range(0, n, chunk_size)
    with torch.inference_mode():
        for start in tqdm(starts, desc="scoring", unit="chunk", disable=not progress or len(starts) < 2):
            idx = np.arange(start, min(start + chunk_size, n))
            part = data.subset(idx)
            risk[idx] = np.asarray(model.predict_risk(part), dtype=float)
            try:  # optional outputs: a model may implement the method yet lack the head (NotImplementedError)
                if survival:
                    surv[idx] = np.asarray(model.predict_survival(part, hz), dtype=float).reshape(len(idx), hz.size)
            except NotImplementedError:
                if start:
                    raise
                survival = False
            try:
                if response:
                    resp[idx] = np.asarray(model.predict_response(part), dtype=float)
            except NotImplementedError:
                if start:
                    raise
                response = False
    if not np.isfinite(risk).all():
        raise RuntimeError(
            f"{type(model).__name__} returned {int((~np.isfinite(risk)).sum())} non-finite risk score(s); "
            "the SurvivalModel contract requires finite scores (the training median when inputs are missing)"
        )
    out = pd.DataFrame({ID_COLUMN: data.patients.astype(str).to_numpy(), "risk_score": risk})
    for j, h in enumerate(hz if survival else ()):
        out[_horizon_name(h)] = surv[:, j]
    if response:
        out["response_prob"] = resp
    used = [CLINICAL, *manifest.modalities]
    present = data.present.reindex(columns=used, fill_value=False).to_numpy(dtype=bool)
    names = np.asarray(used, dtype=object)
    out["modalities_used"] = [",".join(names[row]) for row in present]
    return out


class OmicsRiskPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow wrapper around a saved omics-risk model; stateless until :meth:`load_context`.

    Artifacts: ``model_dir`` (the model's ``save()`` output) and ``scoring`` (``scoring.json``: default horizons
    and chunk size). ``predict`` params: ``horizons`` (list of days) and ``chunk_size``.
    """

    def __getstate__(self) -> dict[str, Any]:
        return {}  # nothing but the class reference is pickled, whatever was loaded

    def __setstate__(self, state: dict[str, Any]) -> None:
        pass

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        model_dir = Path(context.artifacts[MODEL_DIR])
        settings = json.loads(Path(context.artifacts["scoring"]).read_text())
        self._model = load_saved_model(model_dir)
        self._manifest = model_manifest(self._model, model_dir)
        self._horizons = tuple(float(h) for h in settings.get("horizons", DEFAULT_HORIZONS))
        self._chunk_size = int(settings.get("chunk_size", 1024))

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if not hasattr(self, "_model"):
            raise RuntimeError("OmicsRiskPyfunc.predict before load_context: load it with load_scoring_model(uri)")
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        params = params or {}
        horizons = params.get("horizons")
        chunk = params.get("chunk_size")
        return score(
            self._model,
            model_input,
            manifest=self._manifest,
            horizons=self._horizons if horizons is None else [float(h) for h in np.atleast_1d(horizons)],
            chunk_size=self._chunk_size if chunk is None else int(chunk),
        )


# --- logging and registry -----------------------------------------------------------------------------------------
def input_schema(manifest: FeatureManifest) -> Schema:
    """Column schema of the flat frame: ``patient_id`` and clinical columns required, modality columns optional.

    A modality may then be left out as a whole (a cohort without CT); :func:`from_frame` rejects a partial one.
    """
    specs = [ColSpec("string", ID_COLUMN)]
    specs += [ColSpec(kind, f"{CLINICAL}/{c}") for c, kind in manifest.clinical.items()]
    for m in manifest.modalities:
        specs += [ColSpec("double", col, required=False) for col in manifest.modality_columns(m)]
    return Schema(specs)


def pinned_requirements(packages: Sequence[str] = SCORING_PACKAGES) -> list[str]:
    """``name==version`` of the running environment for each installed package (local tags like ``+cpu`` dropped).

    Pins without the local tag resolve on PyPI; a CPU-only scoring host installs torch from the PyTorch CPU index.
    """
    out = []
    for name in packages:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            warnings.warn(f"{name} is not installed; it is left out of the model's requirements", stacklevel=2)
            continue
        out.append(f"{name}=={version.split('+')[0]}")
    return out


def privacy_safe_example(frame: pd.DataFrame, manifest: FeatureManifest, n: int = 3) -> pd.DataFrame:
    """A few example rows that belong to no patient, for the logged model's ``input_example``.

    The example is stored in the model artifacts, so it must not carry a patient's data: ids are ``example-1``,
    ..., values are column medians (numbers) or the most frequent value (text) over ``frame``, and each row copies
    only the modality-presence pattern of one of the first ``n`` patients (so optional columns are exercised).
    """
    known = set(manifest.columns())
    data = from_frame(frame[[c for c in frame.columns if c in known]], manifest)  # other columns are expected here
    n = max(1, min(n, len(data)))
    rows: dict[str, Any] = {ID_COLUMN: [f"example-{i + 1}" for i in range(n)]}
    for col, kind in manifest.clinical.items():
        s = data.clinical[col]
        if kind == "double":
            value = float(s.median()) if s.notna().any() else np.nan
        else:
            value = s.mode(dropna=True).iloc[0] if s.notna().any() else None
        rows[f"{CLINICAL}/{col}"] = [value] * n
    for m, feats in manifest.modalities.items():
        block = data.modalities[m]
        medians = block.median(axis=0).to_numpy()
        pattern = data.present[m].to_numpy()[:n]
        values = np.where(pattern[:, None], medians[None, :], np.nan)
        for j, f in enumerate(feats):
            rows[f"{m}/{f}"] = values[:, j]
    return pd.DataFrame(rows)


def _package_copy(dest: Path) -> Path:
    """A clean copy of the installed ``omics_risk`` package (no caches) for ``code_paths``."""
    import omics_risk

    src = Path(omics_risk.__file__).parent
    target = dest / "omics_risk"
    shutil.copytree(src, target, ignore=_CODE_IGNORE)
    return target


def log_model(
    model: SurvivalModel,
    *,
    name: str = "model",
    horizons: Sequence[float] = DEFAULT_HORIZONS,
    input_example_frame: pd.DataFrame,
    registered_model_name: str | None = None,
    alias: str | None = None,
    chunk_size: int = 1024,
    n_example_rows: int = 3,
    pip_requirements: Sequence[str] | None = None,
    extra_pip_requirements: Sequence[str] = (),
) -> ModelInfo:
    """Log ``model`` as an MLflow pyfunc (to the active run if any), optionally registered under an alias.

    Args:
        model: a fitted SurvivalModel with ``save(directory)`` / ``load(directory)`` and a feature manifest.
        name: the logged model's name within the run.
        horizons: default survival horizons in days (``params={"horizons": [...]}`` overrides them at predict time).
        input_example_frame: flat frame (:func:`~omics_risk.scoring.frames.to_frame`) of training patients; only
            column medians and presence patterns reach the artifacts (:func:`privacy_safe_example`).
        registered_model_name: register the logged model under this name (a new version).
        alias: point this registry alias (``challenger``, ``champion``) at the new version. Aliases, not stages.
        pip_requirements: defaults to :func:`pinned_requirements`.

    Returns:
        The ``ModelInfo``; ``registered_model_version`` is set when registered.
    """
    if alias is not None and registered_model_name is None:
        raise ValueError("an alias needs registered_model_name")
    manifest = model_manifest(model)
    if manifest.images:
        warnings.warn(
            f"{type(model).__name__} reads {', '.join(manifest.images)} from images, which the flat scoring frame "
            "cannot carry: the logged pyfunc scores every patient as lacking them",
            stacklevel=2,
        )
    with tempfile.TemporaryDirectory(prefix="omics_risk_pyfunc_") as tmp:
        tmp_path = Path(tmp)
        model_dir = tmp_path / MODEL_DIR
        model.save(model_dir)
        cfg_path = model_dir / CONFIG_FILE
        if not cfg_path.is_file() or "class" not in json.loads(cfg_path.read_text()):
            raise ValueError(f"{type(model).__name__}.save() must write config.json with a 'class' key")
        resolve_model_class(json.loads(cfg_path.read_text())["class"])  # fail now, not at scoring time
        settings = {"horizons": [float(h) for h in horizons], "chunk_size": int(chunk_size)}
        (tmp_path / SCORING_FILE).write_text(json.dumps(settings, indent=1))
        example = privacy_safe_example(input_example_frame, manifest, n_example_rows)
        predictions = score(model, example, manifest=manifest, horizons=horizons, chunk_size=chunk_size)
        inferred = infer_signature(example, predictions, params=settings)
        signature = ModelSignature(inputs=input_schema(manifest), outputs=inferred.outputs, params=inferred.params)
        reqs = list(pip_requirements) if pip_requirements is not None else pinned_requirements()
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=OmicsRiskPyfunc(),
            artifacts={MODEL_DIR: str(model_dir), "scoring": str(tmp_path / SCORING_FILE)},
            signature=signature,
            input_example=example,
            pip_requirements=[*reqs, *extra_pip_requirements],
            code_paths=[str(_package_copy(tmp_path / "code"))],
            registered_model_name=registered_model_name,
        )
    if alias is not None:
        version = info.registered_model_version
        if version is None:  # registration is asynchronous on some backends; look the version up
            versions = MlflowClient().search_model_versions(f"name = '{registered_model_name}'")
            version = max(int(v.version) for v in versions if v.run_id == info.run_id)
        MlflowClient().set_registered_model_alias(registered_model_name, alias, str(version))
    return info


def load_scoring_model(uri: str) -> mlflow.pyfunc.PyFuncModel:
    """Load a logged omics-risk model: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/model``."""
    loaded = mlflow.pyfunc.load_model(uri)
    inner = loaded.unwrap_python_model() if hasattr(loaded, "unwrap_python_model") else None
    if not isinstance(inner, OmicsRiskPyfunc):
        raise TypeError(f"{uri} is not an omics-risk scoring model (python model: {type(inner).__name__})")
    return loaded

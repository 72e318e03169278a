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

Scoring a frame (:func:`~omics_risk.scoring.predict.score`) and the ``scoring.json`` settings
(:mod:`omics_risk.scoring.settings`) live in their own modules and are re-exported here, where users import them.

Batch scoring::

    model = load_scoring_model("models:/omics_risk@champion")
    frame = to_frame(data, FeatureManifest.of(model))   # omics_risk.scoring.frames: the model's columns and types
    scores = model.predict(frame)
    scores = model.predict(frame, params={"horizons": [365.0, 1095.0]})

    udf = mlflow.pyfunc.spark_udf(spark, "models:/omics_risk@champion",
                                  result_type="patient_id string, risk_score double, surv_1095d double")
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

import omics_risk
from omics_risk.data.timing import PredictionTime
from omics_risk.models.base import SurvivalModel
from omics_risk.progress import quiet_mlflow_bars
from omics_risk.scoring.frames import (
    CLINICAL,
    CONFIG_FILE,
    ID_COLUMN,
    RISK_GROUPS,
    FeatureManifest,
    from_frame,
    model_manifest,
)
from omics_risk.scoring.predict import DEFAULT_HORIZONS, score
from omics_risk.scoring.predict import horizon_name as _horizon_name  # noqa: F401 - workflows/scoring.py imports it
from omics_risk.scoring.settings import (
    SCORING_FORMAT,
    cohort_profile,
    extraction_spec,
    risk_cutoffs,
    scoring_settings,
)

__all__ = [
    "ALLOWED_CLASS_PREFIXES",
    "DEFAULT_HORIZONS",
    "RISK_GROUPS",
    "SCORING_FORMAT",
    "SCORING_PACKAGES",
    "OmicsRiskPyfunc",
    "UntrustedModelClassError",
    "cohort_profile",
    "extraction_spec",
    "input_schema",
    "load_saved_model",
    "load_scoring_model",
    "log_model",
    "model_manifest",
    "pinned_requirements",
    "privacy_safe_example",
    "resolve_model_class",
    "risk_cutoffs",
    "score",
    "scoring_settings",
]

#: Only classes defined in modules under these prefixes are imported when a saved model is loaded.
ALLOWED_CLASS_PREFIXES: tuple[str, ...] = ("omics_risk.",)
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
_QUALNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_CODE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc", ".*")


log = logging.getLogger(__name__)
#: How MLflow's notice about pickling ``python_model`` begins (mlflow.pyfunc.save_model logs it at WARNING).
_CLOUDPICKLE_NOTICE = "Passing a Python object as `python_model`"
_CLOUDPICKLE_MEANING = (
    "MLflow stores the stateless wrapper OmicsRiskPyfunc as python_model.pkl (CloudPickle); `omics-risk score` never "
    "unpickles it: it checks that file and rebuilds the model from JSON and weights (README: Scoring new cohorts)")


class _ExplainPickledWrapper(logging.Filter):
    """Replace MLflow's generic CloudPickle caution with what it means for an omics-risk model, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(_CLOUDPICKLE_NOTICE):
            log.info(_CLOUDPICKLE_MEANING)
            return False
        return True


@contextmanager
def _pickled_wrapper_explained() -> Iterator[None]:
    notice_from = logging.getLogger("mlflow.pyfunc")
    explain = _ExplainPickledWrapper()
    notice_from.addFilter(explain)
    try:
        yield
    finally:
        notice_from.removeFilter(explain)


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


class OmicsRiskPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow wrapper around a saved omics-risk model; stateless until :meth:`load_context`.

    Artifacts: ``model_dir`` (the model's ``save()`` output) and ``scoring`` (``scoring.json``: default horizons
    and chunk size, plus what batch scoring uses, see :func:`scoring_settings`). ``predict`` params: ``horizons``
    (list of days) and ``chunk_size``.
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
        self._settings = settings

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

    A modality may then be left out as a whole (a cohort without CT) or in part (features a cohort's QC removed,
    imputed with a warning by :func:`from_frame`). Numbers are ``double``: MLflow's schema enforcement refuses an
    int64 column there unless all its values are 0 or 1, so :func:`~omics_risk.scoring.frames.to_frame` emits
    float64. ``FeatureManifest.from_schema`` reads this schema back.
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
    training_risk: np.ndarray | None = None,
    feature_store: str | Path | None = None,
    training_cohort: Any = None,
    ct_config: Any = None,
    prediction_time: PredictionTime | None = None,
    longitudinal: Mapping[str, Any] | None = None,
    derived_inputs: Mapping[str, str] | None = None,
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
        training_risk: the in-sample risks of the training patients (default: scored from
            ``input_example_frame``; required for CT-image models, whose frame lacks the images) for the risk-group
            cut-offs.
        feature_store: the training cohort's feature store; its extractor settings ship with the model so that
            ``omics-risk score`` extracts a new cohort the same way (and refuses a cohort extracted otherwise).
        training_cohort: the training cohort (directory or Cohort): time unit, clinical types and sample days,
            against which a scored cohort is checked.
        ct_config: CT preprocessing (:class:`~omics_risk.features.ct.CTConfig` or mapping) of a CT-image model.
        prediction_time / longitudinal / derived_inputs: the training run's ``task.prediction_time``,
            ``task.longitudinal`` and the inputs derived from another modality's samples (``{"ctdna_dynamics":
            "ctdna"}``), so that ``omics-risk score`` and external validation build inputs at the same time
            (:func:`~omics_risk.scoring.settings.scoring_settings`); None: every sample, as before.

    ``input_example_frame`` should hold every training patient: the risk cut-offs (median, tertiles) and the training
    feature ranges (1st / 99th percentiles, for distribution-shift warnings) are computed from it
    (:func:`scoring_settings`); the MLflow input example keeps only a few synthetic rows.

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
        full = scoring_settings(model, input_example_frame, manifest=manifest, horizons=horizons,
                                chunk_size=chunk_size, training_risk=training_risk, feature_store=feature_store,
                                training_cohort=training_cohort, ct_config=ct_config,
                                prediction_time=prediction_time, longitudinal=longitudinal,
                                derived_inputs=derived_inputs)
        (tmp_path / SCORING_FILE).write_text(json.dumps(full, indent=1))
        example = privacy_safe_example(input_example_frame, manifest, n_example_rows)
        predictions = score(model, example, manifest=manifest, horizons=horizons, chunk_size=chunk_size)
        inferred = infer_signature(example, predictions, params=settings)
        signature = ModelSignature(inputs=input_schema(manifest), outputs=inferred.outputs, params=inferred.params)
        reqs = list(pip_requirements) if pip_requirements is not None else pinned_requirements()
        with _pickled_wrapper_explained():
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
    quiet_mlflow_bars()
    loaded = mlflow.pyfunc.load_model(uri)
    inner = loaded.unwrap_python_model() if hasattr(loaded, "unwrap_python_model") else None
    if not isinstance(inner, OmicsRiskPyfunc):
        raise TypeError(f"{uri} is not an omics-risk scoring model (python model: {type(inner).__name__})")
    return loaded

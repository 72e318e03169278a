"""Load a logged omics-risk model for batch use without unpickling anything: the logged-model layer's loader.

``omics-risk score``, ``evaluate.py mode=external`` and Spark scoring all start here: the logged model's files are
downloaded from the registry (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN/model`` or a local
directory); ``MLmodel`` is read as YAML, ``scoring.json`` and the model's ``config.json`` as JSON, the class is
resolved through the allow-list of :func:`~omics_risk.scoring.pyfunc.resolve_model_class`, weights load with
``torch.load(weights_only=True)`` and preprocessors through skops' trusted types. MLflow's cloudpickled wrapper
(``python_model.pkl``) is never loaded here; its opcodes are only inspected, statically (:func:`pickle_globals`).
The extractor settings a model ships are turned into an ``extract_cohort`` config through an allow-list too.

mlflow, torch and sklearn are imported inside the functions that need them: the CLI checks a scoring run's inputs
(this module included) before any of them is loaded.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import pickle
import pickletools
import re
import tempfile
import urllib.parse
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omics_risk.data.timing import PredictionTime
from omics_risk.features.base import Extractor
from omics_risk.features.extract import default_extract_config
from omics_risk.progress import mlflow_bars_off, quiet_mlflow_bars
from omics_risk.scoring.frames import CLINICAL, CONFIG_FILE, FeatureManifest, model_manifest

__all__ = [
    "ALLOWED_EXTRACTOR_PREFIXES",
    "DEFAULT_EXTRACTION_NOTE",
    "BatchModel",
    "ModelLoadError",
    "ModelNotFoundError",
    "RegistryNotFoundError",
    "UnverifiedWrapperError",
    "check_model_uri",
    "extraction_config",
    "extraction_config_or_defaults",
    "load_batch_model",
    "local_store_path",
    "pickle_globals",
    "spark_result_type",
]

#: Extractor classes a model's ``scoring.json`` may name (they are instantiated to extract the new cohort).
ALLOWED_EXTRACTOR_PREFIXES: tuple[str, ...] = ("omics_risk.features.",)
#: Hydra keys that would make ``instantiate`` call something other than the named extractor.
_HYDRA_KEYS = frozenset({"_target_", "_args_", "_partial_", "_recursive_", "_convert_"})
#: The only global a genuine omics-risk ``python_model.pkl`` references.
_WRAPPER_GLOBAL = "omics_risk.scoring.pyfunc.OmicsRiskPyfunc"


class ModelLoadError(ValueError):
    """The model does not hold an omics-risk scoring model, or holds something our loader refuses."""


class ModelNotFoundError(ModelLoadError):
    """The model URI cannot be resolved (no such registered model, alias, version or run, or no such folder)."""


class RegistryNotFoundError(ModelNotFoundError):
    """A ``models:/`` or ``runs:/`` URI against a local tracking store that does not exist (no registry there).

    Raised before MLflow opens the store, because opening a SQLite URI creates an empty database at that path.
    """


class UnverifiedWrapperError(ModelLoadError):
    """The model's ``python_model.pkl`` references code other than omics-risk's wrapper: its files were changed."""


def _sha(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: Path, h: Any = None) -> Any:
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h


def pickle_globals(data: bytes) -> tuple[list[str], list[str]]:
    """Globals a pickle references and the object-building opcodes it uses, read statically (nothing executes)."""
    strings: list[Any] = []
    memo: dict[int, Any] = {}
    found: list[str] = []
    calls: list[str] = []
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
                    "STRING"):
            strings.append(arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = strings[-1] if strings else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = strings[-1] if strings else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            strings.append(memo.get(int(arg)))
        elif name == "GLOBAL":
            found.append(str(arg).replace(" ", "."))
        elif name == "STACK_GLOBAL":
            mod, attr = (strings[-2], strings[-1]) if len(strings) >= 2 else (None, None)
            found.append(f"{mod}.{attr}")
        elif name in ("REDUCE", "INST", "OBJ", "NEWOBJ_EX", "BUILD", "NEWOBJ", "EXT1", "EXT2", "EXT4"):
            calls.append(name)
    return found, calls


@dataclass
class BatchModel:
    """A logged omics-risk model loaded for batch scoring, without MLflow's pickled wrapper."""

    uri: str
    model: Any  # a SurvivalModel
    manifest: FeatureManifest
    settings: dict[str, Any]  # scoring.json
    identity: str  # content hash of the model directory and scoring.json (plus MLflow's model uuid)
    info: dict[str, Any] = field(default_factory=dict)  # MLmodel facts: run_id, model_uuid, wrapper check
    output_schema: list[tuple[str, str]] = field(default_factory=list)  # (name, type) of the pyfunc's output

    @classmethod
    def from_model(cls, model: Any, settings: Mapping[str, Any], uri: str = "<in-memory>") -> BatchModel:
        """A fitted in-memory model and its ``scoring.json`` settings (see ``pyfunc.scoring_settings``), for scoring
        without a registry (notebooks, tests). The identity hashes the model's saved files."""
        with tempfile.TemporaryDirectory(prefix="omics_risk_model_") as tmp:
            model.save(Path(tmp) / "m")
            h = hashlib.sha256()
            for f in sorted(p for p in (Path(tmp) / "m").rglob("*") if p.is_file()):
                h.update(f.name.encode())
                _file_digest(f, h)
        settings = json.loads(json.dumps(dict(settings), default=str))
        return cls(uri=uri, model=model, manifest=model_manifest(model), settings=settings,
                   identity=_sha(h.hexdigest(), settings)[:24], info={"class": type(model).__qualname__})

    @property
    def horizons(self) -> list[float]:
        from omics_risk.scoring.pyfunc import DEFAULT_HORIZONS  # lazy: pyfunc loads mlflow and torch

        return [float(h) for h in self.settings.get("horizons", DEFAULT_HORIZONS)]

    @property
    def tabular(self) -> list[str]:
        return list(self.manifest.modalities)

    @property
    def images(self) -> list[str]:
        return list(self.manifest.images)

    @property
    def needed(self) -> list[str]:
        """The inputs the model uses: ``clinical`` (when it has clinical columns), tabular and image modalities."""
        return ([CLINICAL] if self.manifest.clinical else []) + self.tabular + self.images

    @property
    def prediction_time(self) -> PredictionTime | None:
        """The prediction time the model was trained at (``scoring.json``'s ``prediction_time``); None for a model
        trained without one or logged before models recorded it: every sample is used, as before."""
        record = self.settings.get("prediction_time")
        return PredictionTime.from_config(record.get("config")) if record else None

    def longitudinal(self, modalities: Sequence[str] | None = None) -> dict[str, Any] | None:
        """The training run's ``task.longitudinal`` (None: no longitudinal inputs), for ``modalities`` only when
        given (those a cohort has: a derived input of a modality it lacks is absent, like the modality itself)."""
        node = self.settings.get("longitudinal") or {}
        kept = {m: q for m, q in node.items() if modalities is None or m in set(modalities)}
        return kept or None

    @property
    def derived(self) -> dict[str, str]:
        """Model inputs built from another modality's samples at the prediction time -> that modality
        (``{"ctdna_dynamics": "ctdna"}``)."""
        return dict(self.settings.get("derived_inputs") or {})

    @property
    def stored(self) -> list[str]:
        """The modalities extracted into the feature store for this model: its tabular modalities, with each
        derived input replaced by the modality it is built from."""
        derived = self.derived
        return list(dict.fromkeys(derived.get(m, m) for m in self.tabular))

    def timepoints(self, modality: str) -> list[str]:
        """The timepoints the model's columns (or its CT encoder) use for ``modality``."""
        if modality in self.manifest.modalities:
            seen: dict[str, None] = {}
            for c in self.manifest.modalities[modality]:
                if "__" in c:
                    seen[c.split("__", 1)[0]] = None
            return list(seen)
        fm = getattr(self.model, "feature_manifest_", None) or {}
        spec = fm.get(modality, {}) if isinstance(fm, Mapping) else {}
        return [str(t) for t in spec.get("timepoints", [])] or [str(t) for t in getattr(self.model, "ct_timepoints",
                                                                                         None) or []]


def _inside(root: Path, rel: str) -> Path:
    path = (root / rel).resolve()
    if root.resolve() not in (path, *path.parents):
        raise ModelLoadError(f"MLmodel names artifact {rel!r} outside the model directory: refusing it")
    return path


def local_store_path(store: str) -> Path | None:
    """The file or folder a local tracking / registry URI names (``sqlite:///x.db``, ``file:///mlruns``, a plain
    path); None for a server (``http://``, ``databricks``) or an in-memory database."""
    if store.startswith("sqlite:"):
        rest = store[len("sqlite:"):].split("?", 1)[0]
        if not rest.startswith("///") or rest[3:] in ("", ":memory:"):
            return None
        return Path(rest[3:]).expanduser()  # sqlite:////abs -> /abs; sqlite:///rel -> rel (from the cwd)
    parsed = urllib.parse.urlparse(store)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme == "":
        return Path(store).expanduser()
    return None


def check_model_uri(uri: str | Path) -> None:
    """Fail fast, before anything is downloaded or created, when ``uri`` cannot name a model.

    A local path must be a folder holding ``MLmodel``; a ``models:/`` or ``runs:/`` URI needs a registry, and a local
    one (SQLite file, file store) must exist: MLflow would otherwise create an empty ``mlflow.db`` and then report the
    model as missing. Raises :class:`ModelNotFoundError` / :class:`RegistryNotFoundError`.
    """
    text = str(uri)
    scheme = urllib.parse.urlparse(text).scheme
    if scheme in ("models", "runs"):
        import mlflow  # lazy: the registry URI is read only for a models:/ or runs:/ URI

        store = mlflow.get_registry_uri() if scheme == "models" else mlflow.get_tracking_uri()
        path = local_store_path(store)
        if path is not None and not path.exists():
            raise RegistryNotFoundError(f"cannot resolve model {text!r}: there is no MLflow registry at {path} "
                                        f"(tracking URI {store}); nothing was created there")
        return
    if scheme == "" or len(scheme) == 1:  # a local path (a drive letter on Windows)
        local = Path(text).expanduser()
        if not local.exists():
            raise ModelNotFoundError(f"cannot resolve model {text!r}: no such folder (give a model folder holding "
                                     "MLmodel, or a registry URI such as models:/NAME@ALIAS)")
        if not (local / "MLmodel").is_file():
            raise ModelNotFoundError(f"cannot resolve model {text!r}: {local} holds no MLmodel file, so it is not a "
                                     "logged MLflow model (give the folder that holds MLmodel)")


def load_batch_model(uri: str | Path, *, progress: bool = False, warn_unverified: bool = True) -> BatchModel:
    """Load a logged omics-risk model for batch scoring without unpickling anything (see the module docstring).

    ``uri``: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/model``, ``models:/m-<id>`` or a local
    directory holding ``MLmodel``. A ``python_model.pkl`` that references more than omics-risk's wrapper is recorded
    as ``info["wrapper_ok"] = False`` and warned about (``warn_unverified``; :func:`score_cohort` refuses it itself).
    """
    # lazy: mlflow, torch (pyfunc) and sklearn (preprocessing) load only once a model is loaded, not for input checks
    import mlflow
    from mlflow.exceptions import MlflowException  # lazy: mlflow, as above

    from omics_risk.models.preprocessing import UntrustedTypeError  # lazy: sklearn, as above
    from omics_risk.scoring.pyfunc import load_saved_model  # lazy: mlflow and torch, as above

    quiet_mlflow_bars()  # one artifact-download bar per file otherwise
    uri = str(uri)
    check_model_uri(uri)
    with tempfile.TemporaryDirectory(prefix="omics_risk_model_") as tmp:
        local = Path(uri)
        if not (local.is_dir() and (local / "MLmodel").is_file()):
            try:
                from mlflow.tracking.artifact_utils import _download_artifact_from_uri  # lazy: mlflow, as above

                # the resolver mlflow.pyfunc.load_model uses (runs:/ of logged models)
                with mlflow_bars_off(not progress):
                    local = Path(_download_artifact_from_uri(artifact_uri=uri, output_path=tmp))
            except MlflowException as exc:
                raise ModelNotFoundError(f"cannot resolve model {uri!r} (tracking URI {mlflow.get_tracking_uri()}): "
                                     f"{exc.message if hasattr(exc, 'message') else exc}") from exc
        mlmodel = local / "MLmodel"
        if not mlmodel.is_file():
            raise ModelLoadError(f"{uri} holds no MLmodel file: not a logged MLflow model")
        meta = yaml.safe_load(mlmodel.read_text()) or {}
        flavor = (meta.get("flavors") or {}).get("python_function") or {}
        artifacts = flavor.get("artifacts") or {}
        if flavor.get("loader_module") != "mlflow.pyfunc.model" or "model_dir" not in artifacts \
                or "scoring" not in artifacts:
            raise ModelLoadError(f"{uri} is not an omics-risk scoring model (its MLmodel has no python_function "
                                 "flavor with model_dir and scoring artifacts; log it with omics_risk.scoring.pyfunc)")
        model_dir = _inside(local, str(artifacts["model_dir"]["path"]))
        scoring_file = _inside(local, str(artifacts["scoring"]["path"]))
        settings = json.loads(scoring_file.read_text())
        if not isinstance(settings, dict):
            raise ModelLoadError(f"{scoring_file.name} of {uri} is not a JSON object")
        try:  # allow-listed class, JSON, weights_only, trusted skops types
            model = load_saved_model(model_dir)
        except pickle.UnpicklingError as exc:
            raise ModelLoadError(f"{uri}: refusing the model's weights: {exc}") from exc
        except UntrustedTypeError as exc:
            raise ModelLoadError(f"{uri}: refusing the model's preprocessing: {exc}") from exc
        manifest = model_manifest(model, model_dir)
        h = hashlib.sha256()
        for f in sorted(p for p in model_dir.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(model_dir)).encode())
            _file_digest(f, h)
        _file_digest(scoring_file, h)
        info: dict[str, Any] = {k: meta.get(k) for k in ("run_id", "model_uuid", "model_id", "mlflow_version",
                                                         "utc_time_created")}
        info["class"] = json.loads((model_dir / CONFIG_FILE).read_text()).get("class")
        pkl = local / str(flavor.get("python_model", "python_model.pkl"))
        if pkl.is_file():
            try:
                globs, calls = pickle_globals(pkl.read_bytes())
            except Exception as exc:  # a malformed pickle is reported, never loaded
                globs, calls = [f"<unreadable: {exc}>"], []
            info["wrapper_globals"] = globs
            info["wrapper_ok"] = globs == [_WRAPPER_GLOBAL] and "REDUCE" not in calls and "INST" not in calls
        outputs = []
        sig = meta.get("signature") or {}
        if sig.get("outputs"):
            outputs = [(str(c["name"]), str(c["type"])) for c in json.loads(sig["outputs"]) if "name" in c]
    identity = _sha(info.get("model_uuid"), h.hexdigest())[:24]
    if info.get("wrapper_ok") is False and warn_unverified:
        warnings.warn(f"{uri}: {_unverified_wrapper_text(info)}", stacklevel=2)
    return BatchModel(uri=uri, model=model, manifest=manifest, settings=settings, identity=identity, info=info,
                      output_schema=outputs)


def _unverified_wrapper_text(info: Mapping[str, Any]) -> str:
    return (f"python_model.pkl references {', '.join(info.get('wrapper_globals') or ['?'])} instead of only "
            f"{_WRAPPER_GLOBAL}: loading it with MLflow (mlflow.pyfunc.load_model, spark_udf, model serving) would run "
            "that code. omics-risk score does not load it, but a changed file means the model is not the one "
            "omics-risk logged; check where it comes from (docs/scoring.md, Security)")


def spark_result_type(model: BatchModel | str) -> str:
    """The Spark DDL result type of the model's pyfunc output (``patient_id string, risk_score double, ...``).

    Pass it as ``result_type`` to ``mlflow.pyfunc.spark_udf``; read from the logged signature, nothing unpickled.
    """
    bm = model if isinstance(model, BatchModel) else load_batch_model(model)
    if not bm.output_schema:
        raise ModelLoadError(f"{bm.uri} has no output signature: log it with omics_risk.scoring.pyfunc.log_model")
    kinds = {"string": "string", "double": "double", "float": "float", "long": "bigint", "integer": "int",
             "boolean": "boolean"}
    return ", ".join(f"{name} {kinds.get(t, 'string')}" for name, t in bm.output_schema)


#: Said when a model ships no extraction settings and the package defaults stand in for them.
DEFAULT_EXTRACTION_NOTE = ("the model ships no extraction settings (logged without feature_store): the cohort is "
                           "extracted with the package defaults, which may differ from what the model was trained on")


def extraction_config_or_defaults(model: BatchModel) -> tuple[dict[str, Any], list[str]]:
    """The full ``extract_cohort`` config for ``model``: the package defaults overlaid with the model's own
    extractor settings, and the note to report when the model ships none."""
    config = extraction_config(model)
    if config is None:
        return default_extract_config(), [DEFAULT_EXTRACTION_NOTE]
    return {**default_extract_config(), **config}, []


def extraction_config(model: BatchModel) -> dict[str, list[dict[str, Any]]] | None:
    """``extract_cohort`` config (``{modality: [{_target_: class, setting: value}]}``) from the model's settings.

    None when the model ships no extraction settings. Every class must be an omics-risk
    :class:`~omics_risk.features.base.Extractor` (allow-list checked before import) and settings may not hold Hydra
    keys, so ``scoring.json`` cannot make ``instantiate`` call anything else.
    """
    spec = model.settings.get("extraction")
    if not spec:
        return None
    out: dict[str, list[dict[str, Any]]] = {}
    for modality, info in spec.items():
        entries = []
        for e in info.get("extractors", []):
            qual = e.get("class")
            if not isinstance(qual, str) or not qual.startswith(ALLOWED_EXTRACTOR_PREFIXES) \
                    or not re.match(r"^[A-Za-z_][\w.]*$", qual):
                raise ModelLoadError(f"{model.uri}: extractor class {qual!r} of '{modality}' is not under "
                                     f"{', '.join(ALLOWED_EXTRACTOR_PREFIXES)}: refusing to instantiate it")
            module, _, attr = qual.rpartition(".")
            cls = getattr(importlib.import_module(module), attr, None)
            if not (isinstance(cls, type) and issubclass(cls, Extractor)
                    and cls.__module__.startswith(ALLOWED_EXTRACTOR_PREFIXES)):
                raise ModelLoadError(f"{model.uri}: {qual!r} is not an omics-risk Extractor: refusing it")
            settings = dict(e.get("settings") or {})
            _reject_hydra_keys(settings, f"{model.uri}: settings of {qual}")
            params = inspect.signature(cls.__init__).parameters
            accepted = {k: v for k, v in settings.items() if k in params}
            entries.append({"_target_": qual, **accepted})
        out[modality] = entries
    return out


def _reject_hydra_keys(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        bad = sorted(str(k) for k in value if str(k) in _HYDRA_KEYS)
        if bad:
            raise ModelLoadError(f"{where} hold Hydra key(s) {bad}: refusing to instantiate them")
        for v in value.values():
            _reject_hydra_keys(v, where)
    elif isinstance(value, list | tuple):
        for v in value:
            _reject_hydra_keys(v, where)


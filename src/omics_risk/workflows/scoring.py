"""``omics-risk score``: score every patient of a new cohort with a model from the registry, completely and safely.

What :func:`score_cohort` does, in order:

0. **Check the inputs that need no model** (:func:`check_inputs`, :func:`check_model_uri`: paths, option values, a
   registry that exists) in milliseconds, then **lock the work folder** (and a feature store outside it) with an OS
   lock for the whole run, so that two runs never delete each other's files (:class:`WorkDirLockedError`).
1. **Load the model without unpickling anything** (:func:`load_batch_model`): the logged model's files are
   downloaded from the registry (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN/model`` or a local
   directory); ``MLmodel`` is read as YAML, ``scoring.json`` and the model's ``config.json`` as JSON, the class is
   resolved through the allow-list of :func:`~omics_risk.scoring.pyfunc.resolve_model_class`, weights load with
   ``torch.load(weights_only=True)`` and preprocessors through skops' trusted types. MLflow's cloudpickled wrapper
   (``python_model.pkl``) is never loaded here; its opcodes are only inspected, statically.
2. **Read the cohort leniently**: rows that break the data contract (an unknown modality, a sample of a patient not
   in clinical.csv, a value that is not a number) are set aside with the reason recorded for their patient, instead
   of failing the whole cohort; what cannot be repaired row by row (a missing clinical.csv) is an error.
3. **Check that the cohort fits the model** (:class:`CohortMismatchError` listing every problem): the clinical
   columns and types the model needs, the modality formats, the timepoints of its feature columns, sample days in
   days (a cohort in weeks or months is caught against the training cohort's sample days), the horizons' unit.
4. **Extract features with the model's own extractor settings** (stored at log time from the training feature
   store; the extractor classes go through an allow-list) into a cached feature store, then check that the store
   matches the model's feature manifest (same extractors, versions, settings and feature names).
5. **Score in chunks of patients** with :func:`omics_risk.scoring.pyfunc.score` (the function the MLflow pyfunc and
   Spark's ``spark_udf`` run), CT images loaded per chunk for CT-image models. Each finished chunk is checkpointed
   (atomically) in a directory keyed by the model's identity, the cohort's content and the options, so a re-run
   after an interruption resumes where it stopped. Distribution shift is counted against the training ranges.
6. **Write one row per patient** (never a silent drop) atomically (temp file + ``os.replace``): ``patient_id``,
   ``status`` (``ok`` / ``partial`` / ``failed``), ``reason``, ``risk_score``, ``risk_group``, ``surv_<h>d``,
   ``response_prob`` (models with a response head), ``modalities_used``, ``modalities_missing``,
   ``n_out_of_range``; plus ``<out>.report.json`` (model, counts, warnings, shift table).

Status: ``ok`` = every modality the model uses is present and no sample of them failed; ``partial`` = scored with
the presence mask while some used modality is missing or one of its samples failed (or a used clinical value was
unreadable); ``failed`` = no usable input at all, or an error (no score). ``reason`` says why, per modality.

Warnings raised while scoring become notes of the result (printed by ``omics-risk score``, kept in the report), and
Ctrl-C raises :class:`ScoringInterrupted` saying which chunks are checkpointed; a model whose ``python_model.pkl`` was
changed is refused (:class:`UnverifiedWrapperError`) unless ``allow_unverified_wrapper``.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import pickle
import pickletools
import re
import shutil
import socket
import sys
import tempfile
import time
import urllib.parse
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from omics_risk.atomic import atomic_path, atomic_write_text
from omics_risk.data.contract import (
    CLINICAL_FILE,
    SAMPLES_FILE,
    SPEC_FILE,
    Cohort,
    CohortError,
    Problem,
    load_cohort,
    read_contract_csv,
)
from omics_risk.data.multimodal import MultimodalData
from omics_risk.data.paths import rebase_cell, rebase_for_view
from omics_risk.progress import mlflow_bars_off, progress_bar, quiet_mlflow_bars
from omics_risk.scoring.frames import CLINICAL, ID_COLUMN, RISK_GROUPS, FeatureManifest, to_frame
from omics_risk.scoring.shift import DEFAULT_MARGIN, ShiftCheck, ShiftReport

__all__ = [
    "ALLOWED_EXTRACTOR_PREFIXES",
    "LIBRARY_NOTICES",
    "LOCK_FILE",
    "MAX_MISSING_FEATURES",
    "OUTPUT_FORMATS",
    "STATUSES",
    "BatchModel",
    "CohortMismatchError",
    "ModelLoadError",
    "ModelNotFoundError",
    "RegistryNotFoundError",
    "ScoreInputError",
    "ScoreResult",
    "ScoringInterrupted",
    "UnverifiedWrapperError",
    "WorkDirLockedError",
    "check_inputs",
    "check_model_uri",
    "extraction_config",
    "load_batch_model",
    "local_store_path",
    "parse_horizons",
    "prepare_cohort",
    "score_cohort",
    "spark_result_type",
    "warning_text",
    "write_feature_table",
]

STATUSES = ("ok", "partial", "failed")
OUTPUT_FORMATS = (".parquet", ".csv")
#: Extractor classes a model's ``scoring.json`` may name (they are instantiated to extract the new cohort).
ALLOWED_EXTRACTOR_PREFIXES: tuple[str, ...] = ("omics_risk.features.",)
#: Hydra keys that would make ``instantiate`` call something other than the named extractor.
_HYDRA_KEYS = frozenset({"_target_", "_args_", "_partial_", "_recursive_", "_convert_"})
#: Settings keys that record library versions, not choices: a difference there is a warning, not an error.
_VERSION_KEYS = frozenset({"pyradiomics", "version", "monai"})
#: The only global a genuine omics-risk ``python_model.pkl`` references.
_WRAPPER_GLOBAL = "omics_risk.scoring.pyfunc.OmicsRiskPyfunc"
#: Days per horizon unit: the project's horizons are 365 / 730 / 1095 days, so a year is 365 days here.
_UNITS = {"d": 1.0, "w": 7.0, "m": 365.0 / 12, "y": 365.0}
_HORIZON_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([dwmy]?)\s*$")
_CHECKPOINT_VERSION = 1
#: A modality may lack this fraction of the model's features at a timepoint (cohort-level QC, e.g. metabolites
#: failing this cohort's blank or QC filters) and be scored with them imputed; more is a feature manifest mismatch.
MAX_MISSING_FEATURES = 0.2


class CohortMismatchError(ValueError):
    """The cohort does not fit the model (missing columns, wrong types or units, a different feature manifest)."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"the cohort does not fit the model ({len(self.problems)} problem(s)):\n{shown}")


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


class ScoreInputError(ValueError):
    """An input of the scoring points at the wrong thing (no cohort folder, no output folder, a bad option value).

    Checked before the model is loaded, so a typo costs a second, not a model download.
    """


class WorkDirLockedError(RuntimeError):
    """Another scoring run holds the work folder (or the feature store) this run needs."""

    def __init__(self, what: str, folder: Path, lock: Path, holder: Mapping[str, Any]):
        self.folder, self.lock, self.holder = folder, lock, dict(holder)
        parts = [f"pid {holder['pid']}" if holder.get("pid") else "",
                 f"on host {holder['host']}" if holder.get("host") else "",
                 f"started {holder['started']}" if holder.get("started") else ""]
        who = " ".join(p for p in parts if p) or "holder unknown"
        command = str(holder.get("command") or "")
        if command:
            who += f", command: {command if len(command) <= 160 else command[:157] + '...'}"
        advice = ("wait for it to finish, or give this run another --out or --work-dir" if what == "work folder" else
                  "wait for it to finish, or give this run its own --features folder (default: in its work folder)")
        if _holder_gone(holder):
            advice += (f"; process {holder['pid']} has ended, so a process it started still holds the lock: end it "
                       f"(`fuser -v {lock}` lists it)")
        super().__init__(f"another omics-risk score run is using the {what} {folder} ({who}): {advice}. Its lock "
                         f"{lock} is released by the OS when that process ends, so it never goes stale; do not "
                         "delete it while a run holds it")


def _holder_gone(holder: Mapping[str, Any]) -> bool:
    """Whether the recorded holder was a process of this host that no longer exists (a child may hold the lock)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") != socket.gethostname() or sys.platform == "win32":
        return False  # (on Windows, os.kill(pid, 0) would send Ctrl-C instead of probing)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


class ScoringInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM turned into KeyboardInterrupt) during :func:`score_cohort`, with how far it got.

    A ``KeyboardInterrupt`` still (callers that stop on Ctrl-C keep doing so); ``str()`` says what is kept and how
    to resume.
    """

    def __init__(self, stage: str, done: int, total: int, checkpoints: Path | None, work: Path, resume: bool):
        self.stage, self.done, self.total = stage, done, total
        self.checkpoints, self.work, self.resume = checkpoints, work, resume
        super().__init__(self.describe())

    def describe(self, what: str = "interrupted") -> str:
        again = "run the same command again" if self.resume else "run the same command again without --no-resume"
        if self.stage == "scoring" and self.checkpoints is not None:
            return (f"{what} after {self.done} of {self.total} chunks; checkpoints kept in {self.checkpoints}: "
                    f"{again} to resume")
        if self.stage == "writing the output" and self.checkpoints is not None:
            return (f"{what} while writing the output (all {self.total} chunks were scored); checkpoints kept in "
                    f"{self.checkpoints}: {again} to write it")
        if self.stage == "extracting features":
            return (f"{what} while extracting features; what was extracted is cached in {self.work}: run the same "
                    "command again to resume")
        return f"{what} while {self.stage}; nothing was written"


# ------------------------------------------------------------------------------------------------ small helpers
def parse_horizons(values: Sequence[str | float] | None) -> list[float] | None:
    """Horizons in days from ``365``, ``365d``, ``52w``, ``12m``, ``3y`` (days, weeks, months, years).

    A year is 365 days and a month 365 / 12 days, rounded to whole days (``3y`` = 1095, ``6m`` = 183), matching the
    horizons the models are evaluated at.

    A bare number is days; a bare number below 30 is refused, because a horizon of a few days is almost always a
    horizon in years or months typed without its unit (write ``3y``, or ``3d`` if days are really meant).
    """
    if values is None:
        return None
    out = []
    for v in values:
        m = _HORIZON_RE.match(str(v))
        if not m:
            raise ValueError(f"horizon {v!r} is not a number of days or a number with a unit d, w, m or y "
                             "(e.g. 365, 52w, 12m, 1y)")
        number, unit = float(m.group(1)), m.group(2)
        if number <= 0:
            raise ValueError(f"horizon {v!r} must be positive")
        if not unit and number < 30:
            raise ValueError(f"horizon {v!r} would be {number:g} days: horizons are in days, so write {number:g}y "
                             f"(years) or {number:g}m (months), or {number:g}d if you really mean days")
        out.append(number if unit in ("", "d") else float(math.floor(number * _UNITS[unit] + 0.5)))
    return out


def _sha(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: Path, h: Any = None) -> Any:
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h


def _atomic_write_parquet(df: pd.DataFrame, path: Path, schema: Any = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), tmp)


# ------------------------------------------------------------------------------------------------ the model
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
        from omics_risk.scoring.pyfunc import model_manifest

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
        from omics_risk.scoring.pyfunc import DEFAULT_HORIZONS

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
        import mlflow

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
    import mlflow
    from mlflow.exceptions import MlflowException

    from omics_risk.models.preprocessing import UntrustedTypeError
    from omics_risk.scoring.pyfunc import CONFIG_FILE, load_saved_model, model_manifest

    quiet_mlflow_bars()  # one artifact-download bar per file otherwise
    uri = str(uri)
    check_model_uri(uri)
    with tempfile.TemporaryDirectory(prefix="omics_risk_model_") as tmp:
        local = Path(uri)
        if not (local.is_dir() and (local / "MLmodel").is_file()):
            try:
                from mlflow.tracking.artifact_utils import _download_artifact_from_uri

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
    from omics_risk.features.extract import default_extract_config

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
    import importlib

    from omics_risk.features.base import Extractor

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


# ------------------------------------------------------------------------------------------------ the cohort
@dataclass
class PreparedCohort:
    """A cohort ready to extract and score, with what was set aside per patient."""

    cohort: Cohort
    root: Path  # the directory extraction reads (the cohort itself, or a repaired view of it)
    source: Path  # the cohort directory as given
    order: list[str]  # every patient to report, in clinical.csv order, then patients only in samples.csv
    #: pid -> [(what it concerns: a modality or ``clinical/<column>``, text)]
    notes: dict[str, list[tuple[str | None, str]]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # pid -> reason (cannot be scored at all)
    missing_columns: set[str] = field(default_factory=set)  # clinical columns absent from the original file
    warnings: list[str] = field(default_factory=list)


def _read_raw(path: Path) -> pd.DataFrame:
    """The table as the contract checks read it, so that their line numbers point at these rows."""
    return read_contract_csv(path)


def prepare_cohort(root: str | Path, view_dir: str | Path) -> PreparedCohort:
    """Load ``root``; when rows break the contract, set them aside (reasons per patient) in a repaired view.

    The view (``view_dir``) holds a corrected cohort.yaml / clinical.csv / samples.csv and symbolic links to every
    other entry of the cohort, so relative data paths resolve unchanged. Those links lead into the source cohort, so
    the view's cohort.yaml lists the source folder (and the source's data roots, made absolute) under ``data_roots``:
    every reader of the view (extraction too) allows exactly what the source allows. A samples.csv row leading outside
    the cohort is set aside like any other broken row. Problems that no row-level repair can fix (cohort.yaml, a
    missing or unreadable table, a missing samples.csv column) raise :class:`CohortError`.
    """
    root = Path(root)
    try:
        cohort = load_cohort(root)
        return PreparedCohort(cohort, root, root, _order(cohort.clinical, cohort.samples, {}))
    except CohortError as exc:
        problems = [p for p in exc.problems if p.severity == "error"]
    structural = [p for p in problems if not _repairable(p)]
    if structural:
        raise CohortError(structural)
    clinical = _read_raw(root / CLINICAL_FILE)
    samples = _read_raw(root / SAMPLES_FILE)
    spec_raw = yaml.safe_load((root / SPEC_FILE).read_text()) or {}
    endpoint_cols = [c for ep in (spec_raw.get("endpoints") or {}).values() if isinstance(ep, Mapping)
                     for c in (ep.get("time"), ep.get("event"), ep.get("column")) if c]
    notes: dict[str, list[tuple[str | None, str]]] = {}
    failed: dict[str, str] = {}
    warn: list[str] = []
    missing_cols: set[str] = set()
    drop_clin: set[int] = set()
    drop_samp: set[int] = set()
    lines_of: dict[str, list[int]] = {}  # patient_id -> its clinical.csv lines, built once (not a rescan per problem)
    for i, pid in zip(clinical.index, clinical["patient_id"].str.strip(), strict=True):
        if isinstance(pid, str):
            lines_of.setdefault(pid, []).append(int(i) + 2)
    for p in problems:
        row = (p.line - 2) if p.line is not None and p.line >= 2 else None
        if p.file == CLINICAL_FILE and row is None:  # a column is missing: add it empty (checked against the model)
            col = str(p.column)
            missing_cols.add(col)
            clinical[col] = np.nan
        elif p.file == CLINICAL_FILE:
            pid = clinical.at[row, "patient_id"] if row in clinical.index else None
            if p.column == "patient_id":
                drop_clin.add(row)
                if isinstance(pid, str) and pid.strip() and len(lines_of.get(pid.strip(), ())) > 1:
                    dup_lines = lines_of[pid.strip()]
                    failed[pid.strip()] = (f"patient_id appears on several lines of clinical.csv "
                                           f"({', '.join(map(str, dup_lines))}): cannot tell which row is this patient")
                    drop_clin.update(i - 2 for i in dup_lines)
                elif isinstance(pid, str) and pid.strip():  # e.g. a control character: reported, never scored
                    failed.setdefault(pid.strip(), f"clinical.csv line {p.line} [patient_id]: {p.message}")
                else:
                    warn.append(f"clinical.csv line {p.line} has no patient_id: that row is left out (no identifier "
                                "to report it under)")
            elif p.column in endpoint_cols:  # outcomes are not read by scoring: clear the row's outcome cells
                for c in endpoint_cols:
                    if c in clinical.columns:
                        clinical.at[row, c] = np.nan
            else:
                if isinstance(pid, str) and p.column in clinical.columns:
                    clinical.at[row, p.column] = np.nan
                    notes.setdefault(pid.strip(), []).append(
                        (f"{CLINICAL}/{p.column}", f"clinical.csv line {p.line} [{p.column}]: {p.message}; read as "
                                                   "missing"))
        else:  # samples.csv row
            drop_samp.add(row)
            pid = samples.at[row, "patient_id"] if row in samples.index else None
            mod = samples.at[row, "modality"] if row in samples.index and "modality" in samples else None
            mod = mod.strip() if isinstance(mod, str) else None
            if isinstance(pid, str) and pid.strip():
                pid = pid.strip()
                if "is not in clinical.csv" in p.message:
                    failed.setdefault(pid, f"not in clinical.csv (only in samples.csv, line {p.line}): no clinical "
                                           "data to score this patient with")
                else:
                    notes.setdefault(pid, []).append((mod, f"samples.csv line {p.line}: {p.message}; sample set "
                                                           "aside"))
            else:
                warn.append(f"samples.csv line {p.line}: {p.message}; that row is left out (no patient_id)")
    clinical = clinical.drop(index=sorted(drop_clin & set(clinical.index)))
    samples = samples.drop(index=sorted(drop_samp & set(samples.index)))
    samples = samples[~samples["patient_id"].str.strip().isin(list(failed))]  # their rows went with them
    view = Path(view_dir)
    if view.exists():
        shutil.rmtree(view)
    view.mkdir(parents=True)
    spec_view = rebase_for_view(spec_raw if isinstance(spec_raw, Mapping) else {}, root)
    (view / SPEC_FILE).write_text(yaml.safe_dump(spec_view, sort_keys=False), encoding="utf-8")
    clinical.to_csv(view / CLINICAL_FILE, index=False)
    for col in ("path", "mask_path"):
        if col in samples.columns:
            samples = samples.assign(**{col: samples[col].map(lambda v: rebase_cell(v, root))})
    samples.to_csv(view / SAMPLES_FILE, index=False)
    for entry in root.iterdir():
        if entry.name not in (SPEC_FILE, CLINICAL_FILE, SAMPLES_FILE):
            (view / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    cohort = load_cohort(view)  # anything still wrong is structural: CohortError
    order = _order(_read_raw(root / CLINICAL_FILE), _read_raw(root / SAMPLES_FILE), failed)
    return PreparedCohort(cohort, view, root, order, notes, failed, missing_cols, warn)


def _repairable(p: Problem) -> bool:
    if p.file == CLINICAL_FILE:
        if p.line is not None and p.line >= 2:
            return True
        return p.column is not None and p.column != "patient_id" and "is missing" in p.message
    if p.file == SAMPLES_FILE:
        return p.line is not None and p.line >= 2
    return False


def _order(clinical: pd.DataFrame, samples: pd.DataFrame, failed: Mapping[str, str]) -> list[str]:
    seen: dict[str, None] = {}
    for frame in (clinical, samples):
        if "patient_id" in frame:
            for pid in frame["patient_id"].dropna().astype(str).str.strip():
                if pid and (frame is clinical or pid in failed):
                    seen.setdefault(pid, None)
    return list(seen)


# ------------------------------------------------------------------------------------------------ fit checks
def _kind(declared: str | None) -> str | None:
    return {"numeric": "double", "binary": "double", "categorical": "string", "ordinal": "string"}.get(declared or "")


_UNIT_FACTORS = {"weeks": 7.0, "months": 365.25 / 12, "years": 365.25}


def check_fit(bm: BatchModel, prep: PreparedCohort) -> list[str]:
    """Problems that make the cohort unfit for the model (raised together); returns the softer warnings."""
    cohort = prep.cohort
    errors: list[str] = []
    notes: list[str] = []
    # clinical columns and their kinds
    missing = [c for c in bm.manifest.clinical if c in prep.missing_columns or c not in cohort.clinical.columns]
    undeclared = [c for c in bm.manifest.clinical if c not in missing and c not in cohort.spec.clinical]
    if missing:
        errors.append(f"clinical.csv lacks column(s) the model needs: {', '.join(missing)} (add them; empty cells "
                      "are allowed and are imputed)")
    if undeclared:
        want = {c: ("numeric" if bm.manifest.clinical[c] == "double" else "categorical or ordinal") for c in undeclared}
        errors.append("cohort.yaml does not declare clinical column(s) the model needs: "
                      + ", ".join(f"{c} (as {t})" for c, t in want.items()) + "; add them under clinical:")
    trained = (bm.settings.get("cohort") or {}).get("clinical") or {}
    for c, kind in bm.manifest.clinical.items():
        col = cohort.spec.clinical.get(c)
        if col is None or c in missing:
            continue
        if _kind(col.type) != kind:
            errors.append(f"clinical column '{c}' is declared {col.type} here but the model reads it as "
                          f"{'a number' if kind == 'double' else 'text (categories / levels)'}"
                          + (f" ({trained[c]['type']} in training)" if c in trained else ""))
        elif col.type == "ordinal" and c in trained and trained[c].get("levels"):
            extra = [lv for lv in col.levels if lv not in trained[c]["levels"]]
            if extra:
                notes.append(f"clinical column '{c}' has level(s) {extra} the training cohort did not have "
                             f"(training levels: {trained[c]['levels']}): they are scored as unseen")
    # modalities: formats, timepoints, sample days
    profile = bm.settings.get("cohort") or {}
    formats = dict(profile.get("formats") or {})
    for m, info in (bm.settings.get("extraction") or {}).items():
        formats.setdefault(m, info.get("format"))
    days = profile.get("sample_days") or {}
    day_checks: list[tuple[str, str, float, float, str | None]] = []
    for m in bm.tabular + bm.images:
        if m not in cohort.modalities:
            notes.append(f"this cohort has no '{m}' sample: every patient is scored without {m}")
            continue
        fmt = getattr(cohort.spec.modality(m), "format", None)
        want = "image" if m in bm.images else formats.get(m)
        if want and fmt != want:
            errors.append(f"modality '{m}' is {fmt} here but {want} for the model: its features cannot be compared")
        tps = bm.timepoints(m)
        rows = cohort.samples_of(m)
        have = sorted(rows["timepoint"].astype(str).unique())
        if tps and not set(tps) & set(have):
            errors.append(f"feature manifest mismatch: the model uses '{m}' at timepoint(s) {', '.join(tps)}, but "
                          f"this cohort's {m} samples are at {', '.join(have)}; rename the timepoints in samples.csv "
                          "to the model's")
        elif tps and set(have) - set(tps):
            notes.append(f"'{m}' samples at timepoint(s) {', '.join(sorted(set(have) - set(tps)))} are not used by "
                         f"the model (it uses {', '.join(tps)})")
        for tp, train_day in (days.get(m) or {}).items():
            sel = rows[rows["timepoint"].astype(str) == tp]
            here = pd.to_numeric(sel["day"], errors="coerce").median() if len(sel) else math.nan
            if np.isfinite(here) and abs(train_day) >= 7 and here != 0:
                ratio = train_day / here
                unit = next((u for u, f in {"days": 1.0, **_UNIT_FACTORS}.items() if abs(ratio / f - 1) < 0.2), None)
                day_checks.append((m, tp, here, train_day, unit))
    # sample days in another unit: every comparable timepoint must agree on it (a schedule may differ; a unit
    # shifts them all by the same factor)
    units = {u for *_, u in day_checks}
    if day_checks and len(units) == 1 and next(iter(units)) in _UNIT_FACTORS:
        unit = next(iter(units))
        shown = "; ".join(f"{m} at {tp}: median {here:g} here, {train:g} in training" for m, tp, here, train, _ in
                          day_checks[:4])
        errors.append(f"samples.csv 'day' must be in days, but these look like {unit} ({shown}); convert them")
    # CT images: the preprocessing must give the crops the network was trained on
    if bm.images:
        from omics_risk.features.ct import CTConfig

        if not bm.settings.get("ct"):
            notes.append("the model ships no CT preprocessing settings (logged without ct_config): the default "
                         "CT preprocessing is used")
        cfg = CTConfig.from_mapping(bm.settings["ct"]) if bm.settings.get("ct") else CTConfig()
        trained_shape = getattr(bm.model, "image_shape_", None)
        here = [2 if cfg.mask_channel else 1, *cfg.roi_size]
        if trained_shape is not None and list(trained_shape) != here:
            errors.append(f"CT preprocessing gives crops of shape {here} (channels, x, y, z) but the model was "
                          f"trained on {list(trained_shape)}: log the model with its ct_config")
    # horizons beyond the training follow-up
    last = getattr(bm.model, "baseline_times_", getattr(bm.model, "baseline_time_", None))
    if last is not None and len(last):
        beyond = [h for h in bm.horizons if h > float(np.max(last))]
        if beyond:
            notes.append(f"horizon(s) {', '.join(f'{h:g}' for h in beyond)} days lie beyond the last training event "
                         f"time ({float(np.max(last)):g} days): survival is held constant there")
    if errors:
        raise CohortMismatchError(errors)
    return notes


def _check_store(bm: BatchModel, store: Path, extracted: Sequence[str]) -> list[str]:
    """The extracted store must match the model: same extractors (settings hash) and the model's feature names."""
    manifest = json.loads((store / "manifest.json").read_text())
    errors: list[str] = []
    notes: list[str] = []
    trained = bm.settings.get("extraction") or {}
    for m in extracted:
        here = manifest.get("modalities", {}).get(m, {})
        if m in trained:
            want = {e.get("name"): e for e in trained[m].get("extractors", [])}
            got = {e.get("name"): e for e in here.get("extractors", [])}
            if set(want) != set(got):
                errors.append(f"feature manifest mismatch: '{m}' was extracted with {sorted(got)} here but "
                              f"{sorted(want)} for the model")
            for name in set(want) & set(got):
                a, b = want[name], got[name]
                if a.get("settings_hash") == b.get("settings_hash"):
                    continue
                sa, sb = a.get("settings") or {}, b.get("settings") or {}
                diff = sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k))
                if str(a.get("version")) != str(b.get("version")):
                    errors.append(f"feature manifest mismatch: extractor {name} of '{m}' is version "
                                  f"{b.get('version')} here, {a.get('version')} for the model")
                elif set(diff) <= _VERSION_KEYS:
                    notes.append(f"extractor {name} of '{m}' runs with other library versions than in training "
                                 f"({', '.join(f'{k}: {sa.get(k)} -> {sb.get(k)}' for k in diff)})")
                else:
                    errors.append(f"feature manifest mismatch: extractor {name} of '{m}' has other settings than "
                                  f"for the model ({', '.join(diff)}); remove the cohort.yaml "
                                  f"modalities.{m}.extract override or retrain")
        path = store / f"{m}.parquet"
        if not path.is_file():
            continue
        import pyarrow.parquet as pq

        cols = set(pq.read_schema(path).names)
        feats = bm.manifest.modalities[m]
        by_tp: dict[str, list[str]] = {}
        for f in feats:
            by_tp.setdefault(f.split("__", 1)[0] if "__" in f else "", []).append(f)
        for tp, fs in by_tp.items():
            lacking = [f for f in fs if f not in cols]
            if not (tp and lacking and len(lacking) < len(fs)):  # all there, or the timepoint absent altogether
                continue
            shown = ", ".join(lacking[:8]) + (" ..." if len(lacking) > 8 else "")
            if len(lacking) > MAX_MISSING_FEATURES * len(fs):
                errors.append(f"feature manifest mismatch: '{m}' at {tp} lacks {len(lacking)} of the model's "
                              f"{len(fs)} features ({shown}); the extracted features are not the ones it was "
                              "trained on")
            else:
                notes.append(f"'{m}' at {tp} lacks {len(lacking)} of the model's {len(fs)} features ({shown}), e.g. "
                             "features this cohort's QC removed: they are missing for every patient (imputed)")
    if errors:
        raise CohortMismatchError(errors)
    return notes


# ------------------------------------------------------------------------------------------------ chunks
class _Tables:
    """Rows of the feature store's tables for a chunk of patients (Parquet filters: only those rows are kept)."""

    def __init__(self, store: Path | None, manifest: FeatureManifest, extracted: Sequence[str]):
        import pyarrow.parquet as pq

        self.manifest = manifest
        self.paths: dict[str, Path] = {}
        self.columns: dict[str, list[str]] = {}
        for m, feats in manifest.modalities.items():
            path = store / f"{m}.parquet" if store is not None and m in extracted else None
            if path is not None and path.is_file():
                names = set(pq.read_schema(path).names)
                self.paths[m] = path
                self.columns[m] = [f for f in feats if f in names]

    def read(self, modality: str, patients: list[str]) -> pd.DataFrame:
        feats = list(self.manifest.modalities[modality])
        if modality not in self.paths or not patients:
            return pd.DataFrame(np.nan, index=pd.Index(patients, name=ID_COLUMN), columns=feats)
        table = pd.read_parquet(self.paths[modality], columns=self.columns[modality],
                                filters=[(ID_COLUMN, "in", patients)])
        table.index = table.index.astype(str)
        return table.reindex(index=patients, columns=feats).astype(np.float64)


def _preprocess_scan(cfg: Any, cache_dir: str, image: str, mask: str) -> None:
    """Fill the CT tensor cache for one scan (worker process); failures are left for the scoring pass to report."""
    from omics_risk.features.ct import CTTensorCache

    with contextlib.suppress(Exception):
        CTTensorCache(cfg, cache_dir)(image, mask)


class _ChunkImages:
    """CT tensors of a chunk's patients at the model's timepoints, with the reason whenever a scan cannot be used."""

    def __init__(self, bm: BatchModel, cohort: Cohort, cache_dir: Path):
        from omics_risk.features.ct import CTConfig

        self.modality = bm.images[0]
        self.timepoints = bm.timepoints(self.modality)
        cfg = bm.settings.get("ct")
        self.cfg = CTConfig.from_mapping(cfg) if cfg else CTConfig()
        self.cohort = cohort
        self.cache_dir = cache_dir

    def prefill(self, workers: int | None, progress: bool) -> None:
        """Preprocess the scans not in the tensor cache yet, in parallel processes (a failing scan is reported later,
        per patient, when its chunk is scored)."""
        from joblib import Parallel, delayed

        from omics_risk.features.ct import CTTensorCache

        cache = CTTensorCache(self.cfg, self.cache_dir)
        rows = self.cohort.samples_of(self.modality)
        rows = rows[rows["timepoint"].astype(str).isin(self.timepoints)]
        scans = [(str(self.cohort.path(r.path)), str(self.cohort.path(r.mask_path))) for r in rows.itertuples()]
        todo = []
        for image, mask in scans:
            try:
                if not (cache.dir / f"{cache.key(image, mask)}.pt").is_file():
                    todo.append((image, mask))
            except OSError:  # a missing file: reported when the patient is scored
                continue
        if not todo:
            return
        n_jobs = max(1, min(int(workers or os.cpu_count() or 1), len(todo)))
        jobs = (delayed(_preprocess_scan)(self.cfg, str(self.cache_dir), image, mask) for image, mask in todo)
        Parallel(n_jobs=n_jobs)(progress_bar(jobs, total=len(todo), desc="CT tensors", unit="scan",
                                             disable=not progress))

    def load(self, patients: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
        from omics_risk.models.fused import CTImageStore

        store = CTImageStore(self.cohort, cfg=self.cfg, cache_dir=self.cache_dir, modality=self.modality,
                             memory=False)
        images: dict[str, dict[str, Any]] = {}
        reasons: dict[str, list[str]] = {}
        for pid in patients:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    tensors = store[pid]
                except KeyError:  # no CT sample
                    continue
            kept = {tp: t for tp, t in tensors.items() if tp in self.timepoints}
            if kept:
                images[pid] = kept
            for w in caught:
                msg = str(w.message)
                reasons.setdefault(pid, []).append(msg.replace(f"CT of patient {pid} at ", ""))
        return images, reasons


@dataclass
class ScoreResult:
    """What :func:`score_cohort` wrote and found."""

    out: Path
    n_patients: int
    counts: dict[str, int]
    shift: ShiftReport | None
    warnings: list[str]
    model: dict[str, Any]
    chunks: int
    resumed_chunks: int
    seconds: float
    report_path: Path | None = None
    #: wall-clock seconds per stage: load (model), prepare (cohort, fit checks), extract, score, write
    timings: dict[str, float] = field(default_factory=dict)

    def to_text(self) -> str:
        lines = [f"scored {self.n_patients} patients with {self.model.get('uri')} -> {self.out} "
                 f"({self.seconds:.1f} s" + (f", {self.resumed_chunks} of {self.chunks} chunks resumed" if
                                             self.resumed_chunks else "") + ")",
                 "  " + ", ".join(f"{s} {self.counts.get(s, 0)}" for s in STATUSES)]
        for w in self.warnings:
            lines.append(f"warning: {w}")
        if self.shift is not None:
            lines.extend(self.shift.messages())
        return "\n".join(lines)


def _status_index(store: Path | None, needed: Sequence[str]) -> dict[str, list[dict[str, str]]]:
    """Per patient, the extraction status rows of the modalities the model uses."""
    if store is None or not (store / "status.csv").is_file():
        return {}
    st = pd.read_csv(store / "status.csv", dtype=str, keep_default_na=False)
    st = st[st["modality"].isin(list(needed))]
    out: dict[str, list[dict[str, str]]] = {}
    for rec in st.to_dict(orient="records"):
        out.setdefault(str(rec["patient_id"]), []).append(rec)
    return out


def _output_schema(bm: BatchModel, horizons: Sequence[float], response: bool) -> Any:
    import pyarrow as pa

    from omics_risk.scoring.pyfunc import _horizon_name

    fields = [(ID_COLUMN, pa.string()), ("status", pa.string()), ("reason", pa.string()),
              ("risk_score", pa.float64()), ("risk_group", pa.string())]
    fields += [(_horizon_name(h), pa.float64()) for h in horizons]
    if response:
        fields.append(("response_prob", pa.float64()))
    fields += [("modalities_used", pa.string()), ("modalities_missing", pa.string()),
               ("n_out_of_range", pa.int64())]
    return pa.schema(fields)


def _supports_survival(model: Any) -> bool:
    from omics_risk.scoring.pyfunc import _supports

    return _supports(model, "predict_survival", "has_survival_head")


def _supports_response(model: Any) -> bool:
    from omics_risk.scoring.pyfunc import _supports

    if not _supports(model, "predict_response", "has_response_head"):
        return False
    heads = getattr(model, "heads", None)
    return heads is None or "binary" in heads


class _Scorer:
    """Scores one chunk of patients and decides each patient's status and reason."""

    def __init__(self, bm: BatchModel, prep: PreparedCohort, store: Path | None, extracted: Sequence[str],
                 horizons: list[float], risk_groups: str, shift: ShiftCheck, images: _ChunkImages | None):
        from omics_risk.evaluation.riskgroups import RiskGroups
        from omics_risk.scoring.pyfunc import _horizon_name

        self.bm, self.prep, self.horizons, self.shift, self.images = bm, prep, horizons, shift, images
        self.tables = _Tables(store, bm.manifest, extracted)
        self.status = _status_index(store, extracted)
        self.clinical = prep.cohort.clinical.drop_duplicates("patient_id").set_index("patient_id")
        self.clinical.index = self.clinical.index.astype(str)
        self.cohort_mods = set(prep.cohort.modalities)
        self.with_samples = set(prep.cohort.samples["patient_id"].astype(str))
        self.image_patients = {str(p) for m in bm.images for p in prep.cohort.samples_of(m)["patient_id"]}
        self.surv_cols = [_horizon_name(h) for h in horizons] if _supports_survival(bm.model) else []
        self.response = _supports_response(bm.model)
        cut = (bm.settings.get("risk_cutoffs") or {}).get(risk_groups)
        self.groups = None
        if cut is not None:  # the training cut-offs stored at log time, assigned as RiskGroups does
            self.groups = RiskGroups(risk_groups)
            self.groups.cutoffs_ = np.asarray(cut, dtype=np.float64)
        self.schema = _output_schema(bm, horizons if self.surv_cols else [], self.response)

    def frame(self, patients: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The flat scoring frame of these patients and their presence mask (``clinical``: any value the model uses).

        ``patients`` must all have a clinical.csv row.
        """
        idx = pd.Index(patients, name=ID_COLUMN)
        clin_cols = list(self.bm.manifest.clinical)
        clinical = self.clinical.reindex(idx)[[c for c in clin_cols if c in self.clinical.columns]]
        for c in clin_cols:
            if c not in clinical:
                clinical[c] = np.nan
        mods = {m: self.tables.read(m, patients) for m in self.bm.tabular}
        present = pd.DataFrame({CLINICAL: True, **{m: t.notna().any(axis=1) for m, t in mods.items()}}, index=idx)
        data = MultimodalData(patients=idx, clinical=clinical[clin_cols], modalities=mods, present=present)
        present[CLINICAL] = clinical[clin_cols].notna().any(axis=1) if clin_cols else False
        return to_frame(data), present

    def run(self, patients: list[str]) -> pd.DataFrame:
        """Output rows of one chunk of patients."""
        from omics_risk.scoring.pyfunc import score

        scorable = [p for p in patients if p not in self.prep.failed and p in self.clinical.index]
        frame, present = self.frame(scorable)
        clin_nan = frame.set_index(ID_COLUMN)[self.bm.manifest.clinical_columns()].isna()
        oor = dict(zip(scorable, self.shift.update(frame), strict=True))
        images, img_reasons = self.images.load(scorable) if self.images is not None else (None, {})
        errors: dict[str, str] = {}
        scored = self._score(score, frame, images, errors)
        rows = [self._row(pid, present, clin_nan, scored, errors, images, img_reasons, oor.get(pid))
                for pid in patients]
        return pd.DataFrame(rows, columns=self.schema.names)

    def _score(self, score_fn: Any, frame: pd.DataFrame, images: Any, errors: dict[str, str]) -> pd.DataFrame | None:
        if not len(frame):
            return None
        kw: dict[str, Any] = {"manifest": self.bm.manifest, "horizons": self.horizons, "chunk_size": len(frame)}
        if self.images is not None:
            kw["images"] = images or {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="this model uses CT images but none were given")
            try:
                return score_fn(self.bm.model, frame, **kw).set_index(ID_COLUMN)
            except Exception:  # one patient's bad value must not fail the chunk: retry one by one
                parts = []
                for i in range(len(frame)):
                    one = frame.iloc[[i]]
                    try:
                        parts.append(score_fn(self.bm.model, one, **{**kw, "chunk_size": 1}).set_index(ID_COLUMN))
                    except Exception as exc:
                        errors[str(one[ID_COLUMN].iloc[0])] = f"{type(exc).__name__}: {exc}"
                return pd.concat(parts) if parts else None

    def _row(self, pid: str, present_df: pd.DataFrame, clin_nan: pd.DataFrame, scored: pd.DataFrame | None,
             errors: Mapping[str, str], images: Mapping[str, Any] | None, img_reasons: Mapping[str, list[str]],
             oor: int | None) -> dict:
        row: dict[str, Any] = {ID_COLUMN: pid, "risk_score": math.nan, "risk_group": None,
                               **dict.fromkeys(self.surv_cols, math.nan), "modalities_used": "",
                               "modalities_missing": "", "n_out_of_range": int(oor or 0)}
        if self.response:
            row["response_prob"] = math.nan
        notes = self.prep.notes.get(pid, [])
        if pid in self.prep.failed:
            return {**row, "status": "failed", "reason": self.prep.failed[pid],
                    "modalities_missing": ",".join(self.bm.needed)}
        if pid not in self.clinical.index:
            return {**row, "status": "failed", "reason": "not in clinical.csv", "modalities_missing":
                    ",".join(self.bm.needed)}
        parts: list[str] = []
        degraded = False
        present: dict[str, bool] = {}
        if pid not in self.with_samples:
            parts.append("no sample of any modality in samples.csv")
        # clinical
        if self.bm.manifest.clinical:
            nan = clin_nan.loc[pid].to_numpy(dtype=bool)
            present[CLINICAL] = not nan.all()
            gone = [c for c, n in zip(self.bm.manifest.clinical, nan, strict=True) if n]
            if not present[CLINICAL]:
                parts.append("clinical: every value the model uses is missing")
            elif gone:
                parts.append(f"clinical: {', '.join(gone)} missing (imputed)")
        for m, text in notes:
            used = m in self.bm.needed or (m is not None and m.startswith(f"{CLINICAL}/")
                                           and m.split("/", 1)[1] in self.bm.manifest.clinical)
            degraded = degraded or used
            parts.append(text)
        # tabular modalities
        status_rows = self.status.get(pid, [])
        for m in self.bm.tabular:
            present[m] = bool(present_df.at[pid, m])
            failed = [r for r in status_rows if r["modality"] == m and r["status"] == "failed"]
            detail = "; ".join(f"{r['timepoint']} sample {r['sample_id']} failed: {r['reason']}" for r in failed)
            if not present[m]:
                if m not in self.cohort_mods:
                    parts.append(f"{m}: not in this cohort")
                elif failed:
                    parts.append(f"{m}: {detail}")
                else:
                    has = [r for r in status_rows if r["modality"] == m and r["status"] == "ok"]
                    parts.append(f"{m}: no sample" if not has else f"{m}: no sample at the model's timepoints "
                                 f"({', '.join(self.bm.timepoints(m))})")
            elif failed:
                degraded = True
                parts.append(f"{m}: {detail} (scored with its other samples)")
        # image modalities
        for m in self.bm.images:
            present[m] = images is not None and pid in images
            why = img_reasons.get(pid, [])
            if not present[m]:
                if m not in self.cohort_mods:
                    parts.append(f"{m}: not in this cohort")
                elif why:
                    parts.append(f"{m}: " + "; ".join(why))
                elif pid not in self.image_patients:
                    parts.append(f"{m}: no sample")
                else:
                    parts.append(f"{m}: no scan at the model's timepoints ({', '.join(self.bm.timepoints(m))})")
            elif why:
                degraded = True
                parts.append(f"{m}: " + "; ".join(why) + " (scored with its other scans)")
        missing = [m for m in self.bm.needed if not present.get(m, False)]
        row["modalities_missing"] = ",".join(missing)
        if pid in errors:
            return {**row, "status": "failed", "reason": self._paths("; ".join([f"scoring error: {errors[pid]}",
                                                                                  *parts]))}
        if not any(present.get(m, False) for m in self.bm.needed):
            return {**row, "status": "failed", "reason": self._paths("; ".join(["no usable input", *parts]))}
        if scored is None or pid not in scored.index:
            return {**row, "status": "failed", "reason": self._paths("; ".join(["not scored", *parts]))}
        s = scored.loc[pid]
        row["risk_score"] = float(s["risk_score"])
        if self.groups is not None and np.isfinite(row["risk_score"]):
            row["risk_group"] = str(self.groups.assign(np.array([row["risk_score"]]))[0])
        for c in self.surv_cols:
            row[c] = float(s[c]) if c in s.index else math.nan
        if self.response and "response_prob" in s.index:
            row["response_prob"] = float(s["response_prob"])
        row["modalities_used"] = ",".join(m for m in self.bm.needed if present.get(m, False))
        status = "partial" if (missing or degraded) else "ok"
        return {**row, "status": status, "reason": self._paths("; ".join(parts))}

    def _paths(self, text: str) -> str:
        """Reasons name the cohort's own files, not the repaired view's links to them."""
        if self.prep.root != self.prep.source:
            text = text.replace(str(self.prep.root), str(self.prep.source))
        return text


# ------------------------------------------------------------------------------------------------ the engine
def _content_key(bm: BatchModel, prep: PreparedCohort, store: Path | None, extracted: Sequence[str],
                 options: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    for name in (SPEC_FILE, CLINICAL_FILE, SAMPLES_FILE):
        _file_digest(prep.root / name, h)
    h.update(json.dumps([prep.notes, prep.failed, prep.order], sort_keys=True, default=str).encode())
    if store is not None:
        for name in ["status.csv", *(f"{m}.parquet" for m in extracted)]:
            if (store / name).is_file():
                _file_digest(store / name, h)
    for m in bm.images:  # CT files are read at scoring time: their size and mtime are part of the key
        for r in prep.cohort.samples_of(m).itertuples():
            for rel in (r.path, r.mask_path):
                p = prep.cohort.path(str(rel))
                if p.exists():
                    st = p.stat()
                    h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}".encode())
    return _sha(bm.identity, h.hexdigest(), dict(options))[:20]


def _output_format(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ScoreInputError(f"--out {out}: the output must end in {' or '.join(OUTPUT_FORMATS)}")
    return suffix


def _default_work_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.work"


def check_inputs(
    cohort: str | Path,
    out: str | Path,
    *,
    work_dir: str | Path | None = None,
    features_dir: str | Path | None = None,
    risk_groups: str = "tertiles",
    chunk_size: int = 256,
    shift_margin: float = DEFAULT_MARGIN,
) -> str:
    """Check the inputs of :func:`score_cohort` that need no model, in milliseconds; returns the output format.

    Run first, so that a mistyped path is reported at once instead of after the model download and load.
    Raises :class:`ScoreInputError` naming the input and what to do.
    """
    out = Path(out)
    fmt = _output_format(out)
    if out.is_dir():
        raise ScoreInputError(f"--out {out} is a folder: give a file name ending in {' or '.join(OUTPUT_FORMATS)}")
    if not out.parent.is_dir():
        raise ScoreInputError(f"--out {out}: the output folder {out.parent} does not exist (create it first)")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ScoreInputError(f"--out {out}: the output folder {out.parent} is not writable")
    if risk_groups not in RISK_GROUPS:
        raise ScoreInputError(f"risk_groups must be one of {', '.join(RISK_GROUPS)}, got {risk_groups!r}")
    if chunk_size < 1:
        raise ScoreInputError(f"--chunk-size must be a positive number of patients, got {chunk_size}")
    if not (math.isfinite(shift_margin) and shift_margin >= 0):
        raise ScoreInputError(f"--shift-margin must be a number >= 0, got {shift_margin}")
    root = Path(cohort)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise ScoreInputError(f"--cohort {root} {what}: a cohort is a folder with {SPEC_FILE}, {CLINICAL_FILE} and "
                              f"{SAMPLES_FILE} (docs/data_format.md)")
    lacking = [name for name in (SPEC_FILE, CLINICAL_FILE, SAMPLES_FILE) if not (root / name).is_file()]
    if lacking:
        raise ScoreInputError(f"--cohort {root} has no {' and no '.join(lacking)}: it is not a cohort folder in the "
                              f"data contract (docs/data_format.md); check the path, or run `omics-risk validate "
                              f"{root}`")
    for flag, folder in (("--work-dir", work_dir), ("--features", features_dir)):
        if folder is None:
            continue
        path = Path(folder)
        if path.exists() and not path.is_dir():
            raise ScoreInputError(f"{flag} {folder} is a file: give a folder (it is created if missing)")
        existing = next(p for p in (path, *path.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise ScoreInputError(f"{flag} {folder} cannot be created: {existing} is a file")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ScoreInputError(f"{flag} {folder}: {existing} is not writable (the run writes its checkpoints and "
                                  "features there); give a folder you can write to")
    return fmt


#: The lock file of a work folder (and of a feature store outside it) while a scoring run uses it.
LOCK_FILE = ".score.lock"


def _read_holder(lock: Path) -> dict[str, Any]:
    try:
        holder = json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def _folder_lock(folder: Path, what: str, notes: list[str]) -> Iterator[None]:
    """Hold an OS lock (``flock`` through filelock) on ``folder`` for the whole run, or raise
    :class:`WorkDirLockedError` at once: two runs on one work folder would delete each other's checkpoints and
    cohort view. The kernel drops the lock when the process dies, so a killed run never leaves a stale lock.
    The lock file records the holder (pid, host, start time, command) for the message of a run that is refused."""
    from filelock import FileLock, Timeout

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now().astimezone().isoformat(timespec="seconds"), "command": " ".join(sys.argv)}
    record = json.dumps(holder).encode()

    def write_holder(fd: int) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, record)

    lock: Any = FileLock(path, on_acquired=write_holder)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise WorkDirLockedError(what, folder, path, _read_holder(path)) from None
    except OSError as exc:  # a filesystem without flock (some network mounts): run unlocked, and say so
        notes.append(f"could not lock the {what} {folder} ({exc}): do not start another scoring run on it until "
                     "this one ends")
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            with contextlib.suppress(OSError):
                os.truncate(path, 0)  # the holder record goes with the hold
            lock.release()


def _within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


#: Other libraries' API notices (SQLAlchemy, pandas, MLflow ...): nothing a user of the scoring can act on.
LIBRARY_NOTICES: tuple[type[Warning], ...] = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_PACKAGE_DIR = str(Path(__file__).resolve().parents[1]) + os.sep


def warning_text(w: warnings.WarningMessage) -> str:
    """A caught warning as a note: our own as they are, another library's with its category and package."""
    text = str(w.message)
    if str(Path(w.filename).resolve()).startswith(_PACKAGE_DIR):
        return text
    parts = Path(w.filename).parts
    package = parts[parts.index("site-packages") + 1] if "site-packages" in parts[:-1] else Path(w.filename).stem
    return f"{w.category.__name__} from {package}: {text}"


@contextlib.contextmanager
def _collect_warnings(notes: list[str], collected: list[warnings.WarningMessage]) -> Iterator[None]:
    """The warnings raised while scoring become notes of the result (printed with it, kept in the report) instead of
    scrolling past in the progress output; the caller's filters still decide what is raised at all. Other libraries'
    deprecation notices are passed on unchanged, and if the run fails every warning is passed on."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    except BaseException:
        _reemit(caught)
        raise
    for w in caught:
        own = str(Path(w.filename).resolve()).startswith(_PACKAGE_DIR)
        if issubclass(w.category, LIBRARY_NOTICES) and not own:
            _reemit([w])
            continue
        text = warning_text(w)
        if text not in notes:
            notes.append(text)
            collected.append(w)


def _reemit(caught: Sequence[warnings.WarningMessage]) -> None:
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


@dataclass
class _Progress:
    """How far a run got, for the message of an interruption."""

    stage: str = "loading the model"
    done: int = 0
    total: int = 0
    checkpoints: Path | None = None


def _extract(bm: BatchModel, prep: PreparedCohort, store: Path, workers: int | None,
             progress: bool) -> tuple[list[str], list[str]]:
    from omics_risk.features.extract import extract_cohort

    wanted = [m for m in bm.tabular if m in prep.cohort.modalities]
    if not wanted:
        return [], []
    config, notes = extraction_config_or_defaults(bm)
    extract_cohort(prep.root, store, config=config, modalities=wanted, workers=workers, progress=progress)
    return wanted, notes


def score_cohort(
    model: str | BatchModel,
    cohort: str | Path,
    out: str | Path,
    *,
    features_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    horizons: Sequence[float] | None = None,
    risk_groups: str = "tertiles",
    chunk_size: int = 256,
    workers: int | None = None,
    resume: bool = True,
    keep_checkpoints: bool = False,
    shift_margin: float = DEFAULT_MARGIN,
    progress: bool = True,
    allow_unverified_wrapper: bool = False,
) -> ScoreResult:
    """Score every patient of ``cohort`` with ``model`` into ``out`` (``.parquet`` or ``.csv``); see the module doc.

    Args:
        model: a model URI (``models:/NAME@ALIAS``, ``runs:/RUN/model``, a local model directory) or a
            :class:`BatchModel`.
        cohort: the cohort directory (data contract).
        out: the output file; written atomically, with ``<out>.report.json`` next to it.
        features_dir: feature store for the extraction (cached; default ``<work_dir>/features``).
        work_dir: checkpoints, the extraction cache, CT tensors and a repaired cohort view (default
            ``.<out name>.work`` next to ``out``). Checkpoints are removed after success unless ``keep_checkpoints``.
            Locked for the run (``<work_dir>/.score.lock``; a feature store outside it too): a second run on it
            raises :class:`WorkDirLockedError` at once.
        horizons: survival horizons in days (default: the model's).
        risk_groups: ``tertiles`` (low / intermediate / high) or ``median`` (low / high) of the training risks.
        chunk_size: patients per chunk (memory and checkpoint granularity).
        workers: extraction processes (default: all cores).
        resume: reuse the checkpointed chunks of an interrupted run with the same model, cohort and options.
        shift_margin: how far beyond the training 1st-99th percentile range a value must be to count as shifted.
        allow_unverified_wrapper: score a model whose ``python_model.pkl`` references more than omics-risk's wrapper
            (refused by default with :class:`UnverifiedWrapperError`: its files were changed after logging).

    Raises:
        ScoreInputError: an input is wrong (checked before the model is loaded).
        ScoringInterrupted: Ctrl-C; finished chunks stay checkpointed, and the same call resumes from them.
    """
    t0 = time.perf_counter()
    out = Path(out)
    fmt = check_inputs(cohort, out, work_dir=work_dir, features_dir=features_dir, risk_groups=risk_groups,
                       chunk_size=chunk_size, shift_margin=shift_margin)
    if not isinstance(model, BatchModel):
        check_model_uri(model)
    work = Path(work_dir) if work_dir is not None else _default_work_dir(out)
    store = Path(features_dir) if features_dir is not None else work / "features"
    state = _Progress()
    notes: list[str] = []
    try:
        with contextlib.ExitStack() as locks:
            locks.enter_context(_folder_lock(work, "work folder", notes))
            if not _within(store, work):  # a shared store (e.g. the cohort's own features/): re-extracted in place
                locks.enter_context(_folder_lock(store, "feature store", notes))
            return _score_locked(model, cohort, out, fmt, work, store, notes, state, t0, horizons=horizons,
                                 risk_groups=risk_groups, chunk_size=chunk_size, workers=workers, resume=resume,
                                 keep_checkpoints=keep_checkpoints, shift_margin=shift_margin, progress=progress,
                                 allow_unverified_wrapper=allow_unverified_wrapper)
    except ScoringInterrupted:
        raise
    except KeyboardInterrupt as exc:
        raise ScoringInterrupted(state.stage, state.done, state.total, state.checkpoints, work, resume) from exc


def _score_locked(model: str | BatchModel, cohort: str | Path, out: Path, fmt: str, work: Path, store: Path,
                  notes: list[str], state: _Progress, t0: float, *, horizons: Sequence[float] | None,
                  risk_groups: str, chunk_size: int, workers: int | None, resume: bool, keep_checkpoints: bool,
                  shift_margin: float, progress: bool, allow_unverified_wrapper: bool) -> ScoreResult:
    """:func:`score_cohort` once its folders are locked."""
    timings: dict[str, float] = {}
    collected: list[warnings.WarningMessage] = []
    with _collect_warnings(notes, collected):
        bm = model if isinstance(model, BatchModel) else load_batch_model(model, progress=progress,
                                                                          warn_unverified=False)
        if bm.info.get("wrapper_ok") is False:
            if not allow_unverified_wrapper:
                raise UnverifiedWrapperError(f"refusing {bm.uri}: {_unverified_wrapper_text(bm.info)}. To score it "
                                             "anyway, pass --allow-unverified-wrapper (allow_unverified_wrapper=True "
                                             "in Python)")
            notes.append(f"{_unverified_wrapper_text(bm.info)}; scored anyway (--allow-unverified-wrapper)")
        if horizons is not None:
            bm = BatchModel(bm.uri, bm.model, bm.manifest, {**bm.settings, "horizons": [float(h) for h in horizons]},
                            bm.identity, bm.info, bm.output_schema)
        timings["load"] = time.perf_counter() - t0
        state.stage = "reading the cohort"
        prep = prepare_cohort(cohort, work / "cohort_view")
        notes += prep.warnings
        notes += check_fit(bm, prep)
        if "risk_cutoffs" not in bm.settings:
            notes.append("the model carries no training risk cut-offs (logged before they were stored): risk_group "
                         "is left empty; re-log it with omics_risk.scoring.pyfunc.log_model to get risk groups")
        if "feature_ranges" not in bm.settings:
            notes.append("the model carries no training feature ranges: no distribution-shift check")
        timings["prepare"] = time.perf_counter() - t0 - timings["load"]
        t1 = time.perf_counter()
        state.stage = "extracting features"
        extracted, more = _extract(bm, prep, store, workers, progress)
        notes += more
        if extracted:
            notes += _check_store(bm, store, extracted)
        images = _ChunkImages(bm, prep.cohort, work / "ct_tensors") if bm.images else None
        if images is not None:
            images.prefill(workers, progress)
        timings["extract"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        shift = ShiftCheck(bm.settings.get("feature_ranges"), shift_margin)
        scorer = _Scorer(bm, prep, store, extracted, bm.horizons, risk_groups, shift, images)

        options = {"horizons": bm.horizons, "risk_groups": risk_groups, "chunk_size": chunk_size,
                   "margin": shift_margin, "version": _CHECKPOINT_VERSION, "format": fmt}
        key = _content_key(bm, prep, store, extracted, options)
        ckpt = work / "checkpoints" / key
        if ckpt.exists() and not resume:
            shutil.rmtree(ckpt)
        ckpt.mkdir(parents=True, exist_ok=True)
        patients = prep.order
        chunks = [patients[i:i + chunk_size] for i in range(0, len(patients), chunk_size)]
        state.stage, state.total, state.checkpoints = "scoring", len(chunks), ckpt
        resumed = 0
        bar = progress_bar(total=len(patients), desc="scoring", unit="patient", disable=not progress)
        try:
            for i, chunk in enumerate(chunks):
                part, chunk_state = ckpt / f"chunk-{i:06d}.parquet", ckpt / f"chunk-{i:06d}.json"
                if part.is_file() and chunk_state.is_file():
                    shift.merge_state(json.loads(chunk_state.read_text())["shift"])
                    resumed += 1
                else:
                    before = shift.state()
                    rows = scorer.run(chunk)
                    delta = _state_delta(shift.state(), before)
                    atomic_write_text(chunk_state, json.dumps({"patients": len(chunk), "shift": delta}))
                    _atomic_write_parquet(rows, part, scorer.schema)
                state.done = i + 1
                bar.update(len(chunk))
        finally:
            bar.close()
        timings["score"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    state.stage = "writing the output"
    counts = _write_output(ckpt, len(chunks), out, fmt, scorer.schema)
    report = shift.report() if shift.enabled else None
    if report is not None and report.shifted:
        warnings.warn("\n".join(report.messages()), stacklevel=3)
    from_warnings = {warning_text(w) for w in collected}
    for n in notes:
        if n not in from_warnings:
            warnings.warn(n, stacklevel=3)
    _reemit(collected)  # the warnings caught while scoring, with their own category and place
    timings["write"] = time.perf_counter() - t1
    result = ScoreResult(out=out, n_patients=len(patients), counts=counts, shift=report, warnings=notes,
                         model={"uri": bm.uri, "identity": bm.identity, **bm.info}, chunks=len(chunks),
                         resumed_chunks=resumed, seconds=time.perf_counter() - t0, timings=timings)
    result.report_path = out.with_name(out.name + ".report.json")
    atomic_write_text(result.report_path, json.dumps(
        {"out": str(out), "cohort": str(prep.source), "model": result.model, "n_patients": len(patients),
         "counts": counts, "warnings": notes, "shift": report.to_dict() if report is not None else None,
         "horizons": bm.horizons, "risk_groups": risk_groups,
         "risk_cutoffs": (bm.settings.get("risk_cutoffs") or {}).get(risk_groups), "timings": timings},
        indent=1, default=str))
    if not keep_checkpoints:  # only this run's own key: the lock keeps every other run out of this folder
        shutil.rmtree(ckpt, ignore_errors=True)
    return result


def _state_delta(after: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    """The shift counts one chunk added (so chunks can be merged in any resumed run)."""
    return {"n_patients": after["n_patients"] - before["n_patients"],
            "counts": [a - b for a, b in zip(after["counts"], before["counts"], strict=True)],
            "observed": [a - b for a, b in zip(after["observed"], before["observed"], strict=True)],
            "extreme": after["extreme"]}


def _write_output(ckpt: Path, n_chunks: int, out: Path, fmt: str, schema: Any) -> dict[str, int]:
    """Concatenate the chunk files into ``out`` through a temporary file (one chunk in memory at a time)."""
    import pyarrow.parquet as pq

    counts = dict.fromkeys(STATUSES, 0)
    with atomic_path(out) as tmp, contextlib.ExitStack() as stack:
        writer = stack.enter_context(pq.ParquetWriter(tmp, schema)) if fmt == ".parquet" else None
        fh = stack.enter_context(open(tmp, "w", newline="")) if writer is None else None
        for i in range(n_chunks):
            table = pq.read_table(ckpt / f"chunk-{i:06d}.parquet", schema=schema)
            for s, k in pd.Series(table.column("status").to_pylist()).value_counts().items():
                counts[str(s)] = counts.get(str(s), 0) + int(k)
            if writer is not None:
                writer.write_table(table)
            else:
                table.to_pandas().to_csv(fh, index=False, header=(i == 0))
        if n_chunks == 0 and fh is not None:
            pd.DataFrame(columns=schema.names).to_csv(fh, index=False)
    return counts


# ------------------------------------------------------------------------------------------------ Spark feature table
def write_feature_table(
    model: str | BatchModel,
    cohort: str | Path,
    out: str | Path,
    *,
    features_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    chunk_size: int = 1024,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write the flat scoring frame of every scorable patient of ``cohort`` to Parquet, for Spark's ``spark_udf``.

    The same leniency, fit checks and extraction as :func:`score_cohort`; one row per patient with clinical data,
    columns ``patient_id`` then the model's input columns (modalities a patient lacks are null). Written atomically.
    """
    out = Path(out)
    bm = model if isinstance(model, BatchModel) else load_batch_model(model, progress=progress)
    work = Path(work_dir) if work_dir is not None else _default_work_dir(out)
    store = Path(features_dir) if features_dir is not None else work / "features"
    notes: list[str] = []
    with contextlib.ExitStack() as locks:  # the same folders as score_cohort: never two runs in them at once
        locks.enter_context(_folder_lock(work, "work folder", notes))
        if not _within(store, work):
            locks.enter_context(_folder_lock(store, "feature store", notes))
        for n in notes:
            warnings.warn(n, stacklevel=2)
        return _write_feature_table(bm, cohort, out, work, store, chunk_size, workers, progress)


def _write_feature_table(bm: BatchModel, cohort: str | Path, out: Path, work: Path, store: Path, chunk_size: int,
                         workers: int | None, progress: bool) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    prep = prepare_cohort(cohort, work / "cohort_view")
    check_fit(bm, prep)
    extracted, _ = _extract(bm, prep, store, workers, progress)
    if extracted:
        _check_store(bm, store, extracted)
    scorer = _Scorer(bm, prep, store, extracted, bm.horizons, "tertiles", ShiftCheck(None), None)
    patients = [p for p in prep.order if p not in prep.failed and p in scorer.clinical.index]
    fields = [pa.field(ID_COLUMN, pa.string())]
    fields += [pa.field(c, pa.float64() if k == "double" else pa.string())
               for c, k in zip(bm.manifest.clinical_columns(), bm.manifest.clinical.values(), strict=True)]
    fields += [pa.field(c, pa.float64()) for m in bm.tabular for c in bm.manifest.modality_columns(m)]
    schema = pa.schema(fields)
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for i in progress_bar(range(0, len(patients), chunk_size), desc="feature table", unit="chunk",
                              disable=not progress):
            frame, _ = scorer.frame(patients[i:i + chunk_size])
            writer.write_table(pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False))
    return out

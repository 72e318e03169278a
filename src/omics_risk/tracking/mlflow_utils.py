"""MLflow tracking for training jobs: where runs go, the run tree of a job, and logging that cannot leak patient ids.

Run tree of one Hydra job (one CV experiment)::

    sweep parent (hydra_callbacks.MlflowSweepCallback, multirun only)
    └── job run            start_run_tree(...)      config, params, CV summary metrics
        └── model run      start_model_run("fused")  model hyper-parameters, per-model CV metrics
            └── fold run   start_fold_run(k)         per-epoch curves (train/loss, val/cindex), fold metrics

Every name and tag that goes through these helpers (run names, param names and values, metric names, tag names and
values) is checked against the patient identifiers registered with :func:`protect_identifiers` (or passed to
:func:`start_run_tree`), so a per-patient metric such as ``risk/ID0042`` raises :class:`IdentifierLeakError`
instead of reaching the tracking server. Per-patient tables go in as artifacts through :func:`log_patient_table`, which
replaces the ids by the project's keyed pseudonyms (:mod:`omics_risk.privacy`).

Runs opened by the helpers end ``FAILED`` when the block raises (``KILLED`` on Ctrl-C), so a failed sweep job never
leaves an active run behind for the next one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from hydra.core.hydra_config import HydraConfig
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH
from omegaconf import DictConfig, ListConfig, OmegaConf

from omics_risk.privacy import Pseudonymiser
from omics_risk.progress import quiet_mlflow_bars
from omics_risk.tracking.identifiers import (
    IdentifierGuard,
    IdentifierLeakError,
    assert_no_identifiers,
    check_identifiers,
    clear_protected_identifiers,
    protect_identifiers,
)
from omics_risk.tracking.sweep import sweep_parent_for_job
from omics_risk.tracking.ui_view import EXPERIMENT_KIND_TAG, experiment_url, set_experiment_ui_tags

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "AUTO",
    "LEVEL_TAG",
    "IdentifierGuard",
    "IdentifierLeakError",
    "assert_no_identifiers",
    "check_identifiers",
    "clear_protected_identifiers",
    "configured_pseudonymiser",
    "end_run_on_failure",
    "experiment_url",
    "fit_length",
    "flatten_params",
    "fold_run_name",
    "hydra_tags",
    "log_config",
    "log_patient_table",
    "protect_identifiers",
    "safe_log_metrics",
    "safe_log_params",
    "safe_set_tags",
    "setup_experiment",
    "start_fold_run",
    "start_model_run",
    "start_run_tree",
    "tracking_uri",
]

log = logging.getLogger(__name__)

DB_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
#: Tag marking a run's place in the tree: ``sweep``, ``job``, ``model`` or ``fold``.
LEVEL_TAG = "omics_risk.level"
#: Sentinel of :func:`start_run_tree`: find the sweep parent run of this Hydra job, if any.
AUTO = "auto"


# --- where runs go ------------------------------------------------------------------------------------------------
def tracking_uri(cfg_uri: str | None, root: str | Path) -> str:
    """The tracking URI: ``cfg_uri`` if set, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<root>/mlflow.db``.

    A path to a ``.db`` file is turned into a SQLite URI; server URIs (``http(s)://host:5000``) pass through.
    The model registry needs a database or server backend, so the default is SQLite, never ``./mlruns``.
    """
    for candidate in (cfg_uri, os.environ.get("MLFLOW_TRACKING_URI")):
        if candidate is not None and str(candidate).strip():
            uri = str(candidate).strip()
            if "://" not in uri and uri.endswith(".db"):
                return f"sqlite:///{Path(uri).expanduser().resolve()}"
            return uri
    return f"sqlite:///{(Path(root).expanduser().resolve() / DB_FILE)}"


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).expanduser().resolve()


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite-backed experiment live next to the database, not in ``./mlruns`` of whatever cwd."""
    db = _sqlite_path(uri)
    if db is None:
        return None  # a server decides (--artifacts-destination / --default-artifact-root)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment).strip("_") or "experiment"
    return (db.parent / ARTIFACT_DIR / slug).as_uri()


def setup_experiment(name: str, uri: str) -> str:
    """Point MLflow at ``uri`` and make ``name`` the active experiment (created, or restored if deleted), marked as
    a model-training experiment with the headline runs-table view (:mod:`omics_risk.tracking.ui_view`).

    Returns the experiment id.
    """
    quiet_mlflow_bars()  # MLflow's per-call artifact bars flood job logs
    db = _sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = client.create_experiment(name, artifact_location=_artifact_location(uri, name))
        except MlflowException:  # created concurrently by another job of the sweep
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp_id)
    if exp is None or EXPERIMENT_KIND_TAG not in exp.tags:
        set_experiment_ui_tags(client, exp_id)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


# --- params -------------------------------------------------------------------------------------------------------
def fit_length(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, ending in a hash of the whole so distinct long values stay distinct."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    suffix = f"...[sha1:{digest}]"
    return text[: limit - len(suffix)] + suffix


def _scalar_text(value: Any) -> str:
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def flatten_params(cfg: Any, sep: str = ".") -> dict[str, str]:
    """Leaf values of a (nested) config as MLflow params: ``{"model.fusion.dim": "64", "data.modalities": '["ct"]'}``.

    Accepts a dict or an OmegaConf ``DictConfig`` (resolved first). Lists are JSON, empty dicts ``{}``; values
    longer than MLflow's param limit are cut and end with a hash of the full value.
    """
    if isinstance(cfg, DictConfig | ListConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{sep}{k}" if prefix else str(k))
        else:
            out[fit_length(prefix, MAX_ENTITY_KEY_LENGTH)] = fit_length(_scalar_text(node), MAX_PARAM_VAL_LENGTH)

    if not isinstance(cfg, Mapping):
        raise TypeError(f"flatten_params takes a mapping or DictConfig, got {type(cfg).__name__}")
    walk(cfg, "")
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- guarded logging ----------------------------------------------------------------------------------------------
def _require_run(run_id: str | None) -> None:
    if run_id is None and mlflow.active_run() is None:
        raise RuntimeError("no active MLflow run: open one with start_run_tree(...) or pass run_id=")


def safe_log_params(params: Mapping[str, Any], *, run_id: str | None = None) -> None:
    """Log params after the identifier check (names, and values that are not plain numbers)."""
    _require_run(run_id)
    clean = {
        fit_length(str(k), MAX_ENTITY_KEY_LENGTH): fit_length(_scalar_text(v), MAX_PARAM_VAL_LENGTH)
        for k, v in params.items()
    }
    check_identifiers(clean, [v for v in clean.values() if not _is_number(v)], what="param")
    if clean:
        mlflow.log_params(clean, run_id=run_id)


def safe_set_tags(tags: Mapping[str, Any], *, run_id: str | None = None) -> None:
    """Set tags after the identifier check (names and values)."""
    _require_run(run_id)
    clean = {str(k): fit_length(str(v), MAX_TAG_VAL_LENGTH) for k, v in tags.items()}
    check_identifiers(clean, clean.values(), what="tag")
    if not clean:
        return
    if run_id is None:
        mlflow.set_tags(clean)
    else:
        MlflowClient().log_batch(run_id, tags=[RunTag(k, v) for k, v in clean.items()])


def _as_float(name: str, value: Any) -> float:
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars and 1-element arrays
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"metric '{name}' must be a number, got {type(value).__name__}: {value!r}") from None


def safe_log_metrics(metrics: Mapping[str, Any], step: int | None = None, *, run_id: str | None = None) -> None:
    """Log metrics (numbers, numpy or torch scalars) at ``step`` after the identifier check on their names.

    Names follow ``<split>/<metric>``: ``train/loss``, ``val/cindex``, ``test/ibs``. Non-finite values are logged
    as they are (a diverged loss should be visible), with a debug message.
    """
    _require_run(run_id)
    clean = {str(k): _as_float(str(k), v) for k, v in metrics.items()}
    check_identifiers(clean, what="metric")
    bad = [k for k, v in clean.items() if not math.isfinite(v)]
    if bad:
        log.debug("non-finite metric value(s) at step %s: %s", step, bad)
    if clean:
        mlflow.log_metrics(clean, step=step, run_id=run_id)


def log_patient_table(table: pd.DataFrame, artifact_file: str, *, pseudonyms: Pseudonymiser | None = None,
                      column: str = "patient_id", run_id: str | None = None) -> pd.DataFrame:
    """Log a per-patient table as the artifact ``artifact_file`` (``.parquet`` or ``.csv``, may hold folders) with
    its ``column`` of patient ids replaced by keyed pseudonyms; returns the table as logged.

    ``pseudonyms`` defaults to the project's of the current tracking URI
    (:meth:`omics_risk.privacy.Pseudonymiser.for_store`). Unless it keeps raw ids (the opt-in), every text cell of
    the other columns (and every column name) is checked against the registered identifiers first, so a raw id left
    elsewhere (a sample id, a note) raises :class:`IdentifierLeakError` instead of reaching the artifact store.
    (The pseudonyms themselves are not checked: a comparison registers the pseudonyms it reads as identifiers, so
    that they never become names or tags.)
    """
    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise RuntimeError(f"no active MLflow run to log {artifact_file} to: pass run_id=")
        run_id = active.info.run_id
    suffix = Path(artifact_file).suffix
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"per-patient tables are logged as .parquet or .csv, not '{artifact_file}'")
    if column not in table.columns:
        raise ValueError(f"the table to log as {artifact_file} has no '{column}' column")
    pseudonyms = pseudonyms or Pseudonymiser.for_store(mlflow.get_tracking_uri())
    out = table.copy()
    out[column] = pseudonyms(out[column])
    if not pseudonyms.raw:  # the id column holds pseudonyms now; any other text must hold no registered id
        text = out.drop(columns=column).select_dtypes(include=["object", "string", "category"])
        check_identifiers(values=(v for col in text.columns for v in text[col].dropna().unique()),
                          what=f"{artifact_file} cell")
        check_identifiers([str(c) for c in out.columns], what=f"{artifact_file} column")
    folder, name = os.path.split(artifact_file)
    with tempfile.TemporaryDirectory(prefix="omics_risk_table_") as tmp:
        path = Path(tmp) / name
        if suffix == ".parquet":
            out.to_parquet(path, index=False)
        else:
            out.to_csv(path, index=False)
        MlflowClient().log_artifact(run_id, str(path), folder or None)
    return out


def configured_pseudonymiser(cfg: Any, tracking_uri: str) -> Pseudonymiser:
    """The ids per-patient artifacts carry, as a ``train.py`` / ``evaluate.py`` config asks: the project's keyed
    pseudonyms, or the raw ids with ``tracking.raw_ids=true``; the key file is ``tracking.pseudonym_key_file``, else
    :func:`omics_risk.privacy.resolve_key_file`'s default for the store (the project root ``paths.root_dir``)."""
    return Pseudonymiser.for_store(tracking_uri, root=Path(cfg.paths.root_dir),
                                   raw=bool(OmegaConf.select(cfg, "tracking.raw_ids", default=False)),
                                   key_file=OmegaConf.select(cfg, "tracking.pseudonym_key_file", default=None))


# --- config -------------------------------------------------------------------------------------------------------
def _hydra_config() -> Any | None:
    return HydraConfig.get() if HydraConfig.initialized() else None


def hydra_tags() -> dict[str, str]:
    """Tags describing the current Hydra job (empty outside Hydra): name, override dirname, job number, output dir."""
    hc = _hydra_config()
    if hc is None:
        return {}
    tags = {
        "hydra.job.name": OmegaConf.select(hc, "job.name", default=None),
        "hydra.job.override_dirname": OmegaConf.select(hc, "job.override_dirname", default=None),
        "hydra.job.num": OmegaConf.select(hc, "job.num", default=None),
        "hydra.mode": getattr(hc.get("mode"), "name", hc.get("mode")),
        "hydra.runtime.output_dir": OmegaConf.select(hc, "runtime.output_dir", default=None),
    }
    return {k: str(v) for k, v in tags.items() if v not in (None, "")}


def log_config(cfg: Any, hydra_output_dir: str | Path | None = None, *, params: bool = True) -> None:
    """Log the resolved config (``config/config_resolved.yaml``), the job's ``.hydra`` folder and flat params.

    ``hydra_output_dir`` defaults to the running Hydra job's output directory. The config's keys and values
    pass the identifier check first, so a config listing patient ids is refused as a whole.
    """
    _require_run(None)
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    flat = flatten_params(container)
    check_identifiers(flat, [v for v in flat.values() if not _is_number(v)], what="config key")
    mlflow.log_dict(container, "config/config_resolved.yaml")
    if hydra_output_dir is None:
        hc = _hydra_config()
        hydra_output_dir = hc.runtime.output_dir if hc is not None else None
    if hydra_output_dir is not None and (Path(hydra_output_dir) / ".hydra").is_dir():
        mlflow.log_artifacts(str(Path(hydra_output_dir) / ".hydra"), "hydra")
    if params:
        safe_log_params(flat)


# --- the run tree -------------------------------------------------------------------------------------------------
@contextmanager
def end_run_on_failure() -> Iterator[None]:
    """End every run opened inside the block: ``FAILED`` on an exception, ``KILLED`` on Ctrl-C, else ``FINISHED``.

    Runs that were already active when the block started are left alone.
    """
    outer = mlflow.active_run()
    outer_id = outer.info.run_id if outer is not None else None

    def close(status: str) -> None:
        while (run := mlflow.active_run()) is not None and run.info.run_id != outer_id:
            mlflow.end_run(status=status)

    try:
        yield
    except KeyboardInterrupt:
        close("KILLED")
        raise
    except BaseException:
        close("FAILED")
        raise
    close("FINISHED")


@contextmanager
def start_run_tree(
    experiment: str,
    *,
    uri: str | None = None,
    run_name: str | None = None,
    cfg: Any = None,
    hydra_output_dir: str | Path | None = None,
    parent_run_id: str | None = AUTO,
    tags: Mapping[str, Any] | None = None,
    patient_ids: Iterable[Any] | None = None,
    log_params: bool = True,
) -> Iterator[mlflow.ActiveRun]:
    """Open the job run, the root of this job's run tree (see the module docstring), and close it on exit.

    Args:
        experiment: MLflow experiment name (ignored under a sweep: jobs join the sweep parent's experiment).
        uri: tracking URI (default :func:`tracking_uri` with the current directory as root).
        run_name: e.g. ``fused-cv``; defaults to the Hydra override dirname in a sweep.
        cfg: the job's config; logged with :func:`log_config` when given.
        parent_run_id: ``"auto"`` nests under the Hydra sweep parent run when this is a multirun job
            (:func:`omics_risk.tracking.sweep.parent_run_id_for_job`); ``None`` for a top-level run;
            or an explicit run id.
        patient_ids: identifiers to protect (:func:`protect_identifiers`) before anything is logged.
    """
    if patient_ids is not None:
        protect_identifiers(patient_ids)
    uri = uri or tracking_uri(None, Path.cwd())
    if parent_run_id == AUTO:
        sweep = sweep_parent_for_job()
        parent_run_id = sweep.run_id if sweep is not None else None
        if sweep is not None and sweep.tracking_uri and sweep.tracking_uri != uri:
            log.warning(
                "job tracking URI %s differs from the sweep's %s: logging to the sweep's", uri, sweep.tracking_uri
            )
            uri = sweep.tracking_uri
    active = mlflow.active_run()
    if parent_run_id and active is not None and active.info.run_id != parent_run_id:
        raise RuntimeError(
            f"run {active.info.run_id} is still active, so this job cannot nest under its sweep parent "
            f"{parent_run_id}: a previous job did not end its run (wrap it in end_run_on_failure())"
        )
    if parent_run_id:
        mlflow.set_tracking_uri(uri)
        parent = MlflowClient(uri).get_run(parent_run_id)
        exp_id = parent.info.experiment_id
        if parent.info.status != "RUNNING":
            raise RuntimeError(f"sweep parent run {parent_run_id} is {parent.info.status}, not RUNNING")
        mlflow.set_experiment(experiment_id=exp_id)
    else:
        exp_id = setup_experiment(experiment, uri)
    all_tags = {**hydra_tags(), LEVEL_TAG: "job", **{str(k): str(v) for k, v in (tags or {}).items()}}
    if run_name is None and all_tags.get("hydra.job.override_dirname"):
        run_name = all_tags["hydra.job.override_dirname"]
    check_identifiers([run_name] if run_name else [], what="run name")
    check_identifiers(all_tags, all_tags.values(), what="tag")
    with end_run_on_failure():
        run = mlflow.start_run(
            run_name=fit_length(run_name, MAX_TAG_VAL_LENGTH) if run_name else None,
            experiment_id=exp_id,
            parent_run_id=parent_run_id or None,
            nested=active is not None,
            tags=all_tags,
        )
        if cfg is not None:
            log_config(cfg, hydra_output_dir, params=log_params)
        yield run


def _nested(run_name: str, level: str, tags: Mapping[str, Any], params: Mapping[str, Any] | None) -> Iterator[Any]:
    if mlflow.active_run() is None:
        raise RuntimeError(f"a {level} run nests under the job run: open start_run_tree(...) first")
    all_tags = {LEVEL_TAG: level, **{str(k): str(v) for k, v in tags.items()}}
    check_identifiers([run_name], what="run name")
    check_identifiers(all_tags, all_tags.values(), what="tag")
    with end_run_on_failure():
        run = mlflow.start_run(run_name=run_name, nested=True, tags=all_tags)
        if params:
            safe_log_params(params)
        yield run


@contextmanager
def start_model_run(
    model_name: str, *, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None
) -> Iterator[mlflow.ActiveRun]:
    """A nested run for one model of the job (``fused``, ``clinical_cox``, ...), tagged ``model=<name>``.

    ``params`` (e.g. ``model.describe()``) are logged on it.
    """
    yield from _nested(model_name, "model", {"model": model_name, **(tags or {})}, params)


@contextmanager
def start_fold_run(
    fold: int | str, *, tags: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """A nested run for one cross-validation fold, under the active model run (inherits its ``model`` tag).

    ``name`` is the run name shown in the UI (default ``<model>/fold<fold>``; training uses :func:`fold_run_name`).
    Log the per-epoch curves here: ``safe_log_metrics({"train/loss": l, "val/cindex": c}, step=epoch)``.
    """
    active = mlflow.active_run()
    model = active.data.tags.get("model") if active is not None else None
    name = name or (f"{model}/fold{fold}" if model else f"fold{fold}")
    base = {"fold": str(fold), **({"model": model} if model else {})}
    yield from _nested(name, "fold", {**base, **(tags or {})}, params)


def fold_run_name(model: str, fold: int, folds: int, repeat: int, repeats: int) -> str:
    """A fold run's name as a person reads it: ``fused · fold 5 of 5`` (``, repeat 2 of 3`` with several repeats);
    ``fold`` and ``repeat`` are 0-based, the name counts from 1. Unique within a model run."""
    name = f"{model} · fold {fold + 1} of {folds}"
    return name + (f", repeat {repeat + 1} of {repeats}" if repeats > 1 else "")

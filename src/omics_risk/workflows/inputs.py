"""One path from a cohort to model inputs, shared by training, external validation and scoring.

A cohort is parsed once (:func:`~omics_risk.data.contract.load_cohort`, by the caller) and handed to
:func:`model_inputs`, which extracts its features into the feature store (cached), joins them with the clinical table
and the endpoint (:class:`~omics_risk.data.multimodal.MultimodalData`) and, for models that encode CT images, builds
the CT image provider (:class:`~omics_risk.models.fused.CTImageStore`) over the CT tensor cache. Scoring works on a
repaired view of the cohort, chunk by chunk, and uses the same pieces (:func:`extract_features`,
:func:`prefill_ct_cache`).

With a prediction time the data hold only what was measured at or before it, and :func:`check_no_look_ahead`
asserts so independently of how the tables were built, before any model sees them. Longitudinal features at the
prediction time (``task.longitudinal``, :mod:`omics_risk.workflows.longitudinal_inputs`) become model inputs of their
own, one table ``<modality>_dynamics`` per modality, that every model uses like any other modality.

torch and MONAI (the CT preprocessing, the image store) are imported only when a model encodes CT images: this module
is on the path of ``omics-risk score``'s quick input checks.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from omics_risk.data.contract import Cohort
from omics_risk.data.multimodal import MultimodalData, load_multimodal, stored_modalities
from omics_risk.data.timing import SLOT_SEP, PredictionTime, sample_features
from omics_risk.features.extract import ExtractSummary, extract_cohort
from omics_risk.progress import progress_bar
from omics_risk.workflows.longitudinal_inputs import (
    DYNAMICS_SUFFIX,
    LongitudinalInput,
    add_longitudinal,
    dynamics_name,
    longitudinal_inputs,
)

log = logging.getLogger(__name__)

__all__ = ["DYNAMICS_SUFFIX", "CTInputs", "LongitudinalInput", "ModelInputs", "add_longitudinal", "check_ct_cohort",
           "check_no_look_ahead", "ct_timepoints_of", "dynamics_name", "extract_features", "longitudinal_inputs",
           "model_inputs", "prediction_time_summary", "prefill_ct_cache"]


# ------------------------------------------------------------------------------------------------ the model
# ------------------------------------------------------------------------------------------------ CT images
def ct_timepoints_of(cohort: Cohort, modality: str = "ct") -> list[str]:
    """The timepoints of a cohort's CT samples, earliest first (by the median sample day of each timepoint)."""
    rows = cohort.samples_of(modality)
    if rows.empty:
        return []
    day = pd.to_numeric(rows["day"], errors="coerce") if "day" in rows else pd.Series(np.nan, index=rows.index)
    order = day.groupby(rows["timepoint"].astype(str)).median().fillna(np.inf)
    return sorted(order.index, key=lambda tp: (order[tp], tp))


def check_ct_cohort(cohort: Cohort, modality: str, timepoints: list[str] | None, what: str) -> list[str]:
    """The cohort's CT timepoints; an error when the modality is no image modality or lacks a wanted timepoint."""
    spec = cohort.spec.modality(modality)
    fmt = getattr(spec, "format", None) if spec is not None else None
    if fmt != "image":
        raise ValueError(f"model.estimator.use_ct_images needs an image modality '{modality}' in the {what} cohort's "
                         f"cohort.yaml (found: {fmt or 'none'}); set model.estimator.ct_modality or use model=fused")
    found = ct_timepoints_of(cohort, modality)
    if not found:
        raise ValueError(f"the {what} cohort ({cohort.root}) has no '{modality}' sample: nothing to train the CT "
                         "encoder on; use model=fused")
    missing = [tp for tp in (timepoints or []) if tp not in found]
    if missing:
        raise ValueError(f"model.estimator.ct_timepoints {missing} are not CT timepoints of the {what} cohort "
                         f"(has: {', '.join(found)}); set model.estimator.ct_timepoints=null to use the cohort's")
    return found


def _preprocess_scan(ct_cfg: Any, cache_dir: str, image: str, mask: str) -> str | None:
    """Fill the tensor cache for one scan (runs in a worker process); the error message if it cannot be read."""
    from omics_risk.features.ct import CTTensorCache  # lazy: torch and MONAI, only for CT-image models

    try:
        CTTensorCache(ct_cfg, cache_dir)(image, mask)
    except Exception as exc:  # reported per scan; the patient then lacks that CT
        return f"{type(exc).__name__}: {exc}"
    return None


def prefill_ct_cache(ct_cfg: Any, cache_dir: Path, scans: Sequence[tuple[str, str]], *, workers: int | None,
                     progress: bool, desc: str = "CT tensors", what: str | None = None,
                     skip_unreadable: bool = False) -> list[tuple[str, str]]:
    """Preprocess the (image, mask) scans not in the CT tensor cache yet, in parallel processes.

    Returns ``(image, error)`` for each scan that failed. ``skip_unreadable``: a scan whose files cannot be read to
    compute its cache key is left out (the caller reports it later) instead of raising ``OSError``. ``what``: the
    cohort's role, for the log line.
    """
    from omics_risk.features.ct import CTTensorCache  # lazy: torch and MONAI, only for CT-image models

    cache = CTTensorCache(ct_cfg, cache_dir)
    todo = []
    for image, mask in scans:
        try:
            if not (cache.dir / f"{cache.key(image, mask)}.pt").is_file():
                todo.append((image, mask))
        except OSError:  # a missing file
            if not skip_unreadable:
                raise
    if not todo:
        return []
    n_jobs = max(1, min(int(workers or os.cpu_count() or 1), len(todo)))
    if what is not None:
        log.info("preprocessing %d of %d CT scans of the %s cohort into %s (%d workers)", len(todo), len(scans),
                 what, cache.dir, n_jobs)
    jobs = (delayed(_preprocess_scan)(ct_cfg, str(cache_dir), image, mask) for image, mask in todo)
    errors = Parallel(n_jobs=n_jobs)(progress_bar(jobs, total=len(todo), desc=desc, unit="scan",
                                                  disable=not progress))
    return [(s[0], e) for s, e in zip(todo, errors, strict=True) if e is not None]


@dataclass(frozen=True)
class CTInputs:
    """How a model's CT images are provided: the image modality, the preprocessing and the tensor cache.

    Training checks the cohort (``check``: an image modality with the wanted ``timepoints``), preprocesses every scan
    first (``prefill``) and holds every patient's tensors in memory (``preload``), so that epochs read no file;
    external validation reads the tensors as the model asks for them.
    """

    modality: str = "ct"
    config: Any = None  # a CTConfig, or the mapping a logged model stores (None: the defaults)
    cache_dir: Path | None = None  # default: <feature store>/cache/ct_tensors
    timepoints: Sequence[str] | None = None  # wanted timepoints (checked against the cohort with ``check``)
    check: bool = False
    prefill: bool = False
    preload: bool = False


def ct_images(cohort: Cohort, store: Path, ct: CTInputs, *, what: str = "training", workers: int | None = None,
              progress: bool = False) -> Any:
    """The cohort's CT tensors as an ``images=`` provider (see :class:`CTInputs`)."""
    from omics_risk.features.ct import CTTensorCache  # lazy: torch and MONAI, only for CT-image models
    from omics_risk.models.fused import CTImageStore  # lazy: torch, only for CT-image models

    if ct.check:
        check_ct_cohort(cohort, ct.modality, list(ct.timepoints) if ct.timepoints else None, what)
    cache_dir = ct.cache_dir if ct.cache_dir is not None else store / "cache" / "ct_tensors"
    if not ct.prefill and not ct.preload:
        return CTImageStore(cohort, cfg=ct.config, cache_dir=cache_dir, modality=ct.modality)
    rows = cohort.samples_of(ct.modality)
    scans = [(str(cohort.path(r.path)), str(cohort.path(r.mask_path))) for r in rows.itertuples()]
    if ct.prefill:
        failed = prefill_ct_cache(ct.config, cache_dir, scans, workers=workers, progress=progress,
                                  desc=f"CT tensors ({what})", what=what)
        if failed:
            shown = "; ".join(f"{Path(f).name}: {e}" for f, e in failed[:3])
            warnings.warn(f"{len(failed)} of {len(scans)} CT scans of the {what} cohort cannot be preprocessed and "
                          f"are left out ({shown}{' ...' if len(failed) > 3 else ''})", stacklevel=2)
    images = CTImageStore(cohort, cfg=ct.config, cache_dir=cache_dir, modality=ct.modality)
    if ct.preload:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # failures were reported above, once
            for pid in progress_bar(list(images), desc=f"loading CT ({what})", unit="patient", disable=not progress):
                images[pid]
        log.info("CT tensors of %d patients (%d scans) of the %s cohort from %s", len(images), len(scans), what,
                 CTTensorCache(ct.config, cache_dir).dir)
    return images


# ------------------------------------------------------------------------------------------------ features and data
def extract_features(cohort: Cohort, store: Path, *, config: Mapping[str, Any] | None,
                     modalities: Sequence[str] | None = None, workers: int | None = None,
                     progress: bool = False) -> ExtractSummary:
    """Extract ``modalities`` (default: all) of the cohort into the feature store (cached per sample)."""
    return extract_cohort(cohort, store, config=config, modalities=modalities, workers=workers,
                          progress=progress)


@dataclass
class ModelInputs:
    """What a model is fitted on or scores: the cohort, its feature store, the joined data and the CT images."""

    cohort: Cohort
    store: Path
    data: MultimodalData
    images: Any = None  # the CT image provider, or None for a model without CT images
    summary: ExtractSummary | None = None  # what the extraction did (None: the store was only read)
    notes: list[str] = field(default_factory=list)  # what a report should say about these inputs
    n_unlabelled: int = 0  # patients left out for lacking the endpoint's outcome
    ct_timepoints: list[str] | None = None  # the cohort's CT timepoints, for a CT-image model
    prediction_time: PredictionTime | None = None  # None: every sample, whatever its date (no prediction time)


def model_inputs(cohort: Cohort, store: str | Path, *, extract: bool = True,
                 extract_config: Mapping[str, Any] | None = None, extract_modalities: Sequence[str] | None = None,
                 modalities: Sequence[str] | None = None, only_stored: bool = False, endpoint: str | None = None,
                 response: str | None = None, drop_unlabelled: bool = True, ct: CTInputs | None = None,
                 what: str = "training", workers: int | None = None, progress: bool = False,
                 prediction_time: PredictionTime | None = None,
                 longitudinal: Mapping[str, Any] | None = None) -> ModelInputs:
    """Turn a loaded cohort into model inputs: features (extracted with ``extract_config`` when ``extract``, else
    read from the store), :class:`~omics_risk.data.multimodal.MultimodalData` and the CT image provider.

    Args:
        cohort: the cohort, parsed once by the caller.
        store: its feature store.
        extract / extract_config / extract_modalities: fill the store first (``extract_modalities``: which; default
            all), with these extractor settings (None: the package defaults).
        modalities / only_stored: the modality tables to join (None: all in the store); ``only_stored`` leaves out
            those the store does not hold (a model's modality this cohort lacks).
        endpoint / response / drop_unlabelled: the outcome columns (see
            :func:`~omics_risk.data.multimodal.load_multimodal`).
        ct: how to provide CT images (None: the model encodes none).
        what: the cohort's role (``training``, ``validation``) in messages.
        prediction_time: only samples at or before it, its risk set and outcome times counted from it (None: every
            sample); the data are then checked by :func:`check_no_look_ahead`.
        longitudinal: ``task.longitudinal`` (see :func:`longitudinal_inputs`): the longitudinal features at the
            prediction time, one table ``<modality>_dynamics`` per modality (:func:`add_longitudinal`); needs
            ``prediction_time``. ``modalities`` may name these tables (they are built, not read from the store).
    """
    store = Path(store)
    quantities = longitudinal_inputs(longitudinal)
    if quantities and prediction_time is None:
        raise ValueError("task.longitudinal needs task.prediction_time: longitudinal features are the state of a "
                         "quantity at the prediction time; set e.g. 'task.prediction_time={at: day, day: 90}', or "
                         "task.longitudinal=null")
    summary = None
    if extract:
        summary = extract_features(cohort, store, config=extract_config, modalities=extract_modalities,
                                   workers=workers, progress=progress)
        log.info(summary.to_text())
    derived = {dynamics_name(q.modality) for q in quantities}
    mods = [m for m in modalities if m not in derived] if modalities is not None else None
    if only_stored and mods:  # a model that reads no stored table (clinical only) needs no feature store
        available = set(stored_modalities(store))
        mods = [m for m in mods if m in available]
    data = load_multimodal(cohort, store, modalities=mods, endpoint=endpoint, response=response,
                           drop_unlabelled=drop_unlabelled, prediction_time=prediction_time)
    add_longitudinal(data, store, quantities)
    if prediction_time is not None:
        check_no_look_ahead(data, store, what=what)  # the derived tables too (no stored sample carries their values)
    timepoints = images = None
    if ct is not None:
        timepoints = check_ct_cohort(cohort, ct.modality, None, what) if ct.check else None
        images = ct_images(cohort, store, ct, what=what, workers=workers, progress=progress)
    risk = data.risk_set if drop_unlabelled else {}
    n_unlabelled = len(cohort.clinical) - len(data) - risk.get("left_out", 0) - risk.get("without_timepoint", 0)
    notes = [f"{n_unlabelled} patient(s) without the {data.endpoint} outcome are left out"] if n_unlabelled else []
    if prediction_time is not None:
        notes += _risk_set_notes(prediction_time, data, risk)
        for note in notes:
            log.info("%s cohort: %s", what, note)
    return ModelInputs(cohort, store, data, images, summary, notes, n_unlabelled, timepoints, prediction_time)


def prediction_time_summary(inputs: ModelInputs) -> dict[str, Any] | None:
    """A summary.json's ``prediction_time`` entry (None without one): which one, and how many patients were at risk
    and left out (``n_without_timepoint``: no sample at the named timepoint)."""
    pt, risk = inputs.prediction_time, inputs.data.risk_set
    if pt is None:
        return None
    return {"describe": pt.describe(), "n_at_risk": int(risk.get("at_risk", len(inputs.data))),
            "n_left_out": int(risk.get("left_out", 0)), "n_without_timepoint": int(risk.get("without_timepoint", 0))}


def _risk_set_notes(pt: PredictionTime, data: MultimodalData, risk: Mapping[str, int]) -> list[str]:
    """What a report says about the risk set at the prediction time."""
    notes = [f"prediction time: {pt.describe()}; inputs use only samples taken at or before it"]
    if risk.get("left_out"):
        notes.append(f"{risk['left_out']} patient(s) with the {data.endpoint} event or censoring at or before the "
                     "prediction time left the risk set")
    if risk.get("without_timepoint"):
        notes.append(f"{risk['without_timepoint']} patient(s) without a '{pt.timepoint}' sample have no prediction "
                     "time and are left out")
    return notes


# ------------------------------------------------------------------------------------------------ look-ahead guard
def check_no_look_ahead(data: MultimodalData, store: str | Path, *, what: str = "training") -> None:
    """Refuse data whose features or presence come from samples after each patient's prediction time.

    An assertion independent of how the tables were built (:func:`~omics_risk.data.timing.select_samples` cannot
    produce such data; a future code path might): a present patient needs a sample at or before the prediction day,
    and a value of column ``<slot>__<feature>`` carried only by the patient's later samples of the per-sample store
    (same feature, same value) came from the future. Values no stored sample carries (derived features) are not
    attributed. Raises ``ValueError`` naming the modality, the number of patients and an example sample and day.
    """
    if data.prediction_day is None:
        return
    pday = pd.Series(np.asarray(data.prediction_day, dtype=float), index=data.patients.astype(str))
    for m, table in data.modalities.items():
        path = Path(store) / f"{m}.samples.parquet"
        if not path.is_file():
            continue  # load_multimodal refuses a prediction time without it; nothing to attribute values to
        long = pd.read_parquet(path)
        bad = _later_values(table, long, pday)
        present = data.present[m] if m in data.present else pd.Series(False, index=data.patients)
        first = long.assign(patient_id=long["patient_id"].astype(str)).groupby("patient_id")["day"].min()
        ghost = [p for p in data.patients[present.to_numpy(dtype=bool)].astype(str)
                 if not first.get(p, np.inf) <= pday[p]]
        if bad.empty and not ghost:
            continue
        if not bad.empty:
            row = bad.iloc[0]
            n = bad["patient_id"].nunique()
            example = (f"patient {row.patient_id}: {m} column {row.column} = {row.value:g} is carried only by sample "
                       f"{row.sample_id} (day {row.day:g}) after the prediction day {pday[row.patient_id]:g}")
        else:
            n = len(ghost)
            later = long[long["patient_id"].astype(str) == ghost[0]].sort_values("day")
            sid, day = (later.index[0], later["day"].iloc[0]) if len(later) else ("(none)", float("nan"))
            example = (f"patient {ghost[0]} is marked present for {m} but its first sample {sid} is on day {day:g}, "
                       f"after the prediction day {pday[ghost[0]]:g}")
        raise ValueError(f"look-ahead in the {what} data: {n} patient(s) have {m} inputs from samples taken after "
                         f"their prediction time, e.g. {example}. Training refuses features measured after the "
                         "prediction time; build the modality's table with omics_risk.data.timing.select_samples")


def _later_values(table: pd.DataFrame, long: pd.DataFrame, pday: pd.Series) -> pd.DataFrame:
    """Cells of ``table`` (patient x ``<slot>__<feature>``) whose value only the patient's samples after the
    prediction day carry: columns ``patient_id``, ``column``, ``value``, ``sample_id``, ``day``."""
    cols = ["patient_id", "column", "value", "sample_id", "day"]
    features = sample_features(long)
    if table.empty or not features:
        return pd.DataFrame(columns=cols)
    cells = table.rename_axis(index="patient_id").reset_index().melt(id_vars="patient_id", var_name="column",
                                                                     value_name="value").dropna(subset=["value"])
    cells["patient_id"] = cells["patient_id"].astype(str)
    cells["feature"] = cells["column"].astype(str).str.split(SLOT_SEP, n=1).str[-1]
    stored = long.rename_axis("sample_id").reset_index().melt(
        id_vars=["sample_id", "patient_id", "day"], value_vars=features, var_name="feature", value_name="value")
    stored = stored.dropna(subset=["value"]).assign(patient_id=lambda d: d["patient_id"].astype(str))
    hits = cells.merge(stored, on=["patient_id", "feature", "value"])
    if hits.empty:
        return pd.DataFrame(columns=cols)
    hits = hits.assign(limit=hits["patient_id"].map(pday)).sort_values("day", kind="stable")
    first = hits.drop_duplicates(["patient_id", "column"], keep="first")  # the earliest sample carrying the value
    return first[~(first["day"] <= first["limit"])][cols].reset_index(drop=True)

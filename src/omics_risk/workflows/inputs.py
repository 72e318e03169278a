"""One path from a cohort to model inputs, shared by training, external validation and scoring.

A cohort is parsed once (:func:`~omics_risk.data.contract.load_cohort`, by the caller) and handed to
:func:`model_inputs`, which extracts its features into the feature store (cached), joins them with the clinical table
and the endpoint (:class:`~omics_risk.data.multimodal.MultimodalData`) and, for models that encode CT images, builds
the CT image provider (:class:`~omics_risk.models.fused.CTImageStore`) over the CT tensor cache. Scoring works on a
repaired view of the cohort, chunk by chunk, and uses the same pieces (:func:`extract_features`,
:func:`prefill_ct_cache`).

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
from omics_risk.data.multimodal import MultimodalData, load_multimodal
from omics_risk.features.extract import ExtractSummary, extract_cohort
from omics_risk.progress import progress_bar

log = logging.getLogger(__name__)

__all__ = ["CTInputs", "ModelInputs", "check_ct_cohort", "ct_timepoints_of", "extract_features",
           "model_inputs", "prefill_ct_cache"]


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


def model_inputs(cohort: Cohort, store: str | Path, *, extract: bool = True,
                 extract_config: Mapping[str, Any] | None = None, extract_modalities: Sequence[str] | None = None,
                 modalities: Sequence[str] | None = None, only_stored: bool = False, endpoint: str | None = None,
                 response: str | None = None, drop_unlabelled: bool = True, ct: CTInputs | None = None,
                 what: str = "training", workers: int | None = None, progress: bool = False) -> ModelInputs:
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
    """
    store = Path(store)
    summary = None
    if extract:
        summary = extract_features(cohort, store, config=extract_config, modalities=extract_modalities,
                                   workers=workers, progress=progress)
        log.info(summary.to_text())
    mods = list(modalities) if modalities is not None else None
    if only_stored and mods is not None:
        available = {p.stem for p in store.glob("*.parquet")}
        mods = [m for m in mods if m in available]
    data = load_multimodal(cohort, store, modalities=mods, endpoint=endpoint, response=response,
                           drop_unlabelled=drop_unlabelled)
    timepoints = images = None
    if ct is not None:
        timepoints = check_ct_cohort(cohort, ct.modality, None, what) if ct.check else None
        images = ct_images(cohort, store, ct, what=what, workers=workers, progress=progress)
    n_unlabelled = len(cohort.clinical) - len(data)
    notes = [f"{n_unlabelled} patient(s) without the {data.endpoint} outcome are left out"] if n_unlabelled else []
    return ModelInputs(cohort, store, data, images, summary, notes, n_unlabelled, timepoints)

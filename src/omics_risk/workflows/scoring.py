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
   ``n_out_of_range``, and ``prediction_day`` for a model trained at a prediction time (whose inputs are then built
   at that time, as in training: docs/time.md); plus ``<out>.report.json`` (model, counts, warnings, shift table).

Status: ``ok`` = every modality the model uses is present and no sample of them failed; ``partial`` = scored with
the presence mask while some used modality is missing or one of its samples failed (or a used clinical value was
unreadable); ``failed`` = no usable input at all, or an error (no score). ``reason`` says why, per modality.

Warnings raised while scoring become notes of the result (printed by ``omics-risk score``, kept in the report), and
Ctrl-C raises :class:`ScoringInterrupted` saying which chunks are checkpointed; a model whose ``python_model.pkl`` was
changed is refused (:class:`UnverifiedWrapperError`) unless ``allow_unverified_wrapper``.

This module is the orchestration; the steps live beside it: the model loader in :mod:`omics_risk.scoring.loading`,
the cohort's preparation and fit checks in :mod:`.scoring_cohort`, the chunked scorer and its checkpoints in
:mod:`.scoring_chunks`, the folder locks and warning notes in :mod:`.scoring_locks`, the extraction and CT cache
prefill shared with training in :mod:`.inputs`. Its names are re-exported here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from omics_risk.atomic import atomic_path, atomic_write_text
from omics_risk.data.contract import CLINICAL_FILE, SAMPLES_FILE, SPEC_FILE
from omics_risk.progress import progress_bar
from omics_risk.scoring.frames import ID_COLUMN, RISK_GROUPS
from omics_risk.scoring.loading import (
    ALLOWED_EXTRACTOR_PREFIXES,
    DEFAULT_EXTRACTION_NOTE,
    BatchModel,
    ModelLoadError,
    ModelNotFoundError,
    RegistryNotFoundError,
    UnverifiedWrapperError,
    _unverified_wrapper_text,
    check_model_uri,
    extraction_config,
    extraction_config_or_defaults,
    load_batch_model,
    local_store_path,
    pickle_globals,
    spark_result_type,
)
from omics_risk.scoring.shift import DEFAULT_MARGIN, ShiftCheck
from omics_risk.workflows.inputs import extract_features
from omics_risk.workflows.scoring_chunks import (
    STATUSES,
    ScoreResult,
    _atomic_write_parquet,
    _ChunkImages,
    _Scorer,
    _state_delta,
    content_key,
    write_output,
)
from omics_risk.workflows.scoring_cohort import (
    MAX_MISSING_FEATURES,
    CohortMismatchError,
    PreparedCohort,
    check_fit,
    check_store,
    prepare_cohort,
)
from omics_risk.workflows.scoring_locks import (
    LIBRARY_NOTICES,
    LOCK_FILE,
    WorkDirLockedError,
    _collect_warnings,
    _folder_lock,
    _reemit,
    _within,
    warning_text,
)

__all__ = ["ALLOWED_EXTRACTOR_PREFIXES", "DEFAULT_EXTRACTION_NOTE", "LIBRARY_NOTICES", "LOCK_FILE",
           "MAX_MISSING_FEATURES", "OUTPUT_FORMATS", "STATUSES", "BatchModel", "CohortMismatchError",
           "ModelLoadError", "ModelNotFoundError", "PreparedCohort", "RegistryNotFoundError", "ScoreInputError",
           "ScoreResult", "ScoringInterrupted", "UnverifiedWrapperError", "WorkDirLockedError", "check_fit",
           "check_inputs", "check_model_uri", "extraction_config", "extraction_config_or_defaults",
           "load_batch_model", "local_store_path", "parse_horizons", "pickle_globals", "prepare_cohort",
           "score_cohort", "spark_result_type", "warning_text", "write_feature_table"]
OUTPUT_FORMATS = (".parquet", ".csv")
#: Days per horizon unit: the project's horizons are 365 / 730 / 1095 days, so a year is 365 days here.
_UNITS = {"d": 1.0, "w": 7.0, "m": 365.0 / 12, "y": 365.0}
_HORIZON_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([dwmy]?)\s*$")
_CHECKPOINT_VERSION = 2  # 2: the shift state counts values beyond the training p01 / p99


class ScoreInputError(ValueError):
    """An input of the scoring points at the wrong thing (no cohort folder, no output folder, a bad option value).

    Checked before the model is loaded, so a typo costs a second, not a model download.
    """


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
                              f"(unless it is clinical-only) {SAMPLES_FILE} (docs/data_format.md)")
    lacking = [name for name in (SPEC_FILE, CLINICAL_FILE) if not (root / name).is_file()]
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


@dataclass
class _Progress:
    """How far a run got, for the message of an interruption."""

    stage: str = "loading the model"
    done: int = 0
    total: int = 0
    checkpoints: Path | None = None


def _extract(bm: BatchModel, prep: PreparedCohort, store: Path, workers: int | None,
             progress: bool) -> tuple[list[str], list[str]]:
    """Extract the model's tabular modalities that the cohort has, with the model's extractor settings; returns
    (the modalities extracted, notes)."""
    wanted = [m for m in bm.stored if m in prep.cohort.modalities]
    if not wanted:
        return [], []
    config, notes = extraction_config_or_defaults(bm)
    extract_features(prep.cohort, store, config=config, modalities=wanted, workers=workers, progress=progress)
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
            notes += check_store(bm, store, extracted)
        images = _ChunkImages(bm, prep.cohort, work / "ct_tensors") if bm.images else None
        if images is not None:
            images.prefill(workers, progress)
        timings["extract"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        shift = ShiftCheck(bm.settings.get("feature_ranges"), shift_margin)
        scorer = _Scorer(bm, prep, store, extracted, bm.horizons, risk_groups, shift, images)
        notes += scorer.timing_notes()
        options = {"horizons": bm.horizons, "risk_groups": risk_groups, "chunk_size": chunk_size,
                   "margin": shift_margin, "version": _CHECKPOINT_VERSION, "format": fmt}
        key = content_key(bm, prep, store, extracted, options)
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
    counts = write_output(ckpt, len(chunks), out, fmt, scorer.schema)
    report = shift.report() if shift.enabled else None
    if report is not None and report.detected:  # values outside the range as chance gives them: no alarm
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
         "risk_cutoffs": (bm.settings.get("risk_cutoffs") or {}).get(risk_groups), "timings": timings,
         **({"prediction_time": bm.prediction_time.describe()} if bm.prediction_time is not None else {})},
        indent=1, default=str))
    if not keep_checkpoints:  # only this run's own key: the lock keeps every other run out of this folder
        shutil.rmtree(ckpt, ignore_errors=True)
    return result


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
    prep = prepare_cohort(cohort, work / "cohort_view")
    check_fit(bm, prep)
    extracted, _ = _extract(bm, prep, store, workers, progress)
    if extracted:
        check_store(bm, store, extracted)
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

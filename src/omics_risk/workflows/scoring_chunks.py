"""The chunked scorer: one chunk of patients at a time from the feature store (and CT tensors) to output rows, each
patient with a status and a reason, checkpointed by a key of the model, the cohort's content and the options.

Each chunk reads only its patients' rows of the store (Parquet filters), scores them with
:func:`omics_risk.scoring.pyfunc.score` (what the MLflow pyfunc and Spark run) and decides per patient ``ok`` /
``partial`` / ``failed``; the finished chunks are concatenated into the output through a temporary file. A model
trained at a prediction time reads the cohort's inputs at that time instead (:mod:`.scoring_timing`, built once for
the cohort), and each row gets the patient's ``prediction_day``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from omics_risk.atomic import atomic_path
from omics_risk.data.contract import CLINICAL_FILE, SAMPLES_FILE, SPEC_FILE, Cohort
from omics_risk.data.multimodal import MultimodalData
from omics_risk.models.base import capabilities_of
from omics_risk.scoring.frames import CLINICAL, ID_COLUMN, FeatureManifest, to_frame
from omics_risk.scoring.loading import BatchModel, _file_digest, _sha
from omics_risk.scoring.shift import ShiftCheck, ShiftReport, state_delta
from omics_risk.workflows.inputs import prefill_ct_cache
from omics_risk.workflows.scoring_cohort import PreparedCohort
from omics_risk.workflows.scoring_timing import TimedInputs, no_day_reason, timed_inputs

__all__ = ["STATUSES", "ScoreResult", "content_key", "write_output"]

STATUSES = ("ok", "partial", "failed")


def _atomic_write_parquet(df: pd.DataFrame, path: Path, schema: Any = None) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), tmp)


# ------------------------------------------------------------------------------------------------ chunks
class _Tables:
    """Rows of the feature store's tables for a chunk of patients (Parquet filters: only those rows are kept), or of
    the tables at the model's prediction time (``timed``)."""

    def __init__(self, store: Path | None, manifest: FeatureManifest, extracted: Sequence[str],
                 timed: TimedInputs | None = None):
        self.manifest = manifest
        self.timed = timed
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
        if self.timed is not None:
            table = self.timed.tables.get(modality)
            if table is None:  # not in this cohort
                table = pd.DataFrame(index=pd.Index([], dtype=object), columns=feats)
            return table.reindex(index=pd.Index(patients, name=ID_COLUMN), columns=feats).astype(np.float64)
        if modality not in self.paths or not patients:
            return pd.DataFrame(np.nan, index=pd.Index(patients, name=ID_COLUMN), columns=feats)
        table = pd.read_parquet(self.paths[modality], columns=self.columns[modality],
                                filters=[(ID_COLUMN, "in", patients)])
        table.index = table.index.astype(str)
        return table.reindex(index=patients, columns=feats).astype(np.float64)


class _ChunkImages:
    """CT tensors of a chunk's patients at the model's timepoints, with the reason whenever a scan cannot be used."""

    def __init__(self, bm: BatchModel, cohort: Cohort, cache_dir: Path):
        from omics_risk.features.ct import CTConfig  # lazy: torch and MONAI, only for a CT-image model

        self.modality = bm.images[0]
        self.timepoints = bm.timepoints(self.modality)
        cfg = bm.settings.get("ct")
        self.cfg = CTConfig.from_mapping(cfg) if cfg else CTConfig()
        self.cohort = cohort
        self.cache_dir = cache_dir

    def prefill(self, workers: int | None, progress: bool) -> None:
        """Preprocess the scans not in the tensor cache yet, in parallel processes (a failing scan is reported later,
        per patient, when its chunk is scored)."""
        rows = self.cohort.samples_of(self.modality)
        rows = rows[rows["timepoint"].astype(str).isin(self.timepoints)]
        scans = [(str(self.cohort.path(r.path)), str(self.cohort.path(r.mask_path))) for r in rows.itertuples()]
        # a scan whose files are missing is skipped here and reported when its patient is scored
        prefill_ct_cache(self.cfg, self.cache_dir, scans, workers=workers, progress=progress, skip_unreadable=True)

    def load(self, patients: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
        from omics_risk.models.fused import CTImageStore  # lazy: torch, only for a CT-image model

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


def _output_schema(bm: BatchModel, horizons: Sequence[float], response: bool, timed: bool = False) -> Any:
    from omics_risk.scoring.pyfunc import _horizon_name  # lazy: pyfunc loads mlflow and torch

    fields = [(ID_COLUMN, pa.string()), ("status", pa.string()), ("reason", pa.string()),
              ("risk_score", pa.float64()), ("risk_group", pa.string())]
    fields += [(_horizon_name(h), pa.float64()) for h in horizons]
    if response:
        fields.append(("response_prob", pa.float64()))
    fields += [("modalities_used", pa.string()), ("modalities_missing", pa.string()),
               ("n_out_of_range", pa.int64())]
    if timed:  # a model trained at a prediction time: the day each patient was scored at
        fields.append(("prediction_day", pa.float64()))
    return pa.schema(fields)


def _supports_survival(model: Any) -> bool:
    return capabilities_of(model).survival


def _supports_response(model: Any) -> bool:
    return capabilities_of(model).response


class _Scorer:
    """Scores one chunk of patients and decides each patient's status and reason."""

    def __init__(self, bm: BatchModel, prep: PreparedCohort, store: Path | None, extracted: Sequence[str],
                 horizons: list[float], risk_groups: str, shift: ShiftCheck, images: _ChunkImages | None):
        from omics_risk.evaluation.riskgroups import RiskGroups  # lazy: lifelines, loaded once scoring starts
        from omics_risk.scoring.pyfunc import _horizon_name  # lazy: pyfunc loads mlflow and torch

        self.bm, self.prep, self.horizons, self.shift, self.images = bm, prep, horizons, shift, images
        self.timed = timed_inputs(bm, prep, store, extracted)
        samples = prep.cohort.samples
        self.sample_day = dict(zip(samples["sample_id"].astype(str), pd.to_numeric(samples["day"], errors="coerce"),
                                   strict=True)) if self.timed is not None else {}
        self.tables = _Tables(store, bm.manifest, extracted, self.timed)
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
        self.schema = _output_schema(bm, horizons if self.surv_cols else [], self.response, self.timed is not None)

    def timing_notes(self) -> list[str]:
        """What the run's warnings say about patients without a prediction day (none without a prediction time)."""
        if self.timed is None:
            return []
        lacking = [p for p in self.prep.order if p in self.clinical.index and not self.has_day(p)]
        pt = self.timed.prediction_time
        return [f"{len(lacking)} patient(s) have no '{pt.timepoint}' sample, so no prediction day "
                f"({pt.describe()}): they are not scored (status failed)"] if lacking else []

    def has_day(self, pid: str) -> bool:
        """False for a patient without a prediction day under a model with a prediction time (not scored)."""
        return self.timed is None or math.isfinite(self.timed.day_of(pid))

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
        from omics_risk.scoring.pyfunc import score  # lazy: pyfunc loads mlflow and torch

        scorable = [p for p in patients if p not in self.prep.failed and p in self.clinical.index
                    and self.has_day(p)]
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
        if self.timed is not None:
            row["prediction_day"] = self.timed.day_of(pid)
            if not self.has_day(pid):
                return {**row, "status": "failed", "reason": no_day_reason(self.timed.prediction_time),
                        "modalities_missing": ",".join(self.bm.needed)}
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
            source = self.bm.derived.get(m, m)  # a derived input (ctdna_dynamics) reports its modality's samples
            present[m] = bool(present_df.at[pid, m])
            failed = [r for r in status_rows if r["modality"] == source and r["status"] == "failed"
                      and self._usable(r["sample_id"], pid)]
            detail = "; ".join(f"{r['timepoint']} sample {r['sample_id']} failed: {r['reason']}" for r in failed)
            if not present[m]:
                if source not in self.cohort_mods:
                    parts.append(f"{m}: not in this cohort")
                elif failed:
                    parts.append(f"{m}: {detail}")
                else:
                    has = [r for r in status_rows if r["modality"] == source and r["status"] == "ok"]
                    parts.append(f"{m}: no sample" if not has else self._not_in_slots(m, pid))
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

    def _usable(self, sample_id: str, pid: str) -> bool:
        """False for a sample dated after the patient's prediction day (the model would not use it anyway)."""
        return self.timed is None or not self.sample_day.get(str(sample_id), -math.inf) > self.timed.day_of(pid)

    def _not_in_slots(self, m: str, pid: str) -> str:
        """Why a patient with samples of ``m`` has none the model reads."""
        if self.timed is None:
            return f"{m}: no sample at the model's timepoints ({', '.join(self.bm.timepoints(m))})"
        return (f"{m}: no sample in the model's slots at or before the prediction day "
                f"({self.timed.day_of(pid):g}); later samples are not used")

    def _paths(self, text: str) -> str:
        """Reasons name the cohort's own files, not the repaired view's links to them."""
        if self.prep.root != self.prep.source:
            text = text.replace(str(self.prep.root), str(self.prep.source))
        return text


# ------------------------------------------------------------------------------------------------ the engine
def content_key(bm: BatchModel, prep: PreparedCohort, store: Path | None, extracted: Sequence[str],
                 options: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    for name in (SPEC_FILE, CLINICAL_FILE, SAMPLES_FILE):
        if (prep.root / name).is_file() or name != SAMPLES_FILE:
            _file_digest(prep.root / name, h)
        else:  # a clinical-only cohort has none
            h.update(b"no samples.csv")
    h.update(json.dumps([prep.notes, prep.failed, prep.order], sort_keys=True, default=str).encode())
    if store is not None:
        per_sample = [f"{m}.samples.parquet" for m in extracted] if bm.prediction_time is not None else []
        for name in ["status.csv", *(f"{m}.parquet" for m in extracted), *per_sample]:
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


def _state_delta(after: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    """The shift counts one chunk added (so chunks can be merged in any resumed run)."""
    return state_delta(after, before)


def write_output(ckpt: Path, n_chunks: int, out: Path, fmt: str, schema: Any) -> dict[str, int]:
    """Concatenate the chunk files into ``out`` through a temporary file (one chunk in memory at a time)."""
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


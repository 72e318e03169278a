"""``omics-risk extract``: every modality of a cohort into a cached, provenance-tracked feature store.

Output (default ``COHORT/features/``):

- ``<modality>.parquet``: one row per patient with at least one usable sample of the modality, one column per
  ``<timepoint>__<feature>`` (every sample, whatever its date: the table of models without a prediction time);
- ``<modality>.samples.parquet``: one row per usable sample (index ``sample_id``; ``patient_id``, ``timepoint``,
  ``day``, then its features): what a prediction time selects from (:mod:`omics_risk.data.timing`);
- ``status.csv``: one row per sample of samples.csv (``ok`` or ``failed`` with the reason) and per patient
  without any sample of a modality the cohort has (``missing``): nothing is dropped silently;
- ``<modality>.<name>.csv``: side tables an extractor provides (e.g. ``metabolomics.qc.csv``, the QC report);
- ``manifest.json``: per modality the extractors, their versions and settings hashes, the feature columns,
  and a content hash of every input file, so a model can check that scoring sees what training saw;
- ``cache/``: per-sample results keyed by (extractor, version, settings, input content), and the whole result
  of a shared-file extractor (``table``, ``cn_segments``, ...) keyed by its files, settings, cohort.yaml options
  and samples (:mod:`omics_risk.features.shared_cache`); a re-run recomputes only what changed; failed samples
  are tried again on every run (their reasons name the paths of that run).

Failures stay per sample: an unreadable or corrupt file, a sample missing from (or with bad rows in) a shared
table, a sample whose features are all missing, even a worker process that dies on a file, fail only that sample,
with a reason naming the file. Only what every sample of a modality needs (a reference file, a shared file broken
as a whole, a cohort-level step left without enough usable samples) fails the whole modality, again with the
reason in status.csv; other modalities are extracted regardless. What a cohort-level step leaves out that is no
sample of samples.csv (a QC injection) is a ``note`` in the summary and the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from omics_risk.atomic import atomic_path, atomic_write_text
from omics_risk.data.contract import Cohort, load_cohort
from omics_risk.data.formats import default_extract_config
from omics_risk.features.base import (
    ExtractionResult,
    Extractor,
    SampleFailure,
    read_cached_result,
    settings_hash,
)
from omics_risk.features.shared_cache import shared_cache_entry
from omics_risk.features.shared_files import display_path
from omics_risk.progress import progress_bar

__all__ = ["ExtractSummary", "default_extract_config", "extract_cohort", "fingerprint"]

STORE_VERSION = 1
#: Failed samples listed in the printed summary (all of them are in status.csv).
SUMMARY_FAILURES = 20


def fingerprint(path: Path) -> str:
    """Content hash of a file or a folder (DICOM series): the identity of an input for caching."""
    h = hashlib.blake2b(digest_size=16)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def content_stamp(path: Path) -> tuple[int, int]:
    """(total size, newest mtime) of a file or of a folder's files: changes whenever the content may have changed.

    Raises ``OSError`` for a missing or unreadable input.
    """
    if path.is_dir():
        stats = [p.stat() for p in path.rglob("*") if p.is_file()]
        return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=path.stat().st_mtime_ns)
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=65536)
def _memo_fingerprint(path: str, stamp: tuple[int, int]) -> str:
    return fingerprint(Path(path))


def memo_fingerprint(path: Path) -> str:
    """:func:`fingerprint`, memoised within the process on (path, :func:`content_stamp`), so that training epochs
    and repeated cache-key computations do not re-read unchanged inputs. Raises ``OSError`` like ``open``."""
    return _memo_fingerprint(str(path.resolve()), content_stamp(path))


class _Fingerprints:
    """Memo of content hashes keyed by (path, size, mtime) so re-runs do not re-read unchanged inputs."""

    def __init__(self, file: Path):
        self.file = file
        self.memo: dict[str, list[Any]] = {}
        try:
            memo = json.loads(file.read_text()) if file.is_file() else {}
        except (OSError, ValueError):  # a torn memo only costs re-hashing the inputs
            memo = {}
        if isinstance(memo, dict):
            self.memo = memo

    def __call__(self, path: Path) -> str:
        if not path.exists():
            return "missing"
        stamp = list(content_stamp(path))
        key = str(path.resolve())
        hit = self.memo.get(key)
        if hit and hit[:2] == stamp:
            return str(hit[2])
        digest = fingerprint(path)
        self.memo[key] = [*stamp, digest]
        return digest

    def save(self) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.file, json.dumps(self.memo))


def _extractors_for(config: Mapping[str, Any], modality: str, fmt: str,
                    overrides: Mapping[str, Any] | None) -> list[Extractor]:
    """Extractors of one modality: a config entry named after the modality wins over the format's entry, and the
    cohort's own ``modalities: {name: {extract: {...}}}`` settings in cohort.yaml override both."""
    from hydra.utils import instantiate  # lazy: Hydra is heavy, and only extraction needs it

    specs = config.get(modality, config.get(fmt, []))
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ValueError(f"cohort.yaml: modalities.{modality}.extract must map extractor settings to values")
    return [instantiate({**dict(spec), **dict(overrides or {})}) for spec in specs]


@dataclass
class ExtractSummary:
    out: Path
    modalities: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: pd.DataFrame = field(default_factory=pd.DataFrame)

    def to_text(self) -> str:
        lines = [f"features written to {self.out}"]
        for mod, info in self.modalities.items():
            lines.append(f"  {mod:<14} {info['patients']:>5} patients x {info['n_features']:>5} features   "
                         f"ok {info['ok']}, failed {info['failed']}, from cache {info['cached']}")
        for mod, info in self.modalities.items():
            for note in info.get("notes", []):
                lines.append(f"note: {mod}: {note}")
        failed = self.status[self.status["status"] == "failed"] if len(self.status) else self.status
        if len(failed):
            lines.append(f"{len(failed)} sample(s) failed (see {self.out / 'status.csv'}):")
            for row in failed.head(SUMMARY_FAILURES).itertuples():
                lines.append(f"  {row.modality}/{row.sample_id} (patient {row.patient_id}): {row.reason}")
            if len(failed) > SUMMARY_FAILURES:
                lines.append(f"  ... and {len(failed) - SUMMARY_FAILURES} more in {self.out / 'status.csv'}")
        return "\n".join(lines)


def _run_one(extractor: Extractor, cohort: Cohort, sample: pd.Series) -> dict[str, Any]:
    """Worker: features of one sample, or the reason it failed (never raises)."""
    try:
        return {"features": {str(k): float(v) for k, v in extractor.extract_sample(cohort, sample).items()}}
    except SampleFailure as exc:
        return {"error": str(exc)}
    except Exception as exc:  # a broken file must not abort the cohort: record it for that patient
        last = traceback.extract_tb(exc.__traceback__)[-1]
        reason = f"{type(exc).__name__}: {exc} (at {Path(last.filename).name}:{last.lineno})"
        return {"error": _naming_file(reason, sample)}


def _naming_file(reason: str, sample: pd.Series) -> str:
    """``reason`` prefixed with the sample's file unless it already names it, so every failure says which file."""
    path = str(sample.get("path", ""))
    return reason if not path or Path(path).name in reason else f"{path}: {reason}"


def _run_isolated(extractor: Extractor, cohort: Cohort, sample: pd.Series) -> dict[str, Any]:
    """One sample in a process of its own, after a worker died: only the sample that kills a process fails.

    The result of a dead process is not cached: it may have been the machine (memory), not the file.
    """
    try:
        with ProcessPoolExecutor(max_workers=1) as pool:
            return pool.submit(_run_one, extractor, cohort, sample).result()
    except BrokenProcessPool as exc:
        return {"error": _naming_file(f"the process extracting this sample died ({exc}); a native library probably "
                                      "crashed on the file, or the machine ran out of memory", sample),
                "cache": False}


def _sample_inputs(cohort: Cohort, sample: pd.Series) -> list[Path]:
    paths = [cohort.path(sample["path"])]
    if isinstance(sample.get("mask_path"), str) and sample["mask_path"]:
        paths.append(cohort.path(sample["mask_path"]))
    return paths


def extract_cohort(cohort_dir: str | Path | Cohort, out: str | Path | None = None, *,
                   config: Mapping[str, Any] | None = None, modalities: Sequence[str] | None = None,
                   workers: int | None = None, force: bool = False, progress: bool = True) -> ExtractSummary:
    """Extract features for every modality of a cohort into ``out`` (default ``COHORT/features``).

    ``cohort_dir``: the cohort folder, or the cohort already loaded (so a workflow parses cohort.yaml once).
    """
    cohort = cohort_dir if isinstance(cohort_dir, Cohort) else load_cohort(cohort_dir)
    out = Path(out) if out is not None else cohort.root / "features"
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    fps = _Fingerprints(cache / "fingerprints.json")
    # The default extractors of every format come from the format registry (omics_risk.data.formats).
    config = dict(config) if config is not None else default_extract_config()
    workers = workers or os.cpu_count() or 1
    wanted = list(modalities) if modalities else cohort.modalities
    status_rows: list[dict[str, Any]] = []
    manifest: dict[str, Any] = {"store_version": STORE_VERSION, "cohort": cohort.spec.name, "modalities": {}}
    summary = ExtractSummary(out)

    for mod in wanted:
        ms = cohort.spec.modality(mod)
        if ms is None or mod not in cohort.modalities:
            raise ValueError(f"modality '{mod}' is not in cohort {cohort.root} (has: {', '.join(cohort.modalities)})")
        samples = cohort.samples_of(mod)
        exts = _extractors_for(config, mod, ms.format, ms.options.get("extract"))
        if not exts:
            raise ValueError(f"no extractor configured for format '{ms.format}' (modality '{mod}')")
        per_sample_feats: dict[str, dict[str, float]] = {sid: {} for sid in samples["sample_id"]}
        errors: dict[str, list[str]] = {}
        cached = 0
        ext_info = []
        inputs: dict[str, str] = {}
        side_files: list[str] = []
        notes: list[str] = []
        for ext in exts:
            shash = settings_hash({"name": ext.name, "version": ext.version, **ext.settings()})
            refs, ref_error = _reference_digests(ext, cohort, fps)
            ext_info.append({"name": ext.name, "class": f"{type(ext).__module__}.{type(ext).__qualname__}",
                             "version": ext.version, "settings": ext.settings(), "settings_hash": shash,
                             "references": refs})
            if ref_error is not None:  # every sample needs the reference: the modality fails, with the reason
                for sid in samples["sample_id"]:
                    errors.setdefault(sid, []).append(f"{ext.name}: {ref_error}")
            elif ext.per_sample:
                todo = []
                for _, row in samples.iterrows():
                    try:
                        digests = [fps(p) for p in _sample_inputs(cohort, row)]
                    except OSError as exc:  # unreadable input (permissions, a vanished file): this sample only
                        errors.setdefault(row["sample_id"], []).append(_unreadable(exc, cohort))
                        inputs[row["sample_id"]] = "unreadable"
                        continue
                    inputs[row["sample_id"]] = ",".join(digests)
                    key = hashlib.sha256(json.dumps([shash, refs, digests]).encode()).hexdigest()[:24]
                    cfile = cache / ext.name / f"{key}.json"
                    res = None if force else read_cached_result(cfile)  # failures are retried, never served
                    if res is not None:
                        cached += 1
                        _merge(res, row["sample_id"], per_sample_feats, errors)
                    else:
                        todo.append((row, cfile))
                desc = f"{mod}: {ext.name}"
                results = _map_samples(ext, cohort, [r for r, _ in todo], workers, progress, desc)
                for (row, cfile), res in zip(todo, results, strict=True):
                    # A failure is not cached: its reason names this run's paths (score extracts through a
                    # work-folder view of the cohort), and the cause may be the machine, not the file.
                    if res.pop("cache", True) and "error" not in res:
                        cfile.parent.mkdir(parents=True, exist_ok=True)
                        atomic_write_text(cfile, json.dumps(res))
                    _merge(res, row["sample_id"], per_sample_feats, errors)
            else:
                shared_inputs: dict[str, str] = {}
                for p in sorted({cohort.path(p) for p in samples["path"]}):
                    try:
                        shared_inputs[display_path(p, cohort.root)] = fps(p)
                    except OSError:  # the extractor's read fails on it too and says why, for its samples
                        shared_inputs[display_path(p, cohort.root)] = "unreadable"
                inputs.update(shared_inputs)
                # The whole result of a shared file is cached under one key (features/shared_cache.py).
                entry = shared_cache_entry(cache / ext.name, shash, refs, shared_inputs, ms.options, samples)
                hit = entry.load() if entry is not None and not force else None
                if hit is not None:
                    result, texts = ExtractionResult(hit[0]), hit[1]
                    cached += len(samples)
                else:
                    result = _shared(ext, cohort, samples)
                    tables, table_error = _side_tables(ext, cohort, samples)
                    if table_error is not None:
                        notes.append(f"{ext.name}: side table(s) not written: {table_error}")
                    texts = {tname: tdf.to_csv() for tname, tdf in tables.items()}
                    if entry is not None and not result.failures and not result.notes and table_error is None:
                        entry.save(result.features, texts)
                for tname, text in texts.items():
                    fname = f"{mod}.{tname}.csv"
                    (out / fname).write_text(text)
                    side_files.append(fname)
                notes.extend(f"{ext.name}: {n}" for n in result.notes)
                _merge_shared(ext.name, result, samples, per_sample_feats, errors)
        _fail_empty(samples, per_sample_feats, errors)
        table, n_ok = _wide_table(samples, per_sample_feats, errors)
        with atomic_path(out / f"{mod}.parquet") as tmp:
            table.to_parquet(tmp)
        with atomic_path(out / f"{mod}.samples.parquet") as tmp:
            _sample_table(samples, per_sample_feats, errors).to_parquet(tmp)
        for _, row in samples.iterrows():
            sid = row["sample_id"]
            status_rows.append({"patient_id": row["patient_id"], "modality": mod, "timepoint": row["timepoint"],
                                "sample_id": sid, "status": "failed" if sid in errors else "ok",
                                "reason": "; ".join(errors.get(sid, []))})
        for pid in sorted(set(cohort.patients) - set(samples["patient_id"])):
            status_rows.append({"patient_id": pid, "modality": mod, "timepoint": "", "sample_id": "",
                                "status": "missing", "reason": "no sample of this modality"})
        manifest["modalities"][mod] = {"format": ms.format, "extractors": ext_info, "columns": list(table.columns),
                                       "patients": len(table), "inputs": inputs, "side_tables": side_files,
                                       "samples_table": f"{mod}.samples.parquet"}
        if notes:
            manifest["modalities"][mod]["notes"] = notes
        summary.modalities[mod] = {"patients": len(table), "n_features": table.shape[1], "ok": n_ok,
                                   "failed": len(errors), "cached": cached, "notes": notes}
    fps.save()
    status = pd.DataFrame(status_rows, columns=["patient_id", "modality", "timepoint", "sample_id", "status",
                                                "reason"])
    status.to_csv(out / "status.csv", index=False)
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1, default=str))
    summary.status = status
    return summary


def _merge(res: dict[str, Any], sid: str, feats: dict[str, dict[str, float]], errors: dict[str, list[str]]) -> None:
    if "error" in res:
        errors.setdefault(sid, []).append(res["error"])
    else:
        feats[sid].update(res["features"])


def _unreadable(exc: OSError, cohort: Cohort) -> str:
    """Reason for an input that cannot even be read for its content hash."""
    name = display_path(Path(exc.filename), cohort.root) if exc.filename else "an input file"
    return f"{name} cannot be read ({exc.strerror or exc}); check that it exists and is readable"


def _reference_digests(ext: Extractor, cohort: Cohort, fps: _Fingerprints) -> tuple[dict[str, str], str | None]:
    """Content hashes of the extractor's reference files, or the reason one cannot be read."""
    refs: dict[str, str] = {}
    for k, p in ext.references(cohort).items():
        try:
            refs[k] = fps(p)
        except OSError as exc:
            return refs, f"reference '{k}': {_unreadable(exc, cohort)}"
    return refs, None



def _merge_shared(name: str, result: ExtractionResult, samples: pd.DataFrame, feats: dict[str, dict[str, float]],
                  errors: dict[str, list[str]]) -> None:
    """A shared extractor's result into the per-sample features; a sample whose row is unusable fails alone."""
    counts = result.features.index.value_counts()
    for sid in samples["sample_id"]:
        if sid in result.failures:
            errors.setdefault(sid, []).append(f"{name}: {result.failures[sid]}")
            continue
        n = int(counts.get(sid, 0))
        if n == 0:
            paths = ", ".join(sorted(set(samples.loc[samples["sample_id"] == sid, "path"])))
            errors.setdefault(sid, []).append(f"{name}: sample not found in the shared file {paths}")
        elif n > 1:
            errors.setdefault(sid, []).append(f"{name}: the extractor returned {n} rows for this sample")
        else:
            try:
                row = pd.to_numeric(result.features.loc[sid], errors="raise").astype(float)
            except (TypeError, ValueError) as exc:
                errors.setdefault(sid, []).append(f"{name}: a feature of this sample is not a number ({exc})")
                continue
            feats[sid].update({str(k): float(v) for k, v in row.items()})


def _fail_empty(samples: pd.DataFrame, feats: dict[str, dict[str, float]], errors: dict[str, list[str]]) -> None:
    """A sample that 'worked' but has no feature value at all (none, or all NaN) failed: say so, do not store it."""
    for _, row in samples.iterrows():
        sid = row["sample_id"]
        if sid in errors:
            continue
        values = list(feats[sid].values())
        if not values or all(v != v for v in values):
            what = "no feature" if not values else f"all {len(values)} features missing (NaN)"
            errors[sid] = [f"{row['path']}: nothing usable was extracted ({what}); check the file's content"]


def _map_samples(ext: Extractor, cohort: Cohort, rows: list[pd.Series], workers: int, progress: bool,
                 desc: str) -> list[dict[str, Any]]:
    if not rows:
        return []
    bar = progress_bar(total=len(rows), desc=desc, disable=not progress, unit="sample")
    try:
        # With workers > 1 even a single sample runs in a worker: a file that crashes a native library (the sample
        # of a re-run whose worker died, say) must not take the whole extraction down with it.
        if workers <= 1:
            results = []
            for r in rows:
                results.append(_run_one(ext, cohort, r))
                bar.update()
            return results
        return _map_pool(ext, cohort, rows, workers, bar)
    finally:
        bar.close()


def _map_pool(ext: Extractor, cohort: Cohort, rows: list[pd.Series], workers: int, bar: Any) -> list[dict[str, Any]]:
    """``_run_one`` over ``rows`` in worker processes, surviving workers that die.

    A dead worker breaks the pool for every sample not done yet. The pool hands samples out in order, at most
    2 x workers + 1 at a time, so the sample that killed it is among the first ones not done: those run alone, each
    in its own process (the culprit fails, with the reason), and the rest go on in a fresh pool.
    """
    results: list[dict[str, Any] | None] = [None] * len(rows)
    pending = list(range(len(rows)))
    while pending:
        broken: list[int] = []
        with ProcessPoolExecutor(max_workers=min(workers, len(pending))) as pool:
            futures: list[tuple[int, Future]] = [(i, pool.submit(_run_one, ext, cohort, rows[i])) for i in pending]
            for i, future in futures:
                try:
                    results[i] = future.result()
                    bar.update()
                except BrokenProcessPool:
                    broken.append(i)
        in_flight = 2 * workers + 1
        for i in broken[:in_flight]:
            results[i] = _run_isolated(ext, cohort, rows[i])
            bar.update()
        pending = broken[in_flight:]
    return [r for r in results if r is not None]


def _shared(ext: Extractor, cohort: Cohort, samples: pd.DataFrame) -> ExtractionResult:
    try:
        return ext.extract_shared(cohort, samples)
    except Exception as exc:  # broken as a whole (a reference, the file): every sample fails, with the reason
        reason = f"{type(exc).__name__}: {exc}"
        return ExtractionResult(pd.DataFrame(index=pd.Index([], name="sample_id")),
                                dict.fromkeys(samples["sample_id"], reason))


def _side_tables(ext: Extractor, cohort: Cohort,
                 samples: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], str | None]:
    """The extractor's side tables, or none and the reason (reported as a note, not dropped silently)."""
    try:
        return ext.side_tables(cohort, samples), None
    except Exception as exc:
        return {}, f"{type(exc).__name__}: {exc}"


def _wide_table(samples: pd.DataFrame, feats: dict[str, dict[str, float]],
                errors: dict[str, list[str]]) -> tuple[pd.DataFrame, int]:
    """Patient x ``timepoint__feature`` table of the samples that worked."""
    records: dict[str, dict[str, float]] = {}
    n_ok = 0
    for _, row in samples.iterrows():
        sid = row["sample_id"]
        if sid in errors:
            continue
        n_ok += 1
        rec = records.setdefault(row["patient_id"], {})
        for k, v in feats[sid].items():
            rec[f"{row['timepoint']}__{k}"] = v
    table = pd.DataFrame.from_dict(records, orient="index").sort_index()
    table.index.name = "patient_id"
    return table.reindex(sorted(table.columns), axis=1).astype("float64"), n_ok


def _sample_table(samples: pd.DataFrame, feats: dict[str, dict[str, float]],
                  errors: dict[str, list[str]]) -> pd.DataFrame:
    """One row per sample that worked: ``patient_id``, ``timepoint``, ``day``, then its features (sorted)."""
    ok = samples[~samples["sample_id"].isin(list(errors))]
    values = pd.DataFrame.from_dict({sid: feats[sid] for sid in ok["sample_id"]}, orient="index", dtype="float64")
    values = values.reindex(index=list(ok["sample_id"]), columns=sorted(values.columns)).astype("float64")
    head = pd.DataFrame({"patient_id": ok["patient_id"].astype(str).to_numpy(),
                         "timepoint": ok["timepoint"].astype(str).to_numpy(),
                         "day": pd.to_numeric(ok["day"], errors="coerce").astype("float64").to_numpy()},
                        index=values.index)
    table = pd.concat([head, values.drop(columns=[c for c in head.columns if c in values.columns])], axis=1)
    table.index.name = "sample_id"
    return table

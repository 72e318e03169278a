"""``omics-risk extract``: every modality of a cohort into a cached, provenance-tracked feature store.

Output (default ``COHORT/features/``):

- ``<modality>.parquet``: one row per patient with at least one usable sample of the modality, one column per
  ``<timepoint>__<feature>``;
- ``status.csv``: one row per sample of samples.csv (``ok`` or ``failed`` with the reason) and per patient
  without any sample of a modality the cohort has (``missing``): nothing is dropped silently;
- ``<modality>.<name>.csv``: side tables an extractor provides (e.g. ``metabolomics.qc.csv``, the QC report);
- ``manifest.json``: per modality the extractors, their versions and settings hashes, the feature columns,
  and a content hash of every input file, so a model can check that scoring sees what training saw;
- ``cache/``: per-sample results keyed by (extractor, version, settings, input content); a re-run recomputes
  only what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from omics_risk.data.contract import Cohort, load_cohort
from omics_risk.features.base import ExtractionResult, Extractor, SampleFailure, settings_hash
from omics_risk.progress import progress_bar

__all__ = ["ExtractSummary", "default_extract_config", "extract_cohort", "fingerprint"]

STORE_VERSION = 1


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


class _Fingerprints:
    """Memo of content hashes keyed by (path, size, mtime) so re-runs do not re-read unchanged inputs."""

    def __init__(self, file: Path):
        self.file = file
        self.memo: dict[str, list[Any]] = json.loads(file.read_text()) if file.is_file() else {}

    def __call__(self, path: Path) -> str:
        if not path.exists():
            return "missing"
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        if path.is_dir():
            stamp = [sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
                     max((p.stat().st_mtime_ns for p in path.rglob("*")), default=st.st_mtime_ns)]
        key = str(path.resolve())
        hit = self.memo.get(key)
        if hit and hit[:2] == stamp:
            return str(hit[2])
        digest = fingerprint(path)
        self.memo[key] = [*stamp, digest]
        return digest

    def save(self) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(self.file, json.dumps(self.memo))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.to_parquet(tmp)
    os.replace(tmp, path)


def _extractors_for(config: Mapping[str, Any], modality: str, fmt: str,
                    overrides: Mapping[str, Any] | None) -> list[Extractor]:
    """Extractors of one modality: a config entry named after the modality wins over the format's entry, and the
    cohort's own ``modalities: {name: {extract: {...}}}`` settings in cohort.yaml override both."""
    from hydra.utils import instantiate

    specs = config.get(modality, config.get(fmt, []))
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ValueError(f"cohort.yaml: modalities.{modality}.extract must map extractor settings to values")
    return [instantiate({**dict(spec), **dict(overrides or {})}) for spec in specs]


def default_extract_config() -> dict[str, Any]:
    """The default extractor set (kept in YAML so users can copy and edit it)."""
    import yaml

    path = Path(__file__).resolve().parent / "extract_defaults.yaml"
    return yaml.safe_load(path.read_text())


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
        failed = self.status[self.status["status"] == "failed"] if len(self.status) else self.status
        if len(failed):
            lines.append(f"{len(failed)} sample(s) failed (see {self.out / 'status.csv'}):")
            for row in failed.head(20).itertuples():
                lines.append(f"  {row.modality}/{row.sample_id} (patient {row.patient_id}): {row.reason}")
        return "\n".join(lines)


def _run_one(extractor: Extractor, cohort: Cohort, sample: pd.Series) -> dict[str, Any]:
    """Worker: features of one sample, or the reason it failed (never raises)."""
    try:
        return {"features": {k: float(v) for k, v in extractor.extract_sample(cohort, sample).items()}}
    except SampleFailure as exc:
        return {"error": str(exc)}
    except Exception as exc:  # a broken file must not abort the cohort: record it for that patient
        last = traceback.extract_tb(exc.__traceback__)[-1]
        return {"error": f"{type(exc).__name__}: {exc} (at {Path(last.filename).name}:{last.lineno})"}


def _sample_inputs(cohort: Cohort, sample: pd.Series) -> list[Path]:
    paths = [cohort.path(sample["path"])]
    if isinstance(sample.get("mask_path"), str) and sample["mask_path"]:
        paths.append(cohort.path(sample["mask_path"]))
    return paths


def extract_cohort(cohort_dir: str | Path, out: str | Path | None = None, *,
                   config: Mapping[str, Any] | None = None, modalities: Sequence[str] | None = None,
                   workers: int | None = None, force: bool = False, progress: bool = True) -> ExtractSummary:
    """Extract features for every modality of a cohort into ``out`` (default ``COHORT/features``)."""
    cohort = load_cohort(cohort_dir)
    out = Path(out) if out is not None else cohort.root / "features"
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    fps = _Fingerprints(cache / "fingerprints.json")
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
        for ext in exts:
            shash = settings_hash({"name": ext.name, "version": ext.version, **ext.settings()})
            refs = {k: fps(p) for k, p in ext.references(cohort).items()}
            ext_info.append({"name": ext.name, "class": f"{type(ext).__module__}.{type(ext).__qualname__}",
                             "version": ext.version, "settings": ext.settings(), "settings_hash": shash,
                             "references": refs})
            if ext.per_sample:
                todo = []
                for _, row in samples.iterrows():
                    digests = [fps(p) for p in _sample_inputs(cohort, row)]
                    inputs[row["sample_id"]] = ",".join(digests)
                    key = hashlib.sha256(json.dumps([shash, refs, digests]).encode()).hexdigest()[:24]
                    cfile = cache / ext.name / f"{key}.json"
                    if cfile.is_file() and not force:
                        res = json.loads(cfile.read_text())
                        cached += 1
                        _merge(res, row["sample_id"], per_sample_feats, errors)
                    else:
                        todo.append((row, cfile))
                desc = f"{mod}: {ext.name}"
                results = _map_samples(ext, cohort, [r for r, _ in todo], workers, progress, desc)
                for (row, cfile), res in zip(todo, results, strict=True):
                    cfile.parent.mkdir(parents=True, exist_ok=True)
                    _atomic_write_text(cfile, json.dumps(res))
                    _merge(res, row["sample_id"], per_sample_feats, errors)
            else:
                shared_paths = sorted({cohort.path(p) for p in samples["path"]})
                for p in shared_paths:  # a shared table in a data root (outside the cohort) keeps its full path
                    inputs[str(p.relative_to(cohort.root) if p.is_relative_to(cohort.root) else p)] = fps(p)
                result = _shared(ext, cohort, samples)
                for tname, tdf in _side_tables(ext, cohort, samples).items():
                    fname = f"{mod}.{tname}.csv"
                    tdf.to_csv(out / fname)
                    side_files.append(fname)
                for sid in samples["sample_id"]:
                    if sid in result.failures:
                        errors.setdefault(sid, []).append(f"{ext.name}: {result.failures[sid]}")
                    elif sid in result.features.index:
                        per_sample_feats[sid].update(result.features.loc[sid].astype(float).to_dict())
                    else:
                        errors.setdefault(sid, []).append(f"{ext.name}: sample not found in the shared file")
        table, n_ok = _wide_table(samples, per_sample_feats, errors)
        _atomic_write_parquet(table, out / f"{mod}.parquet")
        for _, row in samples.iterrows():
            sid = row["sample_id"]
            status_rows.append({"patient_id": row["patient_id"], "modality": mod, "timepoint": row["timepoint"],
                                "sample_id": sid, "status": "failed" if sid in errors else "ok",
                                "reason": "; ".join(errors.get(sid, []))})
        for pid in sorted(set(cohort.patients) - set(samples["patient_id"])):
            status_rows.append({"patient_id": pid, "modality": mod, "timepoint": "", "sample_id": "",
                                "status": "missing", "reason": "no sample of this modality"})
        manifest["modalities"][mod] = {"format": ms.format, "extractors": ext_info, "columns": list(table.columns),
                                       "patients": len(table), "inputs": inputs, "side_tables": side_files}
        summary.modalities[mod] = {"patients": len(table), "n_features": table.shape[1], "ok": n_ok,
                                   "failed": len(errors), "cached": cached}
    fps.save()
    status = pd.DataFrame(status_rows, columns=["patient_id", "modality", "timepoint", "sample_id", "status",
                                                "reason"])
    status.to_csv(out / "status.csv", index=False)
    _atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1, default=str))
    summary.status = status
    return summary


def _merge(res: dict[str, Any], sid: str, feats: dict[str, dict[str, float]], errors: dict[str, list[str]]) -> None:
    if "error" in res:
        errors.setdefault(sid, []).append(res["error"])
    else:
        feats[sid].update(res["features"])


def _map_samples(ext: Extractor, cohort: Cohort, rows: list[pd.Series], workers: int, progress: bool,
                 desc: str) -> list[dict[str, Any]]:
    if not rows:
        return []
    bar = progress_bar(total=len(rows), desc=desc, disable=not progress, unit="sample")
    try:
        if workers <= 1 or len(rows) == 1:
            results = []
            for r in rows:
                results.append(_run_one(ext, cohort, r))
                bar.update()
            return results
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_run_one, ext, cohort, r) for r in rows]
            results = []
            for f in futures:
                results.append(f.result())
                bar.update()
            return results
    finally:
        bar.close()


def _shared(ext: Extractor, cohort: Cohort, samples: pd.DataFrame) -> ExtractionResult:
    try:
        return ext.extract_shared(cohort, samples)
    except Exception as exc:  # the shared file is broken: every sample of the modality fails, with the reason
        reason = f"{type(exc).__name__}: {exc}"
        return ExtractionResult(pd.DataFrame(index=pd.Index([], name="sample_id")),
                                dict.fromkeys(samples["sample_id"], reason))


def _side_tables(ext: Extractor, cohort: Cohort, samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
    try:
        return ext.side_tables(cohort, samples)
    except Exception:  # the features' own failure is reported through extract_shared; side tables are extras
        return {}


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

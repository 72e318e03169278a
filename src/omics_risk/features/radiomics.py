"""Radiomics: hand-crafted shape, intensity and texture features of a CT tumour, computed with pyradiomics.

pyradiomics follows the IBSI definitions (and documents each deviation), so features computed here can be compared
with published signatures. Its settings live in a pyradiomics parameter file (``configs/features/radiomics.yaml``;
:data:`DEFAULT_PARAMS` is the same content built in) and the whole parsed content is hashed into every cache key.

Two ways in:

- :class:`RadiomicsExtractor`: the ``image`` extractor of ``omics-risk extract`` (the orchestrator caches and
  parallelises per sample);
- :func:`extract_radiomics`: standalone, over a cohort or a list of (sample_id, image, mask), in parallel processes
  on all cores with a progress bar and its own per-(image, mask, settings) content cache.

Feature names are pyradiomics' (``original_glcm_Contrast``, ``log-sigma-2-0-mm-3D_firstorder_Mean``,
``wavelet-LLH_glszm_ZoneEntropy``) prefixed ``rad_``; ``diagnostics_*`` entries are provenance and are dropped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from joblib import Parallel, delayed
from joblib.externals.loky.process_executor import TerminatedWorkerError
from omegaconf import ListConfig

from omics_risk.atomic import atomic_write_text
from omics_risk.data.contract import Cohort, load_cohort
from omics_risk.data.readers import DataFileError, check_mask_geometry, read_image
from omics_risk.features.base import (
    ExtractionResult,
    Extractor,
    SampleFailure,
    read_cached_result,
    settings_hash,
)
from omics_risk.features.extract import memo_fingerprint
from omics_risk.progress import progress_bar

__all__ = [
    "DEFAULT_PARAMS",
    "FEATURE_PREFIX",
    "RadiomicsExtractor",
    "extract_radiomics",
    "load_params",
    "radiomics_features",
]

#: Prefix of every radiomics feature column.
FEATURE_PREFIX = "rad_"

_GLCM_NO_SUM_AVERAGE = [
    "Autocorrelation",
    "ClusterProminence",
    "ClusterShade",
    "ClusterTendency",
    "Contrast",
    "Correlation",
    "DifferenceAverage",
    "DifferenceEntropy",
    "DifferenceVariance",
    "Id",
    "Idm",
    "Idmn",
    "Idn",
    "Imc1",
    "Imc2",
    "InverseVariance",
    "JointAverage",
    "JointEnergy",
    "JointEntropy",
    "MCC",
    "MaximumProbability",
    "SumEntropy",
    "SumSquares",
]

#: The built-in settings, identical to configs/features/radiomics.yaml (see the comments there).
DEFAULT_PARAMS: dict[str, Any] = {
    "setting": {
        "binWidth": 25,
        "resampledPixelSpacing": [2, 2, 2],
        "interpolator": "sitkBSpline",
        "padDistance": 10,
        "label": 1,
        "voxelArrayShift": 1000,
        "normalize": False,
        "minimumROIDimensions": 2,
        "correctMask": False,
        "additionalInfo": False,
    },
    "imageType": {"Original": {}, "LoG": {"sigma": [2.0, 3.0, 4.0]}, "Wavelet": {}},
    "featureClass": {
        "shape": None,
        "firstorder": None,
        "glcm": _GLCM_NO_SUM_AVERAGE,
        "glrlm": None,
        "glszm": None,
        "gldm": None,
        "ngtdm": None,
    },
}

_SECTIONS = ("setting", "imageType", "featureClass", "voxelSetting")


def _plain(obj: Any) -> Any:
    """Plain dict/list/scalar copy (OmegaConf containers and tuples included), so params hash and pickle stably."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, ListConfig):  # omegaconf ListConfig is neither a list nor a tuple
        return [_plain(v) for v in obj]
    return obj


def load_params(params: str | Path | Mapping[str, Any] | None = None, *, label: int | None = None) -> dict[str, Any]:
    """pyradiomics parameters as a plain dict, validated by pyradiomics.

    ``params`` is a parameter file (YAML or JSON), a mapping in the same layout, or None for :data:`DEFAULT_PARAMS`.
    ``label`` overrides ``setting.label`` (the tumour's value in the masks).
    """
    if params is None:
        out = copy.deepcopy(DEFAULT_PARAMS)
    elif isinstance(params, (str, Path)):
        path = Path(params)
        if not path.is_file():
            raise FileNotFoundError(
                f"radiomics parameter file {path} not found; pass a pyradiomics parameter file "
                "such as configs/features/radiomics.yaml, or None for the built-in defaults"
            )
        out = _plain(yaml.safe_load(path.read_text()) or {})
    elif isinstance(params, Mapping):
        out = _plain(params)
    else:
        raise TypeError(f"params must be a path, a mapping or None, got {type(params).__name__}")
    unknown = sorted(set(out) - set(_SECTIONS))
    if unknown:
        raise ValueError(
            f"radiomics parameters have unknown section(s) {unknown}; pyradiomics reads {', '.join(_SECTIONS)}"
        )
    if label is not None:
        out.setdefault("setting", {})["label"] = int(label)
    _pyradiomics_extractor(json.dumps(out, sort_keys=True))  # validates (pykwalify) and builds it once
    return out


def _import_radiomics() -> Any:
    """pyradiomics, quiet: its import sets its logger to INFO (a record per step); only warnings are worth showing."""
    import radiomics  # lazy: pyradiomics (and its logger set-up) loads only when a scan is described

    logging.getLogger("radiomics").setLevel(logging.WARNING)
    return radiomics


@lru_cache(maxsize=8)
def _pyradiomics_extractor(params_json: str) -> Any:
    """One pyradiomics extractor per settings and process (building it validates the parameters)."""
    _import_radiomics()
    from radiomics import featureextractor  # lazy, as _import_radiomics

    try:
        with warnings.catch_warnings():  # pykwalify loads pyradiomics' schema functions with the deprecated load_module
            warnings.simplefilter("ignore", DeprecationWarning)
            return featureextractor.RadiomicsFeatureExtractor(json.loads(params_json))
    except Exception as exc:  # pykwalify SchemaError and friends: name the problem, not the validator internals
        raise ValueError(f"invalid radiomics parameters: {exc}") from exc


def _pyradiomics_version() -> str:
    return str(_import_radiomics().__version__)


def _label_of(params: Mapping[str, Any]) -> int:
    return int(params.get("setting", {}).get("label", 1) or 1)


def radiomics_features(image: str | Path | Any, mask: str | Path | Any, params: Mapping[str, Any]) -> dict[str, float]:
    """Radiomics features of one scan inside its tumour mask: ``{rad_<pyradiomics name>: value}``.

    ``image`` and ``mask`` are paths (any format :func:`~omics_risk.data.readers.read_image` reads, DICOM folders
    included) or SimpleITK images; ``params`` comes from :func:`load_params`. A scan that cannot be described (an
    unreadable file, a mask off the image grid, no voxel with the tumour label, a lesion too small for pyradiomics)
    raises :class:`SampleFailure` with the reason.
    """
    import SimpleITK as sitk  # lazy: loads with pyradiomics, when a scan is described

    names = [Path(p).name if isinstance(p, (str, Path)) else "(image in memory)" for p in (image, mask)]
    try:
        img = read_image(image) if isinstance(image, (str, Path)) else image
        msk = read_image(mask) if isinstance(mask, (str, Path)) else mask
    except DataFileError as exc:
        raise SampleFailure(str(exc)) from exc
    label = _label_of(params)
    setting = params.get("setting", {})
    if not setting.get("correctMask", False):
        problems = [p for p in check_mask_geometry(img, msk) if not p.startswith("mask is empty")]
        if problems:
            raise SampleFailure(f"mask {names[1]} does not fit image {names[0]}: " + "; ".join(problems))
    values = sitk.GetArrayViewFromImage(msk)
    present = np.unique(values[values != 0])
    if present.size == 0:
        raise SampleFailure(
            f"mask {names[1]} is empty (no voxel > 0): there is no tumour to describe; re-export the segmentation"
        )
    if label not in present:
        shown = ", ".join(f"{v:g}" for v in present[:10]) + (" ..." if present.size > 10 else "")
        raise SampleFailure(
            f"mask {names[1]} has no voxel with label {label} (labels present: {shown}); "
            "set setting.label in the radiomics parameters (or the extractor's label) to the "
            "tumour's label"
        )
    if msk.GetPixelID() != sitk.sitkUInt32:
        msk = sitk.Cast(msk, sitk.sitkUInt32)
    extractor = _pyradiomics_extractor(json.dumps(_plain(params), sort_keys=True))
    # pyradiomics filters the tumour's bounding box only: ITK's threads cost more than they gain on such small
    # images and stall when other processes hold the cores (1.5-3x slower on 2 shared cores). Scans run in parallel
    # processes instead; the process-wide ITK setting is restored afterwards.
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        result = extractor.execute(img, msk, label=label)
    except ValueError as exc:  # pyradiomics' checks: too small a lesion, geometry mismatch beyond tolerance
        raise SampleFailure(f"pyradiomics cannot use mask {names[1]}: {exc}") from exc
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    return {FEATURE_PREFIX + k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}


class RadiomicsExtractor(Extractor):
    """pyradiomics features of each CT scan inside its tumour mask (``rad_*`` columns).

    Args:
        params: a pyradiomics parameter file, a mapping in that layout, or None for :data:`DEFAULT_PARAMS`
            (= configs/features/radiomics.yaml).
        label: the tumour's value in the masks, overriding ``setting.label``.
    """

    name = "radiomics"
    formats = ("image",)
    version = "1"
    per_sample = True

    def __init__(self, params: str | Path | Mapping[str, Any] | None = None, label: int | None = None):
        self.params = load_params(params, label=label)

    def settings(self) -> dict[str, Any]:
        """The resolved parameters and the pyradiomics version (its output may change between releases)."""
        return {**super().settings(), "pyradiomics": _pyradiomics_version()}

    def extract_sample(self, cohort: Cohort, sample: pd.Series) -> dict[str, float]:
        mask = sample.get("mask_path")
        if not isinstance(mask, str) or not mask.strip():
            raise SampleFailure("no mask_path: radiomics needs the tumour mask of the scan (samples.csv mask_path)")
        return radiomics_features(cohort.path(sample["path"]), cohort.path(mask), self.params)


# ------------------------------------------------------------------------------------------------ standalone use


def _content_hash(path: Path) -> str:
    """Content hash of a file or DICOM folder, memoised on (path, size, mtime) within the process."""
    return memo_fingerprint(path) if path.exists() else "missing"


def _pairs_of(
    source: Cohort | str | Path | pd.DataFrame | Iterable[Sequence[Any]], modalities: Sequence[str] | None
) -> list[tuple[str, Path, Path | None]]:
    """(sample_id, image, mask) of every image sample of a cohort, a samples table or an explicit list."""
    if isinstance(source, (str, Path)):
        source = load_cohort(source)
    if isinstance(source, Cohort):
        mods = (
            list(modalities)
            if modalities
            else [m for m in source.modalities if (s := source.spec.modality(m)) is not None and s.format == "image"]
        )
        frames = [source.samples_of(m) for m in mods]
        table = pd.concat(frames) if frames else source.samples.iloc[:0]
        return [
            (
                str(r.sample_id),
                source.path(r.path),
                source.path(r.mask_path) if isinstance(r.mask_path, str) and r.mask_path else None,
            )
            for r in table.itertuples()
        ]
    if isinstance(source, pd.DataFrame):
        missing = {"sample_id", "path", "mask_path"} - set(source.columns)
        if missing:
            raise ValueError(f"the samples table needs columns sample_id, path, mask_path (missing: {sorted(missing)})")
        return [
            (str(r.sample_id), Path(r.path), Path(r.mask_path) if isinstance(r.mask_path, str) else None)
            for r in source.itertuples()
        ]
    out = []
    for item in source:
        if len(item) != 3:
            raise ValueError(f"expected (sample_id, image, mask) triples, got {item!r}")
        sid, img, msk = item
        out.append((str(sid), Path(img), Path(msk) if msk else None))
    return out


def _job(image: Path, mask: Path | None, params_json: str) -> dict[str, Any]:
    """Worker: features of one pair or the reason it failed (never raises); ``cache: False`` marks surprises."""
    try:
        if mask is None:
            raise SampleFailure("no mask: radiomics needs the tumour mask of the scan")
        return {"features": radiomics_features(image, mask, json.loads(params_json))}
    except SampleFailure as exc:
        return {"error": str(exc)}
    except Exception as exc:  # one broken scan must not stop the cohort; not cached, it may be transient
        return {"error": f"{type(exc).__name__}: {exc}", "cache": False}


def extract_radiomics(
    source: Cohort | str | Path | pd.DataFrame | Iterable[Sequence[Any]],
    params: str | Path | Mapping[str, Any] | None = None,
    *,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    label: int | None = None,
    modalities: Sequence[str] | None = None,
) -> ExtractionResult:
    """Radiomics features of many scans, in parallel processes, with an on-disk content cache.

    Args:
        source: a :class:`~omics_risk.data.contract.Cohort` or cohort folder (every sample of its ``image``
            modalities, or of ``modalities``), a table with ``sample_id, path, mask_path`` (absolute paths), or
            ``(sample_id, image, mask)`` triples.
        params: pyradiomics parameters (see :func:`load_params`); ``label`` overrides ``setting.label``.
        workers: processes (default: all cores); 1 runs in this process.
        cache_dir: results are kept per (image content, mask content, settings) under
            ``cache_dir/<settings hash>/``, so a re-run computes only new or changed scans.
        progress: show a progress bar.

    Returns:
        :class:`ExtractionResult`: features indexed by ``sample_id`` (input order; ``rad_*`` float columns) and,
        for every sample that failed, the reason.
    """
    pairs = _pairs_of(source, modalities)
    resolved = load_params(params, label=label)
    params_json = json.dumps(resolved, sort_keys=True)
    shash = settings_hash(
        {"params": resolved, "pyradiomics": _pyradiomics_version(), "version": RadiomicsExtractor.version}
    )
    workers = max(1, int(workers or os.cpu_count() or 1))
    results: dict[str, dict[str, Any]] = {}
    todo: list[tuple[str, Path, Path | None, Path | None]] = []
    cache = Path(cache_dir) / shash if cache_dir is not None else None
    for sid, img, msk in pairs:
        cfile = None
        if cache is not None:
            try:
                key = hashlib.sha256(
                    f"{_content_hash(img)}|{_content_hash(msk) if msk else '-'}".encode()
                ).hexdigest()
            except OSError as exc:  # an unreadable scan fails alone (no content, no cache key)
                results[sid] = {"error": f"{exc.filename or img} cannot be read ({exc.strerror or exc})"}
                continue
            cfile = cache / f"{key[:32]}.json"
            hit = read_cached_result(cfile, failures=True)  # data problems are deterministic
            if hit is not None:
                results[sid] = hit
                continue
        todo.append((sid, img, msk, cfile))

    def save(cfile: Path | None, res: dict[str, Any]) -> None:
        if cfile is None or not res.pop("cache", True):
            return
        cfile.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cfile, json.dumps(res))

    bar = progress_bar(total=len(todo), desc="radiomics", unit="scan", disable=not progress)
    try:
        if workers == 1 or not todo:  # with workers > 1 a lone scan runs in a worker too: a crash stays there
            for sid, img, msk, cfile in todo:
                res = _job(img, msk, params_json)
                save(cfile, res)
                results[sid] = res
                bar.update()
        else:
            run = Parallel(n_jobs=min(workers, len(todo)), backend="loky", return_as="generator_unordered")
            tasks = (delayed(_indexed)(i, img, msk, params_json) for i, (_, img, msk, _) in enumerate(todo))
            done: set[int] = set()
            try:
                for i, res in run(tasks):
                    sid, _, _, cfile = todo[i]
                    save(cfile, res)
                    results[sid] = res
                    done.add(i)
                    bar.update()
            except _WORKER_DEATH:  # a scan killed a worker: the scans not done yet run alone, each in its process
                for i, (sid, img, msk, cfile) in enumerate(todo):
                    if i not in done:
                        res = _job_isolated(img, msk, params_json)
                        save(cfile, res)
                        results[sid] = res
                        bar.update()
    finally:
        bar.close()

    rows = {sid: results[sid]["features"] for sid, _, _ in pairs if "features" in results[sid]}
    failures = {sid: results[sid]["error"] for sid, _, _ in pairs if "error" in results[sid]}
    features = pd.DataFrame.from_dict(rows, orient="index", dtype="float64")
    features.index.name = "sample_id"
    return ExtractionResult(features, failures)


def _indexed(i: int, image: Path, mask: Path | None, params_json: str) -> tuple[int, dict[str, Any]]:
    return i, _job(image, mask, params_json)


def _worker_death() -> tuple[type[BaseException], ...]:
    """The errors joblib (loky) and concurrent.futures raise when a worker process dies."""
    return (BrokenProcessPool, TerminatedWorkerError)


_WORKER_DEATH = _worker_death()


def _job_isolated(image: Path, mask: Path | None, params_json: str) -> dict[str, Any]:
    """One scan in a process of its own, so that a scan that kills a process fails alone (not cached)."""
    try:
        with ProcessPoolExecutor(max_workers=1) as pool:
            return pool.submit(_job, image, mask, params_json).result()
    except BrokenProcessPool as exc:
        return {
            "error": f"the process describing {image.name} died ({exc}); a native library probably crashed on "
            "the scan or its mask, or the machine ran out of memory",
            "cache": False,
        }


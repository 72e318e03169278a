"""Cohort assembly: the plan every kind produces, parallel rendering of per-patient files, and writing.

A kind module (``nsclc_postop``, ``sclc``, ``nsclc_advanced``) turns (n, seed) into a :class:`CohortPlan`:
all patient-level biology, outcomes, tables and truth are drawn in the main process from per-purpose random
streams; heavy per-patient files (CT volumes, fragment files, methylation libraries) are described as
:class:`PatientJob` records carrying their own ``SeedSequence`` child, so the files do not depend on how
many worker processes render them.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from omics_risk.data.synthetic import fragments as frag
from omics_risk.data.synthetic import imaging, methylation
from omics_risk.data.synthetic.biology import harrell_c, roc_auc
from omics_risk.data.synthetic.genome import Genome, get_genome, write_reference
from omics_risk.progress import progress_bar

GENERATOR_VERSION = "1.2.0"
#: Tumour fractions each plasma assay resolves; below them a modality's view of the tumour fraction is flat.
DETECTION_LIMIT = {"cfdna": 1e-2, "methylation": 1e-3, "ctdna": 1e-4}
SAMPLE_COLUMNS = ["patient_id", "sample_id", "modality", "timepoint", "day", "path", "mask_path"]
#: Top-level entries a generator writes; ``overwrite=True`` removes only a directory that holds a cohort.
GENERATED = ("cohort.yaml", "clinical.csv", "samples.csv", "truth", "reference", "ct", "cfdna", "methylation",
             "ctdna", "metabolomics", "recist", "features")  # features/: the store extracted from a previous cohort


@dataclass
class SynthOptions:
    """Sizes of the generated data (the speed/realism trade-off)."""

    ct_shape: tuple[int, int, int] = imaging.DEFAULT_SHAPE
    ct_spacing: tuple[float, float, float] = imaging.DEFAULT_SPACING
    fragments_per_sample: int = 80_000
    n_metabolites: int = 250
    genome_scale: int = 120
    #: nsclc-advanced only: a plasma draw every this many days instead of before every 21-day cycle (None: the
    #: cycle schedule, byte-identical to earlier cohorts); 1 = daily draws, where monitoring's sampling delay vanishes
    draw_every: int | None = None


@dataclass
class PatientJob:
    """The heavy files of one patient, rendered in a worker with the patient's own random stream."""

    patient_id: str
    seed: np.random.SeedSequence
    tumour_type: str
    ct: list[dict[str, Any]] = field(default_factory=list)  # sample_id, path, mask_path, params
    fragments: list[dict[str, Any]] = field(default_factory=list)  # sample_id, path, tumour_fraction
    methylation: list[dict[str, Any]] = field(default_factory=list)  # sample_id, path, tumour_fraction
    arm_cn: np.ndarray | None = None
    focal: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class CohortPlan:
    """Everything a kind decides; :func:`write_cohort` turns it into the contract layout."""

    kind: str
    name: str
    tumour_type: str
    clinical: pd.DataFrame
    clinical_types: dict[str, Any]
    endpoints: dict[str, dict[str, str]]
    modalities: dict[str, dict[str, str]]
    samples: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    jobs: list[PatientJob]
    truth_patients: pd.DataFrame
    truth_samples: pd.DataFrame
    main_endpoint: str
    #: modality -> noise-free per-patient quantities it encodes (used for the per-modality share of risk).
    views: dict[str, pd.DataFrame]
    truth_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary_extra: dict[str, Any] = field(default_factory=dict)


def streams(seed: np.random.SeedSequence, names: list[str]) -> dict[str, np.random.Generator]:
    """Independent random streams per purpose, so changing one part of a kind does not reshuffle the rest."""
    return {nm: np.random.default_rng(s) for nm, s in zip(names, seed.spawn(len(names)), strict=True)}


def sample_row(pid: str, modality: str, timepoint: str, day: float, path: str, mask_path: str = "") -> dict:
    return {"patient_id": pid, "sample_id": f"{pid}_{modality}_{timepoint}", "modality": modality,
            "timepoint": timepoint, "day": round(float(day)), "path": path, "mask_path": mask_path}


# --------------------------------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def _init_worker(opts: SynthOptions, out: str) -> None:
    _WORKER["opts"] = opts
    _WORKER["out"] = Path(out)
    _WORKER["genome"] = get_genome(opts.genome_scale)


def _render_patient(job: PatientJob) -> list[dict[str, Any]]:
    """Write one patient's CT, fragment and methylation files; return per-sample truth extras."""
    opts: SynthOptions = _WORKER["opts"]
    out: Path = _WORKER["out"]
    genome: Genome = _WORKER["genome"]
    rng = np.random.default_rng(job.seed)
    anatomy_seed, shape_seed = (int(x) for x in rng.integers(0, 2**62, 2))
    extras: list[dict[str, Any]] = []
    for ct in job.ct:
        hu, mask = imaging.render_ct(ct["params"], opts.ct_shape, opts.ct_spacing, anatomy_seed, shape_seed, rng)
        imaging.write_nifti(hu, opts.ct_spacing, out / ct["path"])
        imaging.write_nifti(mask, opts.ct_spacing, out / ct["mask_path"])
        voxel_ml = float(np.prod(opts.ct_spacing)) / 1000
        extras.append({"sample_id": ct["sample_id"], "lesion_volume_ml": round(float(mask.sum()) * voxel_ml, 3)})
    if job.fragments:
        bin_cn = frag.bin_copy_numbers(genome, job.arm_cn, job.focal)
        for f in job.fragments:
            n = max(round(opts.fragments_per_sample * float(np.exp(rng.normal(0, 0.15)))), 100)
            df = frag.simulate_fragments(rng, genome, n, f["tumour_fraction"], bin_cn)
            frag.write_fragments(df, genome, out / f["path"])
            extras.append({"sample_id": f["sample_id"], "n_fragments": n,
                           "n_tumour_fragments": int(df["tumour"].sum())})
    if job.methylation:
        tumour_beta = methylation.patient_tumour_betas(rng, genome, job.tumour_type)
        for m in job.methylation:
            df = methylation.simulate_methylation(rng, genome, m["tumour_fraction"], tumour_beta,
                                                  float(rng.uniform(20, 40)))
            methylation.write_cov(df, out / m["path"])
    return extras


def render_jobs(jobs: list[PatientJob], opts: SynthOptions, out: Path, workers: int | None,
                progress: bool) -> list[dict[str, Any]]:
    """Render all patients, in worker processes when useful; results are independent of ``workers``."""
    workers = workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(jobs)))
    bar = progress_bar(total=len(jobs), desc="patients", unit="pt", disable=not progress)
    extras: list[list[dict[str, Any]]] = [[] for _ in jobs]
    try:
        if workers == 1:
            _init_worker(opts, str(out))
            for i, job in enumerate(jobs):
                extras[i] = _render_patient(job)
                bar.update()
        else:
            methods = mp.get_all_start_methods()
            ctx = mp.get_context("fork" if "fork" in methods else None)  # fork shares the cached genome
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(opts, str(out))) as pool:
                futures = {pool.submit(_render_patient, job): i for i, job in enumerate(jobs)}
                for fut in as_completed(futures):
                    extras[futures[fut]] = fut.result()
                    bar.update()
    finally:
        bar.close()
    return [e for ex in extras for e in ex]


# --------------------------------------------------------------------------------------------------- writing

def prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty directory unless ``overwrite`` and it holds a previous cohort (never rm -rf a home)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"output directory {out} is not empty; choose a new --out or pass "
                                  "overwrite=True (--overwrite) to replace the cohort in it")
        unknown = sorted(p.name for p in out.iterdir() if p.name not in GENERATED)
        if (not (out / "cohort.yaml").exists() and not (out / "truth").exists()) or unknown:
            raise FileExistsError(f"refusing to overwrite {out}: it does not look like a synthetic cohort "
                                  f"(unexpected entries: {', '.join(unknown) or 'no cohort.yaml'})")
        for name in GENERATED:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _csv(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, lineterminator="\n", float_format="%.6g")


def _round(x: Any, nd: int = 4) -> Any:
    if isinstance(x, dict):
        return {k: _round(v, nd) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_round(v, nd) for v in x]
    if isinstance(x, float | np.floating):
        return None if not np.isfinite(x) else float(f"{float(x):.{nd}g}")
    if isinstance(x, np.integer):
        return int(x)
    return x


def modality_shares(plan: CohortPlan, eta: np.ndarray) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per modality: the best linear predictor of the true log-hazard from what it encodes, and its R^2."""
    fitted: dict[str, np.ndarray] = {}
    r2: dict[str, float] = {}
    for mod, sig in plan.views.items():
        x = np.column_stack([np.ones(len(eta)), sig.to_numpy(dtype=float)])
        coef, *_ = np.linalg.lstsq(x, eta, rcond=None)
        fit = x @ coef
        fitted[f"view_{mod}"] = fit
        r2[mod] = float(1 - np.var(eta - fit) / np.var(eta))
    return pd.DataFrame(fitted), r2


def _endpoint_metric(clin: pd.DataFrame, ep: dict[str, str], score: np.ndarray) -> float:
    """Harrell's C for a survival endpoint, ROC AUC for a binary one."""
    if ep["type"] == "survival":
        t = pd.to_numeric(clin[ep["time"]]).to_numpy(float)
        e = pd.to_numeric(clin[ep["event"]]).to_numpy(float)
        return harrell_c(t, e, score)
    return roc_auc(pd.to_numeric(clin[ep["column"]]).to_numpy(float), score)


def summarise(plan: CohortPlan, n: int, seed: int) -> dict[str, Any]:
    """truth/summary.json: oracle discrimination, event rates, per-modality ceilings and missingness."""
    clin = plan.clinical
    tp = plan.truth_patients
    oracle_c: dict[str, float] = {}
    oracle_auc: dict[str, float] = {}
    rates: dict[str, Any] = {}
    ceilings: dict[str, dict[str, float]] = {}
    shares: dict[str, dict[str, float]] = {}
    for name, ep in plan.endpoints.items():
        risk = tp[f"true_risk_{name}"].to_numpy(float)
        if ep["type"] == "survival":
            oracle_c[name] = _endpoint_metric(clin, ep, risk)
            e = pd.to_numeric(clin[ep["event"]]).to_numpy(float)
            t = pd.to_numeric(clin[ep["time"]]).to_numpy(float)
            rates[name] = {"event_rate": float(np.nanmean(e)), "median_time_days": float(np.nanmedian(t))}
        else:
            oracle_auc[name] = _endpoint_metric(clin, ep, risk)
            y = pd.to_numeric(clin[ep["column"]]).to_numpy(float)
            rates[name] = {"positive_rate": float(np.nanmean(y)), "missing_rate": float(np.mean(np.isnan(y)))}
        views, r2 = modality_shares(plan, risk)
        ceilings[name] = {col[5:]: _endpoint_metric(clin, ep, views[col].to_numpy()) for col in views.columns}
        shares[name] = r2
    s = plan.samples
    missing = {mod: float(1 - s.loc[s["modality"] == mod, "patient_id"].nunique() / n)
               for mod in sorted(s["modality"].unique())}
    by_tp = {f"{mod}/{tpt}": float(1 - g["patient_id"].nunique() / n)
             for (mod, tpt), g in s.groupby(["modality", "timepoint"], sort=True)}
    out = {
        "kind": plan.kind, "n": n, "seed": seed, "generator_version": GENERATOR_VERSION,
        "main_endpoint": plan.main_endpoint,
        "oracle_cindex": oracle_c,
        **({"oracle_auc": oracle_auc} if oracle_auc else {}),
        "endpoints": rates,
        "modality_ceiling": ceilings,
        "modality_r2": shares,
        "modality_ceiling_note": "per endpoint: C-index (AUC for binary endpoints) of the best linear predictor of "
                                 "the true risk from the noise-free quantities each modality encodes (an upper "
                                 "bound for a model on that modality alone); modality_r2 is its share of the "
                                 "true risk's variance",
        "missing_rate": missing,
        "missing_rate_by_timepoint": by_tp,
        "patients_without_samples": float(1 - s["patient_id"].nunique() / n),
        "n_samples": {mod: int((s["modality"] == mod).sum()) for mod in sorted(s["modality"].unique())},
        **plan.summary_extra,
    }
    return _round(out)


def write_cohort(plan: CohortPlan, out: Path, opts: SynthOptions, n: int, seed: int, workers: int | None,
                 progress: bool, genome: Genome) -> Path:
    """Write reference, tables, per-patient files, truth, and finally cohort.yaml (a partial run has none)."""
    refs = write_reference(genome, out, plan.tumour_type)
    for mod in ("ct", "cfdna", "methylation"):
        if (plan.samples["modality"] == mod).any():
            (out / mod).mkdir(exist_ok=True)
    for rel, table in plan.tables.items():
        _csv(table, out / rel)
    extras = render_jobs(plan.jobs, opts, out, workers, progress)

    samples = plan.samples[SAMPLE_COLUMNS].reset_index(drop=True)
    _csv(samples, out / "samples.csv")
    _csv(plan.clinical, out / "clinical.csv")

    truth = out / "truth"
    summary = summarise(plan, n, seed)
    eta = plan.truth_patients[f"true_risk_{plan.main_endpoint}"].to_numpy(float)
    views, _ = modality_shares(plan, eta)
    tp = pd.concat([plan.truth_patients.reset_index(drop=True), views.round(5)], axis=1)
    _csv(tp, truth / "patients.csv")
    ts = plan.truth_samples
    if extras:
        ts = ts.merge(pd.DataFrame(extras), on="sample_id", how="left")
        for col in ("n_fragments", "n_tumour_fragments"):
            if col in ts:
                ts[col] = ts[col].astype("Int64")
    ts = samples[["sample_id", "patient_id", "modality", "timepoint", "day"]].merge(ts, on="sample_id", how="left")
    _csv(ts, truth / "samples.csv")
    for rel, table in plan.truth_tables.items():
        _csv(table, truth / rel)
    (truth / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    spec = {
        "contract_version": 1,
        "name": plan.name,
        "time_unit": "days",
        "endpoints": plan.endpoints,
        "clinical": plan.clinical_types,
        "modalities": plan.modalities,
        "references": refs,
    }
    (out / "cohort.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=120))
    return out


"""``omics-risk validate COHORT``: check a cohort directory against the data contract and report every problem.

The tables (cohort.yaml, clinical.csv, samples.csv) are checked by :mod:`omics_risk.data.contract`; this module
adds what needs the file system and the data files: every referenced file exists and has the modality's format,
opens with its reader (:mod:`omics_risk.data.readers`), masks lie on their image's grid, shared tables hold the
samples that samples.csv gives them, the cohort-level reference files are usable, and no sample is dated after its
patient's outcome (:mod:`omics_risk.data.time_checks`, warnings). Nothing stops at the first problem; data files
are opened in parallel threads because a real cohort has hundreds of them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import pandas as pd

from omics_risk.data import readers
from omics_risk.data.contract import (
    CLINICAL_FILE,
    SAMPLES_FILE,
    SPEC_FILE,
    Cohort,
    CohortSpec,
    ModalitySpec,
    Problem,
    parse_spec,
    read_clinical,
    read_samples,
)
from omics_risk.data.file_checks import REFERENCE_CHECKS, FileCheck, check_of
from omics_risk.data.file_checks import FileJob as _Job
from omics_risk.data.file_checks import FileResult as _Result
from omics_risk.data.formats import get_format
from omics_risk.data.paths import Confinement, printable
from omics_risk.data.readers import DataFileError, FileIssue
from omics_risk.data.time_checks import check_sample_times
from omics_risk.data.validation_report import COVERAGE_COLUMNS, ValidationReport
from omics_risk.progress import progress_bar

__all__ = ["ValidationReport", "validate_cohort"]

#: Fewer data files than this are opened one after the other: threads would not pay off.
PARALLEL_MIN_JOBS = 4
#: At most this many "sample in the file but not in samples.csv" warnings per shared file; the rest are counted.
MAX_ORPHAN_WARNINGS = 10


# --------------------------------------------------------------------------------------------------- jobs


def _job_settings(job: _Job, modality: str | None, spec: CohortSpec, root: Path, max_image_voxels: int) -> _Job:
    """``job`` with the cohort-level settings its opener needs (workers see no cohort.yaml).

    Images get the voxel limit. Fragment files get what the fragmentomics binning will use, resolved as the
    extractor does: ``references: chrom_sizes``, else ``genome_fasta``, else the file's own chromosomes, selected
    by the modality's ``extract: chroms`` in cohort.yaml (default autosomes).
    """
    fmt = get_format(job.kind)
    if fmt is not None and fmt.needs_mask:
        return replace(job, settings={"max_image_voxels": max_image_voxels})
    if job.kind in readers.MAPPABLE and modality and spec.columns_of(modality):
        return replace(job, settings={"columns": spec.columns_of(modality)})
    if job.kind != "fragments":
        return job
    ms = spec.modality(modality) if modality else None
    extract = ms.options.get("extract") if ms is not None else None
    chroms: Any = readers.DEFAULT_BINNED_CHROMS
    if isinstance(extract, Mapping) and "chroms" in extract:
        chroms = extract["chroms"]
        if isinstance(chroms, list | tuple) and all(isinstance(c, str | int) for c in chroms):
            chroms = [str(c) for c in chroms]
        elif chroms not in ("autosomes", "all"):
            chroms = None  # a malformed setting is extract's to report; no naming check against it
    reference = None
    for kind in ("chrom_sizes", "genome_fasta"):
        rel = spec.references.get(kind)
        if rel and (root / rel).is_file():
            reference = (str(root / rel), kind, f"references.{kind}, {rel}")
            break
    return replace(job, settings={"chroms": chroms, "reference": reference, "modality": modality})


def _check_for(kind: str) -> FileCheck | None:
    """The check of a job kind: a registered format's (:mod:`omics_risk.data.formats`), or a reference file's."""
    fmt = get_format(kind)
    return check_of(fmt) if fmt is not None else REFERENCE_CHECKS.get(kind)


def _run_job(job: _Job) -> _Result:
    """Open one data file; never raises: every failure, expected or not, becomes an issue naming the file."""
    try:
        check = _check_for(job.kind)
        return check(job) if check is not None else _Result()
    except DataFileError as exc:
        return _Result(issues=list(exc.issues))
    except MemoryError:
        return _Result(issues=[FileIssue(job.path, "too large to open in memory")])
    except Exception as exc:  # a reader bug or an exotic corruption must not abort the whole report
        return _Result(issues=[FileIssue(job.path, f"cannot be opened: unexpected {type(exc).__name__}: {exc}")])


def _run_jobs(jobs: Sequence[_Job], workers: int, progress: bool) -> list[_Result]:
    """Run the jobs on ``workers`` threads (in order of submission for the results).

    Threads, not processes: the readers spend their time in pyarrow, zlib, ITK and numpy, which release the GIL
    (2 threads validate a 900-file cohort about as fast as 2 processes), and threads need no pickling and no
    ``if __name__ == "__main__"`` guard in the caller's script.
    """
    results: list[_Result | None] = [None] * len(jobs)
    with progress_bar(total=len(jobs), desc="opening data files", unit="file", disable=not progress,
                      leave=False) as bar:
        if workers <= 1 or len(jobs) < PARALLEL_MIN_JOBS:
            for i, job in enumerate(jobs):
                results[i] = _run_job(job)
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="omics-risk-validate") as pool:
                futures = {pool.submit(_run_job, job): i for i, job in enumerate(jobs)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update()
    return cast(list[_Result], results)


# --------------------------------------------------------------------------------------------------- checks


class _Checker:
    """Collects problems with file names relative to the cohort root."""

    def __init__(self, root: Path):
        self.root = root
        self.problems: list[Problem] = []

    def rel(self, path: str | Path) -> str:
        p = Path(path)
        try:
            return p.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)

    def add(self, severity: str, file: str, message: str, line: int | None = None, column: str | None = None) -> None:
        self.problems.append(Problem(cast(Any, severity), file, message, line, column))

    def error(self, file: str, message: str, line: int | None = None, column: str | None = None) -> None:
        self.add("error", file, message, line, column)

    def warning(self, file: str, message: str, line: int | None = None, column: str | None = None) -> None:
        self.add("warning", file, message, line, column)


def _line(idx: int) -> int:
    return int(idx) + 2


def _used_by(lines: Sequence[int]) -> str:
    if len(lines) == 1:
        return f"samples.csv line {lines[0]}"
    return f"{len(lines)} samples.csv rows, first on line {lines[0]}"


@dataclass
class _Planned:
    """A job plus what to do with its result."""

    job: _Job
    lines: list[int]
    modality: str | None = None
    sample_rows: list[tuple[int, str, str, float]] = field(default_factory=list)  # (line, sample_id, patient, day)
    what: str = "samples.csv"


def _check_patients(chk: _Checker, clinical: pd.DataFrame, samples: pd.DataFrame | None) -> None:
    """Patients without any sample (one grouped line in the report); none in a clinical-only cohort, where every
    patient is so by design."""
    if samples is None or not len(samples):
        return
    with_samples = set(samples["patient_id"].dropna())
    ids = clinical["patient_id"]
    for idx in ids.index[ids.notna() & ~ids.isin(with_samples) & ~ids.duplicated(keep="first")]:
        chk.warning(CLINICAL_FILE, f"patient '{printable(ids[idx])}' has no samples in samples.csv; it is kept, with "
                    "every modality missing", _line(idx), "patient_id")


def _exists(path: Path) -> bool:
    """``Path.exists`` that treats unusable names (NUL bytes, over-long paths) as missing instead of raising."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _check_sample_files(chk: _Checker, spec: CohortSpec, samples: pd.DataFrame) -> list[_Planned]:
    """Existence and format of every path / mask_path; returns the data-file jobs for the deep check.

    One pass over the rows: a path leaving the cohort (already an error of the contract) is skipped, never opened,
    and the number of rows sharing a missing file comes from one count per (modality, path), not a rescan per row.
    """
    root = chk.root
    confinement = Confinement.of(root, spec.data_roots)
    planned: dict[tuple[str, str, tuple[str | None, ...]], _Planned] = {}
    shared_plans: dict[tuple[str, str], _Planned | None] = {}  # (modality, path) -> its job, None if unusable
    rows = samples[samples["path"].notna() & samples["modality"].notna()]
    n_uses: dict[tuple[str, str], int] = rows.groupby(["modality", "path"], sort=False).size().to_dict()
    specs: dict[str, ModalitySpec | None] = {m: spec.modality(m) for m in rows["modality"].unique()}
    companions: dict[str, tuple[str | None, ...] | None] = {}
    columns = [rows[c] for c in ("modality", "path", "mask_path", "sample_id", "patient_id", "day")]
    for idx, modality, rel, mask_rel, sid, pid, day in zip(rows.index, *columns, strict=True):
        line = _line(cast(int, idx))
        ms = specs[modality]
        if ms is None:
            continue  # unknown modality: reported by the contract
        rel = str(rel)
        if confinement.check(rel)[1] is not None:
            continue  # leaves the cohort: reported by the contract, and never opened
        path = root / rel
        fmt = get_format(ms.format)
        shared = fmt is not None and fmt.shared_file
        image = fmt is not None and fmt.needs_mask
        sample_row = (line, str(sid), str(pid), day)
        if os.path.isabs(rel) and not confinement.in_data_root(rel):
            chk.warning(SAMPLES_FILE, f"absolute path {rel}: give paths relative to the cohort folder so the cohort "
                        "can be moved", line, "path")
        if shared and (ms.name, rel) in shared_plans:
            plan = shared_plans[(ms.name, rel)]
            if plan is not None:
                plan.lines.append(line)
                plan.sample_rows.append(sample_row)
            continue
        ok = True
        if not _exists(path):
            uses = n_uses.get((ms.name, rel), 1) if shared else 1
            also = f" (used by {uses} samples.csv rows)" if uses > 1 else ""
            chk.error(
                SAMPLES_FILE,
                f"file not found: {rel}{also}; fix the path (relative to the cohort folder) or add the file",
                line,
                "path",
            )
            ok = False
        elif why := readers.format_extension_problem(path, ms.format):
            chk.error(SAMPLES_FILE, f"{rel} {why} (modality '{ms.name}')", line, "path")
            ok = False
        mask_abs: str | None = None
        if image and isinstance(mask_rel, str) and confinement.check(mask_rel)[1] is None:
            mask = root / mask_rel
            if not _exists(mask):
                chk.error(
                    SAMPLES_FILE,
                    f"mask file not found: {mask_rel}; fix mask_path (relative to the cohort folder) or add the mask",
                    line,
                    "mask_path",
                )
            elif why := readers.format_extension_problem(mask, ms.format):
                chk.error(SAMPLES_FILE, f"mask {mask_rel} {why}", line, "mask_path")
            else:
                mask_abs = str(mask)
        elif not image and isinstance(mask_rel, str):
            chk.warning(SAMPLES_FILE, f"mask_path is only used by image modalities; it is ignored for '{ms.name}'",
                        line, "mask_path")
        if image:
            extra: tuple[str | None, ...] | None = (mask_abs,)
        else:
            if ms.name not in companions:
                companions[ms.name] = _companions(chk, ms, confinement)
            extra = companions[ms.name]
        if not ok or extra is None:
            if shared:
                shared_plans[(ms.name, rel)] = None
            continue
        key = (ms.format, str(path), extra)
        if key not in planned:
            planned[key] = _Planned(_Job(ms.format, str(path), extra), [], ms.name)
        planned[key].lines.append(line)
        if shared:
            planned[key].sample_rows.append(sample_row)
            shared_plans[(ms.name, rel)] = planned[key]
    return list(planned.values())


def _companions(chk: _Checker, ms: ModalitySpec, confinement: Confinement) -> tuple[str | None, ...] | None:
    """The sample sheet and feature file of a metabolomics modality (() for other formats); None when unusable.

    Called once per modality, so each problem is reported once, not once per sample. A companion leaving the
    cohort was reported by the contract (naming its cohort.yaml key) and is not opened.
    """
    if ms.format != "metabolomics_matrix":
        return ()
    sheet = ms.options.get("sample_sheet")
    if not isinstance(sheet, str):
        if not any(p.file == SPEC_FILE and f"modality '{ms.name}'" in p.message for p in chk.problems):
            chk.error(
                SPEC_FILE,
                f"metabolomics modality '{ms.name}' needs its sample sheet: declare it in cohort.yaml as modalities: "
                f"{{{ms.name}: {{format: metabolomics_matrix, sample_sheet: PATH}}}}",
                None,
                f"modalities.{ms.name}.sample_sheet",
            )
        return None
    features = ms.options.get("features")
    ok = True
    for key, rel in (("sample_sheet", sheet), ("features", features)):
        if not isinstance(rel, str):
            continue
        if confinement.check(rel)[1] is not None:
            ok = False
        elif not (chk.root / rel).is_file():
            chk.error(SPEC_FILE, f"{key} file not found: {rel} (modality '{ms.name}')", None,
                      f"modalities.{ms.name}.{key}")
            ok = False
    if not ok:
        return None
    return (str(chk.root / sheet), str(chk.root / features) if isinstance(features, str) else None)


def _check_references(chk: _Checker, spec: CohortSpec, deep: bool) -> list[_Planned]:
    kinds = {"genome_fasta": "genome_fasta", "chrom_sizes": "chrom_sizes", "methylation_regions": "bed"}
    confinement = Confinement.of(chk.root, spec.data_roots)
    planned = []
    for name, rel in spec.references.items():
        path = chk.root / rel
        if confinement.check(rel)[1] is not None:
            continue  # leaves the cohort: reported by the contract, and never opened
        if not _exists(path):
            chk.error(
                SPEC_FILE,
                f"reference file not found: {rel}; fix the path (relative to the cohort folder) or add the file",
                None,
                f"references.{name}",
            )
        elif deep and name in kinds:
            planned.append(_Planned(_Job(kinds[name], str(path)), [], None, what=f"references.{name} in cohort.yaml"))
    return planned


def _report_results(chk: _Checker, planned: Sequence[_Planned], results: Sequence[_Result]) -> None:
    for plan, res in zip(planned, results, strict=True):
        ref = _used_by(plan.lines) if plan.lines else plan.what
        image_rel = chk.rel(plan.job.path)
        for severity, issues in (("error", res.issues), ("warning", res.warnings), ("note", res.notes)):
            for issue in issues:
                msg = issue.message.replace("{image}", image_rel)
                chk.add(severity, chk.rel(issue.path), f"{msg} (referenced by {ref})", issue.line, issue.column)
        if plan.sample_rows and "samples" in res.info:
            _check_membership(chk, plan, res)


def _check_membership(chk: _Checker, plan: _Planned, res: _Result) -> None:
    """A shared file holds each samples.csv sample of its modality; its other samples are reported as unused."""
    rel = chk.rel(plan.job.path)
    in_file: dict[str, int | None] = res.info["samples"]
    sample_type: dict[str, str] = res.info.get("sample_type", {})
    variant: dict[str, tuple[int | None, str, dict[float, int | None]]] = res.info.get("variant_samples", {})
    listed = set()
    for line, sid, patient, day in plan.sample_rows:
        listed.add(sid)
        if sid not in in_file:
            where = "has no column in" if plan.job.kind == "metabolomics_matrix" else "is not in"
            chk.error(
                SAMPLES_FILE, f"sample '{sid}' {where} {rel}; add its data there or remove this row", line, "sample_id"
            )
            continue
        if sample_type.get(sid, "sample") != "sample":
            chk.error(
                SAMPLES_FILE,
                f"sample '{sid}' is a '{sample_type[sid]}' injection in the sample sheet; QC and "
                "blank injections do not belong in samples.csv",
                line,
                "sample_id",
            )
        if sid in variant:
            vline, vpatient, vdays = variant[sid]
            if vpatient != patient:
                chk.error(
                    rel,
                    f"sample '{sid}' belongs to patient '{vpatient}' here but to '{patient}' in "
                    f"samples.csv line {line}; make them agree",
                    vline,
                    "patient_id",
                )
            wrong = [d for d in vdays if pd.notna(day) and abs(d - float(day)) > 1e-9]
            if wrong:
                chk.error(
                    rel,
                    f"sample '{sid}' has day {wrong[0]:g} here but {float(day):g} in samples.csv line "
                    f"{line}; make them agree",
                    vdays[wrong[0]],
                    "day",
                )
    orphans = [s for s in in_file if s not in listed and sample_type.get(s, "sample") == "sample"]
    for sid in orphans[:MAX_ORPHAN_WARNINGS]:
        chk.warning(
            rel,
            f"sample '{sid}' has no samples.csv row with modality '{plan.modality}'; its data are ignored",
            in_file[sid],
            "sample_id" if plan.job.kind != "metabolomics_matrix" else sid,
        )
    if len(orphans) > MAX_ORPHAN_WARNINGS:
        chk.warning(rel, f"... and {len(orphans) - MAX_ORPHAN_WARNINGS} more sample(s) without a samples.csv row")


def _coverage(
    spec: CohortSpec | None, clinical: pd.DataFrame | None, samples: pd.DataFrame | None, root: Path
) -> pd.DataFrame:
    if clinical is None or samples is None:
        return pd.DataFrame(columns=COVERAGE_COLUMNS)
    patients = clinical.dropna(subset=["patient_id"]).drop_duplicates("patient_id")
    usable = samples.dropna(subset=["patient_id", "modality", "timepoint"])
    usable = usable[usable["patient_id"].isin(set(patients["patient_id"]))]
    # Cohort.coverage() reads only the two tables, so a broken cohort.yaml need not hide the summary.
    return Cohort(root, cast(CohortSpec, spec), patients, usable).coverage()


def _voxel_limit(chk: _Checker, max_image_voxels: int | None) -> int:
    """The image voxel limit; a malformed environment variable is reported once (not once per image)."""
    if max_image_voxels is not None:
        return readers.image_voxel_limit(max_image_voxels)
    try:
        return readers.image_voxel_limit()
    except ValueError as exc:
        chk.error(readers.MAX_IMAGE_VOXELS_ENV, f"{exc}; images are checked against the default meanwhile")
        return readers.MAX_IMAGE_VOXELS


def validate_cohort(
    root: str | Path,
    *,
    deep: bool = True,
    workers: int | None = None,
    progress: bool = False,
    max_image_voxels: int | None = None,
) -> ValidationReport:
    """Check a cohort directory against the data contract and report every problem found, never just the first.

    ``deep=False`` checks only the tables and that referenced files exist (no data file is opened). ``workers``
    is the number of threads that open data files (default: the CPU count, at most 8); ``progress`` shows a
    progress bar on stderr. ``max_image_voxels`` overrides the largest image accepted (default
    :func:`omics_risk.data.readers.image_voxel_limit`: the ``OMICS_RISK_MAX_IMAGE_VOXELS`` environment variable,
    else 512 x 512 x 2048 voxels); a value <= 0 raises ValueError.
    """
    if max_image_voxels is not None:
        readers.image_voxel_limit(max_image_voxels)  # a bad argument is the caller's bug: raise, do not report
    t0 = time.perf_counter()
    root = Path(root)
    chk = _Checker(root)
    if not root.is_dir():
        chk.error(str(root), "not a directory: a cohort is a folder with cohort.yaml, clinical.csv and samples.csv")
        return ValidationReport(
            str(root), chk.problems, pd.DataFrame(columns=COVERAGE_COLUMNS), 0, 0, seconds=time.perf_counter() - t0
        )
    spec, problems = parse_spec(root / SPEC_FILE)
    chk.problems += problems
    trusted_spec = spec if not any(p.severity == "error" for p in problems) else None  # for endpoint times in days
    clinical, problems = read_clinical(root, spec)
    chk.problems += problems
    patients = clinical["patient_id"].dropna() if clinical is not None else None
    samples, problems = read_samples(root, spec, patients)
    chk.problems += problems
    n_opened = 0
    coverage = pd.DataFrame(columns=COVERAGE_COLUMNS)
    try:
        if clinical is not None:
            _check_patients(chk, clinical, samples)
        if clinical is not None and samples is not None:
            chk.problems += check_sample_times(trusted_spec, clinical, samples)  # dates after the outcome, labels
        planned: list[_Planned] = []
        if spec is not None and samples is not None:
            planned += _check_sample_files(chk, spec, samples)
        if spec is not None:
            planned += _check_references(chk, spec, deep)
        if deep and planned:
            n_workers = workers if workers is not None else min(8, os.cpu_count() or 1)
            limit = _voxel_limit(chk, max_image_voxels)
            jobs = [_job_settings(p.job, p.modality, cast(CohortSpec, spec), root, limit) for p in planned]
            results = _run_jobs(jobs, n_workers, progress)
            _report_results(chk, planned, results)
            n_opened = len(planned)
        coverage = _coverage(spec, clinical, samples, root)
    except Exception as exc:  # a validator bug must still leave the user with the problems found so far
        chk.error(
            SAMPLES_FILE,
            f"validation stopped early on an internal error ({type(exc).__name__}: {exc}); the problems listed are "
            "real but the list may be incomplete: please report this to the omics-risk developers",
        )
    return ValidationReport(
        root=str(root),
        problems=chk.problems,
        coverage=coverage,
        n_patients=int(patients.nunique()) if patients is not None else 0,
        n_samples=len(samples) if samples is not None else 0,
        n_files_opened=n_opened,
        seconds=time.perf_counter() - t0,
        name=spec.name if spec is not None else None,
    )

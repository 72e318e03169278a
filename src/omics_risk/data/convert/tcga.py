"""TCGA projects (LUSC, LUAD, BRCA, ...) into the omics-risk cohort data contract.

A source folder (``shared/data/tcga_lusc``, see its README.md) holds, per project, the TCGA Pan-Cancer Clinical Data
Resource endpoints (Liu et al., Cell 2018) and Firehose omics tables (RPPA, miRNA-seq, SNP6 copy-number segments),
found by the project prefix (:mod:`omics_risk.data.convert.tcga_projects`). :func:`convert_tcga` turns whichever
of them a project has into a cohort directory so that the real data validates, trains and benchmarks exactly like
any other cohort; :func:`convert_tcga_lusc` is its LUSC alias. Nothing is dropped silently: every sample or value
left out is counted (and, where few, listed) in ``conversion_report.json``, and the result is checked against the
project's reference values where it has any.

The clinical table and endpoints are converted by :mod:`omics_risk.data.convert.tcga_clinical`; this module reads
the omics tables and writes the cohort.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import tempfile
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from omics_risk import __version__
from omics_risk.data.contract import CLINICAL_FILE, CONTRACT_VERSION, SAMPLES_FILE, SPEC_FILE
from omics_risk.data.convert.tcga_clinical import (
    ENDPOINTS,
    REFERENCE_STAGE_C_INDEX,
    STAGE_DETAIL_LEVELS,
    STAGE_LEVELS,
    _clinical,
    _clinical_types,
    _endpoint_columns,
    _stage_c_index,
    read_cdr,
)
from omics_risk.data.convert.tcga_projects import PROJECTS, TcgaProject, TcgaSources, find_sources, tcga_project

__all__ = [
    "COHORT_NAME",
    "ENDPOINTS",
    "MODALITY_PATHS",
    "PROJECTS",
    "REFERENCE_STAGE_C_INDEX",
    "SOURCE_FILES",
    "STAGE_DETAIL_LEVELS",
    "STAGE_LEVELS",
    "convert_tcga",
    "convert_tcga_lusc",
]

#: The LUSC release of ``shared/data/tcga_lusc`` (another project's files are found by its prefix).
COHORT_NAME = PROJECTS["LUSC"].cohort_name
CDR_FILE = "LUSC_cdr_endpoints.csv"
RPPA_FILE = "LUSC_RPPA_20160128.csv"
CNV_FILE = "LUSC_CNV_segments_20160128.csv.gz"
MIRNA_FILE = "LUSC_miRNASeq_GA_20160128.csv.gz"
SOURCE_FILES = (CDR_FILE, RPPA_FILE, CNV_FILE, MIRNA_FILE)
REPORT_FILE = "conversion_report.json"
#: How far a recomputed stage-only Harrell C may be from the project's reference before the conversion warns
#: (the README's values have three decimals).
C_INDEX_TOLERANCE = 0.005

#: Sample barcode TCGA-TSS-PPPP-TT...: the first 12 characters are the patient, characters 14-15 the sample type.
_BARCODE_RE = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}-\d{2}")
#: R's make.unique suffix (".1", ".2") that RTCGA appended to repeated miRNA sample rows.
_MAKE_UNIQUE_RE = re.compile(r"\.\d+$")
_MIRNA_PLATFORM_RE = re.compile(r"_miRNASeq_(?P<platform>[A-Za-z0-9]+)_(?P<date>\d{8})")
_DATE_RE = re.compile(r"_(\d{4})(\d{2})(\d{2})\.csv")
PRIMARY_TUMOUR = "01"
TIMEPOINT = "diagnosis"
MIRNA_MEASURE = "reads_per_million_miRNA_mapped"

MODALITY_PATHS = {"rppa": "omics/rppa.csv", "mirna": "omics/mirna.csv", "cnv": "omics/cnv_segments.csv.gz"}
MODALITY_FORMATS = {"rppa": "table", "mirna": "table", "cnv": "cn_segments"}
#: Per-modality extractor settings written into cohort.yaml: miRNA reads per million are log2(x+1)-transformed at
#: extraction (RPPA is already on a log scale); the SNP6 segments are on hg19, summarised per chromosome arm.
EXTRACT_SETTINGS = {"mirna": {"log2": True}, "cnv": {"genome": "hg19", "arms": True}}
#: Firehose SNP6 segments number the sex chromosomes; GDC and most tools name them.
_CHROM_NAMES = {"23": "X", "24": "Y"}
_CHROM_ORDER = {**{str(i): i for i in range(1, 23)}, "X": 23, "Y": 24}


def convert_tcga(src: str | Path, out: str | Path, project: str, *, overwrite: bool = False,
                 verbose: bool = True) -> Path:
    """Convert the TCGA ``project`` files (LUSC, LUAD, ...) of folder ``src`` into an omics-risk cohort at ``out``;
    return ``out``.

    The modalities the folder has for the project are converted (a missing one is a note; no omics at all gives a
    clinical-only cohort). The result is checked against the project's reference values (patient count, stage-only
    Harrell C); a project without any gets one warning saying so. Notes and warnings are printed with the summary
    (``verbose``) and kept in ``conversion_report.json``.

    The cohort is written to a temporary sibling folder and moved into place at the end, so a failed run never
    leaves a half-written cohort. ``overwrite`` replaces an existing cohort (a folder holding cohort.yaml), never
    an unrelated non-empty folder. The output is byte-for-byte deterministic for the same input.
    """
    info = tcga_project(project)
    src, out = Path(src), Path(out)
    sources = find_sources(src, info)
    _check_out(out, overwrite)

    raw, read_report = read_cdr(sources)
    clinical, clinical_report, endpoint_report = _clinical(raw, info, read_report)
    patients = set(clinical["patient_id"])
    modalities: dict[str, tuple[pd.DataFrame, dict[str, Any]]] = {}
    if sources.rppa is not None:
        modalities["rppa"] = _table_modality(*_read_rppa(sources.rppa), patients, "rppa", sources.rppa.name)
    if sources.mirna:
        table, rows_in, platforms = _read_mirna(sources.mirna)
        modalities["mirna"] = _table_modality(table, rows_in, patients, "mirna",
                                              ", ".join(p.name for p in sources.mirna))
        modalities["mirna"][1]["platforms"] = platforms
    if sources.cnv is not None:
        modalities["cnv"] = _cnv_modality(sources.cnv, patients)
    for name, (_, mod_report) in modalities.items():
        _check_belongs(name, mod_report, clinical_report["source_file"], info)
    kept_ids = {name: table["sample_id"].drop_duplicates() for name, (table, _) in modalities.items()}
    samples = _samples_table(kept_ids) if kept_ids else None

    typed = _clinical_types(clinical, clinical_report["stage_detail_levels"])
    clinical_report["typed_columns"] = sorted(typed)
    clinical_report["untyped_columns"] = sorted(
        set(clinical.columns)
        - set(typed)
        - {"patient_id"}
        - {col for pair in _endpoint_columns().values() for col in pair}
    )
    notes = list(sources.notes)
    if clinical_report["endpoints_without_outcome"]:
        empty = ", ".join(clinical_report["endpoints_without_outcome"])
        notes.append(f"no {info.code} patient has an outcome for {empty}: not declared in cohort.yaml")
    if clinical_report["stage_column"] is None:
        notes.append(f"no recognisable stage in the {info.code} rows: stage and stage_detail are empty and untyped")
    stage_c = _stage_c_index(clinical)
    reference, warnings = _reference_check(info, len(clinical), stage_c)
    report: dict[str, Any] = {
        "cohort": info.cohort_name,
        "project": info.code,
        "converter": "omics_risk.data.convert.tcga.convert_tcga",
        "omics_risk_version": __version__,
        "source": {p.name: {"sha256": _sha256(p)} for p in sources.files},
        "index_date": "initial pathologic diagnosis (TCGA-CDR times are days from it)",
        "clinical": clinical_report,
        "endpoints": endpoint_report,
        "modalities": {name: mod_report for name, (_, mod_report) in modalities.items()},
        "stage_only_harrell_c": stage_c,
        "stage_only_harrell_c_reference": dict(info.stage_c_index),
        "reference": reference,
        "notes": notes,
        "warnings": warnings,
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.converting-", dir=out.parent))
    try:
        (tmp / SPEC_FILE).write_text(_cohort_yaml(typed, info, sources, list(endpoint_report)), encoding="utf-8")
        _write_csv(clinical, tmp / CLINICAL_FILE)
        if samples is not None:  # no samples.csv at all: a clinical-only cohort (docs/data_format.md)
            (tmp / "omics").mkdir()
            _write_csv(samples, tmp / SAMPLES_FILE)
        for name, (table, _) in modalities.items():
            _write_csv(table, tmp / MODALITY_PATHS[name])
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o755)
        if out.exists():  # _check_out allowed only an empty folder or a previous cohort here
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if verbose:
        print(_summary(out, report))
    return out


def convert_tcga_lusc(src: str | Path, out: str | Path, *, overwrite: bool = False, verbose: bool = True) -> Path:
    """:func:`convert_tcga` of project LUSC (the converter's first name, kept for scripts that call it)."""
    return convert_tcga(src, out, "LUSC", overwrite=overwrite, verbose=verbose)


# --------------------------------------------------------------------------------------------------- checks


def _reference_check(project: TcgaProject, patients: int,
                     stage_c: dict[str, float | None]) -> tuple[dict[str, Any], list[str]]:
    """The project's reference values and the warnings where the conversion departs from them (one warning when the
    project has none: nothing was checked)."""
    if not project.has_reference:
        return {}, [f"no reference values on file for TCGA {project.code} (patient count, stage-only Harrell C): "
                    "this conversion is not checked against published numbers (conversion_report.json has the "
                    "computed ones)"]
    reference: dict[str, Any] = {"source": project.reference_source, "patients": project.patients,
                                 "stage_only_harrell_c": dict(project.stage_c_index)}
    warnings = []
    if project.patients is not None and patients != project.patients:
        warnings.append(f"{patients} {project.code} patients, but the reference ({project.reference_source}) has "
                        f"{project.patients}: another release of the files?")
    for name, ref in project.stage_c_index.items():
        got = stage_c.get(name)
        if got is None or abs(got - ref) > C_INDEX_TOLERANCE:
            shown = "not computable" if got is None else f"{got:.3f}"
            warnings.append(f"stage-only Harrell C of {name} is {shown}, the reference {ref:.3f} "
                            f"({project.reference_source}): check the stage and endpoint columns")
    return reference, warnings


def _check_belongs(name: str, report: dict[str, Any], cdr_name: str, project: TcgaProject) -> None:
    """A modality file with no usable sample is refused: none of its tumour samples a patient of the clinical table
    means another project's file."""
    if report["samples_out"]:
        return
    orphans = report["not_in_clinical_dropped"]["count"]
    if orphans:
        raise ValueError(f"{report['file']}: none of its {orphans} primary-tumour sample(s) is a patient of "
                         f"{cdr_name} ({project.code}): it is another project's file; move it out of the folder (or "
                         "rename it with its own project prefix)")
    raise ValueError(f"{report['file']}: no primary-tumour sample (barcode type {PRIMARY_TUMOUR}) to convert as "
                     f"{name}; move it out of the folder")


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse to clobber anything but a previous cohort, so a mistyped --out cannot delete a user's folder."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace the cohort in it")
        if not (out / SPEC_FILE).is_file():
            raise FileExistsError(
                f"{out} is not empty and holds no {SPEC_FILE}: refusing to replace a folder that is "
                "not a cohort; choose another --out"
            )


# ------------------------------------------------------------------------------------------------- modalities


def _read_rppa(path: Path) -> tuple[pd.DataFrame, int]:
    """RPPA: one row per aliquot barcode, 223 antibody columns (Firehose level 3, values as distributed).
    Returns the table and the number of source rows."""
    df = pd.read_csv(path)
    df = df.rename(columns={df.columns[0]: "sample_id"})
    return _numeric_features(df, path.name), len(df)


def _read_mirna(paths: list[Path]) -> tuple[pd.DataFrame, int, dict[str, Any]]:
    """miRNA-seq: keep the reads-per-million rows (one per sample) as distributed, without log transform.

    The source stacks three rows per sample (read_count, RPM, cross-mapped) whose ids R's make.unique suffixed with
    ``.1``/``.2``; the measure is taken from the miRNA_ID column and the suffix removed to recover the barcode.
    Several platform files (GA, HiSeq) are stacked in file-name order (a miRNA one platform lacks is empty for its
    samples). Returns the RPM table, the number of source rows (all three measures) and the rows per platform.
    """
    tables, rows_in, platforms = [], 0, {}
    for path in paths:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        missing = [c for c in ("sample_row", "miRNA_ID") if c not in df.columns]
        if missing:
            raise ValueError(f"{path.name}: no column {', '.join(missing)} (expected RTCGA's miRNASeq layout: "
                             "sample_row, miRNA_ID, one column per miRNA)")
        rows = df[df["miRNA_ID"] == MIRNA_MEASURE].copy()
        if rows.empty:
            raise ValueError(f"{path.name}: no '{MIRNA_MEASURE}' rows")
        rows.insert(0, "sample_id", rows["sample_row"].str.replace(_MAKE_UNIQUE_RE, "", regex=True))
        rows = rows.drop(columns=["sample_row", "miRNA_ID"]).reset_index(drop=True)
        tables.append(_numeric_features(rows, path.name))
        rows_in += len(df)
        m = _MIRNA_PLATFORM_RE.search(path.name)
        platforms[m["platform"] if m else path.name] = {"file": path.name, "rows_in": len(df),
                                                        "measure_rows": len(rows)}
    return pd.concat(tables, ignore_index=True, sort=False), rows_in, platforms


def _numeric_features(df: pd.DataFrame, fname: str) -> pd.DataFrame:
    features = df.columns[1:]
    if features.duplicated().any():
        raise ValueError(f"{fname}: duplicated feature columns {sorted(features[features.duplicated()])[:5]}")
    values = df[features].apply(pd.to_numeric, errors="coerce")
    bad = df[features].notna() & values.isna()
    if bad.any().any():
        raise ValueError(f"{fname}: non-numeric values in {sorted(features[bad.any()])[:5]}")
    return pd.concat([df[["sample_id"]].astype(str), values.astype("float64")], axis=1)


def _select_samples(sample_ids: Iterable[str], patients: set[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One primary-tumour sample per clinical patient, chosen deterministically (the first by barcode, so 01A before
    01B); everything else is counted by reason. Returns (sample_id, patient_id) of the kept samples and the counts."""
    ids = pd.Series(sorted(set(sample_ids)), dtype=object)
    malformed = ids[~ids.str.match(_BARCODE_RE)]
    ids = ids[ids.str.match(_BARCODE_RE)]
    table = pd.DataFrame({"sample_id": ids, "patient_id": ids.str[:12], "type": ids.str[13:15]})
    non_tumour = table[table["type"] != PRIMARY_TUMOUR]
    table = table[table["type"] == PRIMARY_TUMOUR]
    orphans = table[~table["patient_id"].isin(patients)]
    table = table[table["patient_id"].isin(patients)]
    dup = table.duplicated("patient_id", keep="first")
    duplicates, kept = table[dup], table[~dup]
    report = {
        "samples_in": int(len(ids) + len(malformed)),
        "malformed_barcode_dropped": {"count": len(malformed), "sample_ids": malformed.tolist()},
        "non_tumour_dropped": {
            "count": len(non_tumour),
            "by_sample_type": {str(k): int(v) for k, v in non_tumour["type"].value_counts().sort_index().items()},
        },
        "not_in_clinical_dropped": {"count": len(orphans), "sample_ids": orphans["sample_id"].tolist()},
        "duplicates_dropped": {
            "count": len(duplicates),
            "rule": "one primary tumour (type 01) sample per patient: the first by barcode is kept",
            "dropped": {
                sid: kept.loc[kept["patient_id"] == pid, "sample_id"].iloc[0]
                for sid, pid in zip(duplicates["sample_id"], duplicates["patient_id"], strict=True)
            },
        },
        "samples_out": len(kept),
        "patients": int(kept["patient_id"].nunique()),
    }
    return kept[["sample_id", "patient_id"]].reset_index(drop=True), report


def _table_modality(
    df: pd.DataFrame, rows_in: int, patients: set[str], name: str, fname: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A sample x feature table restricted to the selected samples, rows sorted by sample_id."""
    repeated = df["sample_id"].duplicated(keep="first")
    df = df[~repeated]
    kept, report = _select_samples(df["sample_id"], patients)
    table = df[df["sample_id"].isin(kept["sample_id"])].sort_values("sample_id", kind="stable").reset_index(drop=True)
    return table, {
        "file": fname,
        "path": MODALITY_PATHS[name],
        "format": MODALITY_FORMATS[name],
        "rows_in": rows_in,
        **({"measure": MIRNA_MEASURE, "measure_rows": len(repeated)} if name == "mirna" else {}),
        "repeated_rows_dropped": int(repeated.sum()),
        **report,
        "features": int(table.shape[1] - 1),
        "missing_values": int(table.iloc[:, 1:].isna().sum().sum()),
        **({"transform": "none (raw RPM, no log2)"} if name == "mirna" else {}),
    }


def _cnv_modality(path: Path, patients: set[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """SNP6 segments of the selected primary tumours in the contract's cn_segments columns (chromosome 23 -> X)."""
    df = pd.read_csv(path, dtype={"Sample": str, "Chromosome": str})
    kept, report = _select_samples(df["Sample"], patients)
    seg = df[df["Sample"].isin(kept["sample_id"])]
    seg = pd.DataFrame(
        {
            "sample_id": seg["Sample"],
            "chrom": seg["Chromosome"].str.strip().replace(_CHROM_NAMES),
            "start": seg["Start"].astype("int64"),
            "end": seg["End"].astype("int64"),
            "num_probes": seg["Num_Probes"].astype("int64"),
            "segment_mean": seg["Segment_Mean"].astype("float64"),
        }
    )
    unknown = sorted(set(seg["chrom"]) - set(_CHROM_ORDER))
    if unknown:
        raise ValueError(f"{path.name}: unexpected chromosome names {unknown[:5]}")
    if seg["segment_mean"].isna().any() or (seg["end"] < seg["start"]).any():
        raise ValueError(f"{path.name}: segments with missing Segment_Mean or End < Start")
    seg = (
        seg.assign(_rank=seg["chrom"].map(_CHROM_ORDER))
        .sort_values(["sample_id", "_rank", "start"], kind="stable")
        .drop(columns="_rank")
        .reset_index(drop=True)
    )
    return seg, {
        "file": path.name,
        "path": MODALITY_PATHS["cnv"],
        "format": MODALITY_FORMATS["cnv"],
        "rows_in": len(df),
        **report,
        "segments_out": len(seg),
        "chromosomes": sorted(set(seg["chrom"]), key=_CHROM_ORDER.__getitem__),
        "genome": "hg19 (Firehose segmented_scna_minus_germline_cnv_hg19, via RTCGA.CNV.20160128)",
    }


def _samples_table(sample_ids: dict[str, pd.Series]) -> pd.DataFrame:
    """samples.csv: one row per kept sample, at diagnosis (resection specimens; CDR times count from diagnosis)."""
    frames = [
        pd.DataFrame(
            {
                "patient_id": ids.str[:12],
                "sample_id": ids,
                "modality": name,
                "timepoint": TIMEPOINT,
                "day": 0,
                "path": MODALITY_PATHS[name],
            }
        )
        for name, ids in sample_ids.items()
    ]
    samples = pd.concat(frames, ignore_index=True)
    clash = samples["sample_id"][samples["sample_id"].duplicated()]
    if len(clash):
        raise ValueError(f"the same barcode appears in two modalities: {sorted(clash)[:5]}")
    return samples


# ---------------------------------------------------------------------------------------------------- output


def _cohort_yaml(typed: dict[str, Any], project: TcgaProject, sources: TcgaSources, endpoints: list[str]) -> str:
    columns = _endpoint_columns()
    spec = {
        "contract_version": CONTRACT_VERSION,
        "name": project.cohort_name,
        "time_unit": "days",
        "endpoints": {n: {"type": "survival", "time": columns[n][0], "event": columns[n][1]} for n in endpoints},
        "clinical": typed,
        "modalities": {
            name: {"format": MODALITY_FORMATS[name],
                   **({"extract": EXTRACT_SETTINGS[name]} if name in EXTRACT_SETTINGS else {})}
            for name in sources.modalities
        },
    }
    if not spec["modalities"]:
        del spec["modalities"]
    lung = project.code in ("LUSC", "LUAD")
    advice = ("PFI and OS are the recommended lung endpoints; DFI is defined for a disease-free subset only (use "
              "with caution)." if lung else "Liu et al. 2018 say which endpoints suit each cancer; DFI is defined "
              "for a disease-free subset only (use with caution).")
    omics = []
    if sources.rppa is not None:
        omics.append(f"Firehose {_release(sources.rppa)} RPPA")
    if sources.mirna:
        kinds = [m["platform"] if (m := _MIRNA_PLATFORM_RE.search(p.name)) else p.name for p in sources.mirna]
        omics.append(f"miRNA-seq RPM (Illumina {' + '.join(kinds)}, not log-transformed)")
    if sources.cnv is not None:
        omics.append("SNP6 segments (hg19)")
    doc = "docs/tcga_lusc.md" if project.code == "LUSC" else "docs/data_format.md, 'Public data: TCGA'"
    text = (f"TCGA {project.title} ({project.code}), written by omics_risk.data.convert.tcga ({doc}). Endpoints: "
            "TCGA Pan-Cancer Clinical Data Resource (Liu et al., Cell 2018); times in days from diagnosis. "
            f"{advice} Omics: {', '.join(omics) if omics else 'none (a clinical-only cohort)'}. "
            "conversion_report.json lists every sample and value that was left out.")
    header = "".join(f"# {line}\n" for line in textwrap.wrap(text, width=114))
    return header + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=120)


def _release(path: Path) -> str:
    """The Firehose run date of a file name (``..._20160128.csv`` -> 2016-01-28)."""
    m = _DATE_RE.search(path.name)
    return "-".join(m.groups()) if m else "(undated)"


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    """CSV (gzip when the name ends .gz, with a zero timestamp so reruns are byte-identical)."""
    text = df.to_csv(index=False, lineterminator="\n")
    if path.suffix == ".gz":
        with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(text.encode("utf-8"))
    else:
        path.write_text(text, encoding="utf-8")


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _summary(out: Path, report: dict[str, Any]) -> str:
    n = report["clinical"]["patients"]
    lines = [f"{report['cohort']}: {n} patients -> {out}"]
    for name, ep in report["endpoints"].items():
        note = ""
        if ep["events_in_source"] != ep["events"]:
            note = f" ({ep['events_in_source']} in the source; events without a time were blanked)"
        lines.append(f"  {name:<5} {ep['events']} events / {ep['patients']} patients with an outcome{note}")
    for name, mod in report["modalities"].items():
        dropped = [
            f"{mod[key]['count']} {label}"
            for key, label in (
                ("non_tumour_dropped", "non-tumour"),
                ("not_in_clinical_dropped", "not in clinical"),
                ("duplicates_dropped", "duplicate"),
            )
            if mod[key]["count"]
        ]
        extra = f"; left out: {', '.join(dropped)}" if dropped else ""
        lines.append(f"  {name:<5} {mod['samples_out']} samples ({mod['patients']} patients){extra}")
    got, ref = report["stage_only_harrell_c"], report["stage_only_harrell_c_reference"]
    shown = [
        f"{k} {'n/a' if c is None else f'{c:.3f}'}" + (f" (reference {ref[k]:.3f})" if k in ref else "")
        for k, c in got.items()
    ]
    lines.append("  stage-only Harrell C: " + ", ".join(shown))
    lines += [f"  note: {text}" for text in report["notes"]]
    lines += [f"  warning: {text}" for text in report["warnings"]]
    lines.append(f"  details: {out / REPORT_FILE}")
    return "\n".join(lines)

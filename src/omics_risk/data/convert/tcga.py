"""TCGA lung squamous cell carcinoma (LUSC) into the omics-risk cohort data contract.

The source folder (``shared/data/tcga_lusc``, see its README.md) holds the TCGA Pan-Cancer Clinical Data
Resource endpoints (Liu et al., Cell 2018) and three Firehose 2016-01-28 omics tables (RPPA, miRNA-seq,
SNP6 copy-number segments). :func:`convert_tcga_lusc` turns them into a cohort directory so that the real
data validates, trains and benchmarks exactly like any other cohort. Nothing is dropped silently: every
sample or value left out is counted (and, where few, listed) in ``conversion_report.json``.

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
)

__all__ = [
    "COHORT_NAME",
    "ENDPOINTS",
    "MODALITY_PATHS",
    "REFERENCE_STAGE_C_INDEX",
    "SOURCE_FILES",
    "STAGE_DETAIL_LEVELS",
    "STAGE_LEVELS",
    "convert_tcga_lusc",
]

COHORT_NAME = "tcga-lusc"
CDR_FILE = "LUSC_cdr_endpoints.csv"
RPPA_FILE = "LUSC_RPPA_20160128.csv"
CNV_FILE = "LUSC_CNV_segments_20160128.csv.gz"
MIRNA_FILE = "LUSC_miRNASeq_GA_20160128.csv.gz"
SOURCE_FILES = (CDR_FILE, RPPA_FILE, CNV_FILE, MIRNA_FILE)
REPORT_FILE = "conversion_report.json"

#: Sample barcode TCGA-TSS-PPPP-TT...: the first 12 characters are the patient, characters 14-15 the sample type.
_BARCODE_RE = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}-\d{2}")
#: R's make.unique suffix (".1", ".2") that RTCGA appended to repeated miRNA sample rows.
_MAKE_UNIQUE_RE = re.compile(r"\.\d+$")
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


def convert_tcga_lusc(src: str | Path, out: str | Path, *, overwrite: bool = False, verbose: bool = True) -> Path:
    """Convert the TCGA LUSC folder ``src`` into an omics-risk cohort at ``out``; return ``out``.

    The cohort is written to a temporary sibling folder and moved into place at the end, so a failed run never
    leaves a half-written cohort. ``overwrite`` replaces an existing cohort (a folder holding cohort.yaml), never
    an unrelated non-empty folder. The output is byte-for-byte deterministic for the same input.
    """
    src, out = Path(src), Path(out)
    _check_source(src)
    _check_out(out, overwrite)

    clinical, clinical_report, endpoint_report = _clinical(src / CDR_FILE)
    patients = set(clinical["patient_id"])
    rppa, rppa_report = _table_modality(*_read_rppa(src / RPPA_FILE), patients, "rppa", RPPA_FILE)
    mirna, mirna_report = _table_modality(*_read_mirna(src / MIRNA_FILE), patients, "mirna", MIRNA_FILE)
    cnv, cnv_report = _cnv_modality(src / CNV_FILE, patients)
    kept_ids = {"rppa": rppa["sample_id"], "mirna": mirna["sample_id"], "cnv": cnv["sample_id"].drop_duplicates()}
    samples = _samples_table(kept_ids)

    typed = _clinical_types(clinical)
    clinical_report["typed_columns"] = sorted(typed)
    clinical_report["untyped_columns"] = sorted(
        set(clinical.columns)
        - set(typed)
        - {"patient_id"}
        - {col for pair in _endpoint_columns().values() for col in pair}
    )
    report: dict[str, Any] = {
        "cohort": COHORT_NAME,
        "converter": "omics_risk.data.convert.tcga.convert_tcga_lusc",
        "omics_risk_version": __version__,
        "source": {name: {"sha256": _sha256(src / name)} for name in SOURCE_FILES},
        "index_date": "initial pathologic diagnosis (TCGA-CDR times are days from it)",
        "clinical": clinical_report,
        "endpoints": endpoint_report,
        "modalities": {"rppa": rppa_report, "mirna": mirna_report, "cnv": cnv_report},
        "stage_only_harrell_c": _stage_c_index(clinical),
        "stage_only_harrell_c_reference": REFERENCE_STAGE_C_INDEX,
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.converting-", dir=out.parent))
    try:
        (tmp / "omics").mkdir()
        (tmp / SPEC_FILE).write_text(_cohort_yaml(typed), encoding="utf-8")
        _write_csv(clinical, tmp / CLINICAL_FILE)
        _write_csv(samples, tmp / SAMPLES_FILE)
        _write_csv(rppa, tmp / MODALITY_PATHS["rppa"])
        _write_csv(mirna, tmp / MODALITY_PATHS["mirna"])
        _write_csv(cnv, tmp / MODALITY_PATHS["cnv"])
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


# --------------------------------------------------------------------------------------------------- checks


def _check_source(src: Path) -> None:
    if not src.is_dir():
        raise FileNotFoundError(f"TCGA LUSC source folder not found: {src}")
    missing = [name for name in SOURCE_FILES if not (src / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{src} lacks {', '.join(missing)} (expected the files listed in its README.md)")


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


def _read_mirna(path: Path) -> tuple[pd.DataFrame, int]:
    """miRNA-seq: keep the reads-per-million rows (one per sample) as distributed, without log transform.

    The source stacks three rows per sample (read_count, RPM, cross-mapped) whose ids R's make.unique suffixed with
    ``.1``/``.2``; the measure is taken from the miRNA_ID column and the suffix removed to recover the barcode.
    Returns the RPM table and the number of source rows (all three measures).
    """
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    rows = df[df["miRNA_ID"] == MIRNA_MEASURE].copy()
    if rows.empty:
        raise ValueError(f"{path.name}: no '{MIRNA_MEASURE}' rows")
    rows.insert(0, "sample_id", rows["sample_row"].str.replace(_MAKE_UNIQUE_RE, "", regex=True))
    rows = rows.drop(columns=["sample_row", "miRNA_ID"]).reset_index(drop=True)
    return _numeric_features(rows, path.name), len(df)


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


def _cohort_yaml(typed: dict[str, Any]) -> str:
    spec = {
        "contract_version": CONTRACT_VERSION,
        "name": COHORT_NAME,
        "time_unit": "days",
        "endpoints": {n: {"type": "survival", "time": t, "event": e} for n, (t, e) in _endpoint_columns().items()},
        "clinical": typed,
        "modalities": {
            name: {"format": fmt, **({"extract": EXTRACT_SETTINGS[name]} if name in EXTRACT_SETTINGS else {})}
            for name, fmt in MODALITY_FORMATS.items()
        },
    }
    header = (
        "# TCGA lung squamous cell carcinoma (LUSC), written by omics_risk.data.convert.tcga (docs/tcga_lusc.md).\n"
        "# Endpoints: TCGA Pan-Cancer Clinical Data Resource (Liu et al., Cell 2018); times in days from diagnosis.\n"
        "# PFI and OS are the recommended lung endpoints; DFI is defined for a disease-free subset only (use with\n"
        "# caution). Omics: Firehose 2016-01-28 RPPA, miRNA-seq RPM (Illumina GA, not log-transformed), SNP6\n"
        "# segments (hg19). conversion_report.json lists every sample and value that was left out.\n"
    )
    return header + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=120)


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
    lines = [f"{COHORT_NAME}: {n} patients -> {out}"]
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
    lines.append(f"  details: {out / REPORT_FILE}")
    return "\n".join(lines)

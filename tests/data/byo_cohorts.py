"""Two tiny "bring your own cohort" fixtures, written as a user would receive them (seeded, a few KB):

- :func:`write_clinical_only`: clinical.csv and cohort.yaml only (no samples.csv), with a sub-staged ordinal column
  whose levels are declared as sub-stages;
- :func:`write_tcga_cn`: copy-number segments with the raw TCGA / GDC headers (``Sample, Chromosome, Start, End,
  Num_Probes, Segment_Mean``), a protein table keyed by ``Barcode`` (mapped in cohort.yaml), and a samples.csv
  without ``timepoint`` / ``day`` (one sample per patient at diagnosis).

In both the outcome depends on the clinical stage (and, in the copy-number cohort, on a chromosome-3q gain), so
the models have something to find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

STAGES = ("I", "II", "III")
SUB_STAGES = {"I": ("IA", "IB"), "II": ("IIA", "IIB"), "III": ("IIIA", "IIIB")}


def _clinical(rng: np.random.Generator, n: int, risk: np.ndarray, time: str, event: str) -> pd.DataFrame:
    stage = rng.integers(0, 3, n)
    sub = [SUB_STAGES[STAGES[s]][int(rng.integers(0, 2))] for s in stage]
    age = rng.normal(66, 8, n).round(0)
    hazard = np.exp(0.7 * stage + 0.03 * (age - 66) + risk) / 900.0
    t_event = rng.exponential(1 / hazard)
    t_censor = rng.uniform(300, 2500, n)
    return pd.DataFrame({
        "patient_id": [f"BYO-{i:03d}" for i in range(n)],
        "age": age,
        "sex": rng.choice(["female", "male"], n),
        "stage": sub,
        time: np.minimum(t_event, t_censor).round(0),
        event: (t_event <= t_censor).astype(int),
    })


def write_clinical_only(root: Path, *, n: int = 60, seed: int = 0) -> Path:
    """A clinical-only resected NSCLC cohort: no samples.csv; stage written with sub-stages (IA ... IIIB)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    _clinical(rng, n, np.zeros(n), "rfs_time", "rfs_event").to_csv(root / "clinical.csv", index=False)
    spec = {"contract_version": 1, "name": "byo-clinical-only", "time_unit": "days",
            "endpoints": {"rfs": {"type": "survival", "time": "rfs_time", "event": "rfs_event"}},
            "clinical": {"age": "numeric", "sex": "categorical",
                         "stage": {"type": "ordinal", "levels": [s for m in STAGES for s in SUB_STAGES[m]]}}}
    (root / "cohort.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


def write_tcga_cn(root: Path, *, n: int = 40, seed: int = 0) -> Path:
    """A TCGA-style cohort: GDC segment headers, an RPPA-like table keyed by ``Barcode``, no timepoint/day."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    gain = rng.normal(0, 0.4, n)
    clinical = _clinical(rng, n, gain, "pfi_time", "pfi_event")
    clinical["stage"] = clinical["stage"].str.rstrip("AB")  # the levels are the main stages here
    clinical.to_csv(root / "clinical.csv", index=False)
    barcodes = [f"TCGA-XX-{i:04d}-01A-11D" for i in range(n)]  # the DNA aliquots (segments)
    proteins_ids = [f"TCGA-XX-{i:04d}-01A-21-A" for i in range(n)]  # the protein aliquots (RPPA)
    segments = []
    for i, sid in enumerate(barcodes):
        for chrom in ("1", "2", "3"):
            cut = int(rng.integers(40, 160)) * 1_000_000
            for start, end in ((1, cut), (cut + 1, 198_000_000)):
                mean = gain[i] if chrom == "3" and start > 1 else rng.normal(0, 0.1)
                segments.append({"Sample": sid, "Chromosome": chrom, "Start": start, "End": end,
                                 "Num_Probes": int(rng.integers(50, 5000)), "Segment_Mean": round(float(mean), 4)})
    (root / "cnv").mkdir(exist_ok=True)
    pd.DataFrame(segments).to_csv(root / "cnv" / "segments.seg.csv", index=False)
    proteins = pd.DataFrame(rng.normal(0, 1, (n, 4)).round(4), columns=["AKT", "EGFR", "MTOR", "TP53"])
    proteins.insert(0, "Barcode", proteins_ids)
    (root / "rppa").mkdir(exist_ok=True)
    proteins.to_csv(root / "rppa" / "rppa.csv", index=False)
    samples = pd.DataFrame(
        [{"patient_id": p, "sample_id": sid, "modality": m, "path": path}
         for p, b, r in zip(clinical["patient_id"], barcodes, proteins_ids, strict=True)
         for m, sid, path in (("cnv", b, "cnv/segments.seg.csv"), ("rppa", r, "rppa/rppa.csv"))])
    samples.to_csv(root / "samples.csv", index=False)
    spec = {"contract_version": 1, "name": "byo-tcga-cn", "time_unit": "days",
            "endpoints": {"pfi": {"type": "survival", "time": "pfi_time", "event": "pfi_event"}},
            "clinical": {"age": "numeric", "sex": "categorical",
                         "stage": {"type": "ordinal", "levels": list(STAGES)}},
            "modalities": {"cnv": {"format": "cn_segments", "extract": {"genome": "hg19"}},
                           "rppa": {"format": "table", "columns": {"sample_id": "Barcode"}}}}
    (root / "cohort.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root

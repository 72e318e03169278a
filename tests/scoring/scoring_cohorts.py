"""A tiny hand-written cohort for the batch-scoring tests: two ``table`` modalities, so extraction takes milliseconds.

Risk rises with age, stage and the RPPA feature ``AKT`` (a Cox model recovers it on 60 patients).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

TABLE_TYPES = {"age": "numeric", "stage": {"type": "ordinal", "levels": ["I", "II", "III"]}}
TABLE_COLUMNS = ["clinical/age", "clinical/stage", "rppa/baseline__AKT", "rppa/baseline__EGFR", "mirna/baseline__m1"]

COHORT_YAML = """contract_version: 1
name: tiny-table
time_unit: days
endpoints:
  rfs: {type: survival, time: rfs_time, event: rfs_event}
clinical:
  age: numeric
  stage: {type: ordinal, levels: [I, II, III]}
modalities:
  rppa: {format: table}
  mirna: {format: table}
"""


def write_table_cohort(root: Path, n: int, seed: int, *, day: int = -7) -> Path:
    """A contract cohort of ``n`` patients: clinical age / stage, RPPA (85%) and miRNA (70%) tables at baseline."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "cohort.yaml").write_text(COHORT_YAML)
    pats = [f"T{i:03d}" for i in range(n)]
    age = rng.normal(65, 8, n).round()
    stage = rng.choice(["I", "II", "III"], n)
    akt, egfr, m1, m2 = (rng.normal(size=n) for _ in range(4))
    lp = 0.05 * (age - 65) + 0.6 * pd.Series(stage).map({"I": 0, "II": 1, "III": 2}).to_numpy() + 0.8 * akt
    t_event = rng.exponential(900 * np.exp(-lp))
    t_cens = rng.exponential(1500, n)
    pd.DataFrame({"patient_id": pats, "age": age, "stage": stage, "rfs_time": np.minimum(t_event, t_cens).round(1),
                  "rfs_event": (t_event <= t_cens).astype(int)}).to_csv(root / "clinical.csv", index=False)
    has_rppa, has_mirna = rng.random(n) < 0.85, rng.random(n) < 0.7
    has_rppa[:3] = True
    has_mirna[:3] = True
    rows = []
    for i, p in enumerate(pats):
        if has_rppa[i]:
            rows.append({"patient_id": p, "sample_id": f"{p}-R", "modality": "rppa", "timepoint": "baseline",
                         "day": day, "path": "rppa/rppa.csv", "mask_path": ""})
        if has_mirna[i]:
            rows.append({"patient_id": p, "sample_id": f"{p}-M", "modality": "mirna", "timepoint": "baseline",
                         "day": day, "path": "mirna/mirna.csv", "mask_path": ""})
    pd.DataFrame(rows).to_csv(root / "samples.csv", index=False)
    (root / "rppa").mkdir(exist_ok=True)
    (root / "mirna").mkdir(exist_ok=True)
    pd.DataFrame({"sample_id": [f"{p}-R" for p in pats], "AKT": akt, "EGFR": egfr}).round(5).to_csv(
        root / "rppa" / "rppa.csv", index=False)
    pd.DataFrame({"sample_id": [f"{p}-M" for p in pats], "m1": m1, "m2": m2}).round(5).to_csv(
        root / "mirna" / "mirna.csv", index=False)
    return root

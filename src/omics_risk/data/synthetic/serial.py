"""Serial samples shared by the kinds: one ctDNA draw, molecular progression on a daily grid, onset truth.

Monitoring (issue 15) and surveillance (issue 13) need, for every patient, the true day the disease becomes
detectable in blood (molecular onset), the day it becomes visible on CT (radiological onset) and the day it was
found (detection), with no sample dated after the patient's death or last follow-up. These helpers keep the three
kinds writing them the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from omics_risk.data.synthetic import ctdna as ctdna_mod
from omics_risk.data.synthetic.cohort import sample_row

#: truth/patients.csv columns every kind writes (days from the index date; NaN where none within follow-up).
ONSET_COLUMNS = ("molecular_onset_day", "radiological_onset_day", "detection_day")


def ctdna_draw(rng: np.random.Generator, pid: str, timepoint: str, day: float, panel: pd.DataFrame,
               tumour_fraction: float, depth_range: tuple[int, int]) -> tuple[dict, pd.DataFrame, dict]:
    """One plasma draw of a tracked-variant panel: its samples.csv row, its variant rows and its truth row."""
    row = sample_row(pid, "ctdna", timepoint, day, "ctdna/variants.csv")
    obs = ctdna_mod.observe_variants(rng, panel, float(tumour_fraction), depth_range)
    obs.insert(0, "day", row["day"])
    obs.insert(0, "sample_id", row["sample_id"])
    obs.insert(0, "patient_id", pid)
    truth = {"sample_id": row["sample_id"], "tumour_fraction": float(tumour_fraction),
             "mean_vaf": float(obs["true_vaf"].mean())}
    return row, obs, truth


def molecular_progression(grid: np.ndarray, tf_grid: np.ndarray, detect: float, start: float) -> np.ndarray:
    """First grid day (>= ``start``) on which the tumour fraction is at least twice its running nadir and at or
    above ``detect``: the molecular progression a serial assay can see; NaN where it never happens.

    ``tf_grid`` has one row per patient and one column per day of ``grid``.
    """
    running_min = np.minimum.accumulate(tf_grid, axis=1)
    hit = (grid[None, :] >= start) & (tf_grid >= 2 * running_min) & (tf_grid >= detect)
    return np.where(hit.any(axis=1), grid[hit.argmax(axis=1)], np.nan).astype(float)


def onset_columns(molecular: np.ndarray, radiological: np.ndarray, detection: np.ndarray,
                  end: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`ONSET_COLUMNS`, each NaN where it is missing or falls after the patient's follow-up ``end``."""
    out = {}
    for name, x in zip(ONSET_COLUMNS, (molecular, radiological, detection), strict=True):
        x = np.asarray(x, dtype=float)
        out[name] = np.round(np.where(np.isfinite(x) & (x <= end), x, np.nan), 1)
    return out


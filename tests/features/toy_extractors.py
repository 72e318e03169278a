"""Small but real extractors for testing the feature-store orchestrator independently of the heavy ones."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import SimpleITK as sitk

from omics_risk.data.contract import Cohort
from omics_risk.data.readers import read_fragments, read_image, read_table
from omics_risk.features.base import ExtractionResult, Extractor, SampleFailure


class MaskStats(Extractor):
    """Mean intensity and volume inside the mask."""

    name = "mask_stats"
    formats = ("image",)

    def __init__(self, label: int = 1):
        self.label = label

    def extract_sample(self, cohort: Cohort, sample: pd.Series) -> dict[str, float]:
        img = sitk.GetArrayFromImage(read_image(cohort.path(sample["path"])))
        mask = sitk.GetArrayFromImage(read_image(cohort.path(sample["mask_path"])))
        inside = mask == self.label
        if not inside.any():
            raise SampleFailure(f"mask has no voxel with label {self.label}")
        return {"mean": float(img[inside].mean()), "voxels": float(inside.sum())}


class FragmentLengths(Extractor):
    """Fragment count and mean length."""

    name = "fragment_lengths"
    formats = ("fragments",)

    def extract_sample(self, cohort: Cohort, sample: pd.Series) -> dict[str, float]:
        frags = read_fragments(cohort.path(sample["path"]))
        length = frags.end - frags.start
        return {"n": float(len(length)), "mean_length": float(np.mean(length))}


class TablePassThrough(Extractor):
    """The precomputed table as it is."""

    name = "table_pass"
    formats = ("table",)
    per_sample = False

    def extract_shared(self, cohort: Cohort, samples: pd.DataFrame) -> ExtractionResult:
        frames = [read_table(cohort.path(p)) for p in sorted(set(samples["path"]))]
        table = pd.concat(frames)
        missing = sorted(set(samples["sample_id"]) - set(table.index))
        return ExtractionResult(table.loc[table.index.isin(samples["sample_id"])].astype(float),
                                dict.fromkeys(missing, "not in the table"))


TOY_CONFIG = {
    "image": [{"_target_": "toy_extractors.MaskStats"}],
    "fragments": [{"_target_": "toy_extractors.FragmentLengths"}],
    "table": [{"_target_": "toy_extractors.TablePassThrough"}],
}


class Unstable(Extractor):
    """Fragment count and mean length, except for chosen samples: one kills its worker process (a native crash),
    one gets only NaN features (nothing usable in the file)."""

    name = "unstable"
    formats = ("fragments",)

    def __init__(self, crash_on: str = "", nan_on: str = ""):
        self.crash_on = crash_on
        self.nan_on = nan_on

    def extract_sample(self, cohort: Cohort, sample: pd.Series) -> dict[str, float]:
        if sample["sample_id"] == self.crash_on:
            os._exit(70)
        frags = read_fragments(cohort.path(sample["path"]))
        if sample["sample_id"] == self.nan_on:
            return {"n": float("nan"), "mean_length": float("nan")}
        return {"n": float(len(frags)), "mean_length": float(np.mean(frags.end - frags.start))}


class TableWithBrokenSideTable(TablePassThrough):
    """The table as it is, with a side table that cannot be computed."""

    name = "table_side"

    def side_tables(self, cohort: Cohort, samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
        raise ValueError("the side statistics need a column 'batch'")

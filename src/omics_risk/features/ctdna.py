"""Tracked ctDNA variants: per-sample level and detection, and per-patient longitudinal dynamics.

Per sample (:func:`sample_summaries`, :class:`CtdnaExtractor`), from that sample's rows only:

- level: mean, median and max VAF over the tracked variants, the pooled VAF (all alt reads over all reads, the
  most sensitive single number for a tumour-informed panel), log10 of the mean and pooled VAF with a floor, mean
  depth and mean mutant molecules per variant (alt reads; tumour molecules when depth counts unique molecules);
- detection: a variant is **detected** when its alt read count reaches ``min_alt`` (when the table has
  ``alt_count``; otherwise when its VAF reaches ``lod_vaf``). A sample is **ctDNA-positive** when at least
  ``min_detected`` variants are detected, or one detected variant reaches ``strong_factor x lod_vaf`` (a single
  clear clonal signal). With the defaults (3 alt reads, 2 variants, or one at >= 0.25 % VAF) the false-positive
  rate at a 1e-4 background error rate and 2,000-10,000x depth is about 1 % per sample.

Per patient over time (:func:`ctdna_trajectory`, :func:`ctdna_dynamics`): baseline (the last sample on or before
``baseline_max_day``), ratio to baseline, running nadir, molecular response (a drop of more than
``response_drop``, 50 % by default), clearance (a baseline-positive patient becoming negative), and molecular
progression: a positive sample at ``progression_fold`` (2) times the running nadir or more, with the nadir floored
at the limit of detection (``nadir_floor``, default ``lod_vaf``) so that noise around an undetectable nadir is not
a rise, and re-detection after clearance means reaching ``progression_fold`` x the LOD (``redetection=True`` also calls
any positive sample after a negative one); optionally confirmed by the next sample (``confirm``). Every
value at a sample uses only that sample and earlier ones; ``as_of_day`` cuts the series, so nothing looks ahead.
On the synthetic nsclc-advanced cohort (draws every 21 days) the defaults call molecular progression a median
10-15 days after its true onset and 30-45 days before radiological progression.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from omics_risk.data.contract import Cohort
from omics_risk.data.readers import read_variant_table
from omics_risk.features.base import ExtractionResult, Extractor
from omics_risk.features.shared_files import SharedFile, each_shared_file, read_isolating

__all__ = [
    "LEVELS",
    "CtdnaExtractor",
    "DetectionRule",
    "ctdna_dynamics",
    "ctdna_trajectory",
    "read_dynamics",
    "sample_summaries",
]

#: Per-sample summary columns usable as the longitudinal level.
LEVELS = ("mean_vaf", "pooled_vaf", "max_vaf", "median_vaf", "mean_mutant_molecules")


class DetectionRule:
    """When a variant is detected and a sample is ctDNA-positive (see the module docstring)."""

    def __init__(
        self,
        min_alt: int = 3,
        lod_vaf: float = 5e-4,
        min_detected: int = 2,
        strong_factor: float = 5.0,
        vaf_floor: float = 1e-5,
        exclude_genes: Iterable[str] = (),
    ):
        if min_alt < 1:
            raise ValueError("min_alt must be >= 1 (a variant with no alt read is never detected)")
        if not 0 < lod_vaf < 1 or not 0 < vaf_floor < 1:
            raise ValueError("lod_vaf and vaf_floor must be fractions in (0, 1), e.g. 5e-4 for 0.05 %")
        if min_detected < 1:
            raise ValueError("min_detected must be >= 1")
        self.min_alt = int(min_alt)
        self.lod_vaf = float(lod_vaf)
        self.min_detected = int(min_detected)
        self.strong_factor = float(strong_factor)
        self.vaf_floor = float(vaf_floor)
        self.exclude_genes = tuple(str(g) for g in exclude_genes)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def sample_summaries(table: pd.DataFrame, rule: DetectionRule | None = None) -> pd.DataFrame:
    """One row per sample (index ``sample_id``) of a :func:`read_variant_table` frame; see the module docstring.

    Columns: patient_id, day, n_variants, n_detected, frac_detected, mean_vaf, median_vaf, max_vaf, pooled_vaf,
    log10_mean_vaf, log10_pooled_vaf, mean_depth, mean_mutant_molecules, positive (0/1).
    """
    rule = rule or DetectionRule()
    df = table
    if rule.exclude_genes:
        df = df[~df["gene"].isin(rule.exclude_genes)]
    vaf = df["vaf"].to_numpy(float)
    depth = df["depth"].to_numpy(float)
    est_alt = np.round(vaf * depth)
    if "alt_count" in df.columns:
        alt_known = df["alt_count"].notna().to_numpy()
        alt = np.where(alt_known, df["alt_count"].astype("Float64").fillna(0).to_numpy(float), est_alt)
        detected = np.where(alt_known, alt >= rule.min_alt, vaf >= rule.lod_vaf)
    else:
        alt = est_alt
        detected = vaf >= rule.lod_vaf
    work = pd.DataFrame(
        {
            "sample_id": df["sample_id"].to_numpy(),
            "patient_id": df["patient_id"].to_numpy(),
            "day": df["day"].to_numpy(float),
            "vaf": vaf,
            "depth": depth,
            "alt": alt,
            "detected": detected.astype(float),
            "strong": (detected & (vaf >= rule.strong_factor * rule.lod_vaf)),
        }
    )
    g = work.groupby("sample_id", sort=True)
    out = pd.DataFrame(
        {
            "patient_id": g["patient_id"].first(),
            "day": g["day"].first(),
            "n_variants": g.size().astype(float),
            "n_detected": g["detected"].sum(),
            "mean_vaf": g["vaf"].mean(),
            "median_vaf": g["vaf"].median(),
            "max_vaf": g["vaf"].max(),
            "alt_sum": g["alt"].sum(),
            "depth_sum": g["depth"].sum(),
            "mean_depth": g["depth"].mean(),
            "mean_mutant_molecules": g["alt"].mean(),
            "any_strong": g["strong"].any(),
        }
    )
    out["frac_detected"] = out["n_detected"] / out["n_variants"]
    out["pooled_vaf"] = np.where(
        out["depth_sum"] > 0, out["alt_sum"] / out["depth_sum"].where(out["depth_sum"] > 0), np.nan
    )
    out["log10_mean_vaf"] = np.log10(np.maximum(out["mean_vaf"], rule.vaf_floor))
    out["log10_pooled_vaf"] = np.log10(np.maximum(out["pooled_vaf"].fillna(0.0), rule.vaf_floor))
    out["positive"] = ((out["n_detected"] >= rule.min_detected) | out["any_strong"]).astype(float)
    out.index.name = "sample_id"
    cols = [
        "patient_id",
        "day",
        "n_variants",
        "n_detected",
        "frac_detected",
        "mean_vaf",
        "median_vaf",
        "max_vaf",
        "pooled_vaf",
        "log10_mean_vaf",
        "log10_pooled_vaf",
        "mean_depth",
        "mean_mutant_molecules",
        "positive",
    ]
    return out[cols]


class CtdnaExtractor(Extractor):
    """Per-sample ctDNA level and detection features (``ctdna_*``) from the cohort's variant table(s).

    Settings are those of :class:`DetectionRule`. Each sample's features come from its own rows only, so a sample
    with bad rows (an unreadable VAF, a duplicated variant) fails alone, and a variant table that is unusable as a
    whole fails only the samples it holds.
    """

    name: ClassVar[str] = "ctdna"
    formats: ClassVar[tuple[str, ...]] = ("variant_table",)
    version: ClassVar[str] = "1"
    per_sample: ClassVar[bool] = False

    def __init__(
        self,
        min_alt: int = 3,
        lod_vaf: float = 5e-4,
        min_detected: int = 2,
        strong_factor: float = 5.0,
        vaf_floor: float = 1e-5,
        exclude_genes: Sequence[str] = (),
    ):
        rule = DetectionRule(min_alt, lod_vaf, min_detected, strong_factor, vaf_floor, exclude_genes)
        self.min_alt = rule.min_alt
        self.lod_vaf = rule.lod_vaf
        self.min_detected = rule.min_detected
        self.strong_factor = rule.strong_factor
        self.vaf_floor = rule.vaf_floor
        self.exclude_genes = rule.exclude_genes

    @property
    def rule(self) -> DetectionRule:
        return DetectionRule(
            self.min_alt, self.lod_vaf, self.min_detected, self.strong_factor, self.vaf_floor, self.exclude_genes
        )

    def extract_shared(self, cohort: Cohort, samples: pd.DataFrame) -> ExtractionResult:
        feats: list[pd.DataFrame] = []
        failures: dict[str, str] = {}

        def read(rel: str, _: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
            return read_isolating(read_variant_table, [SharedFile(cohort.path(rel), "ctDNA variant table", "row", rel)])

        for rel, group, (table, dropped) in each_shared_file(samples, failures, read):
            summ = sample_summaries(table, self.rule)
            wanted = group.set_index("sample_id")
            found = wanted.index.intersection(summ.index)
            for sid in wanted.index.difference(summ.index):
                failures[sid] = dropped.get(sid, f"no rows for this sample in {rel}")
            clash = found[summ.loc[found, "patient_id"].to_numpy() != wanted.loc[found, "patient_id"].to_numpy()]
            for sid in clash:
                failures[sid] = (
                    f"{rel} gives this sample to patient '{summ.at[sid, 'patient_id']}' but samples.csv "
                    f"to '{wanted.at[sid, 'patient_id']}'"
                )
            ok = found.difference(clash)
            block = summ.loc[ok].drop(columns=["patient_id", "day"])
            feats.append(block.add_prefix("ctdna_"))
        features = pd.concat(feats) if feats else pd.DataFrame()
        features.index.name = "sample_id"
        return ExtractionResult(features.astype(float), failures)


# --------------------------------------------------------------------------------------------- longitudinal


def _summaries_of(data: pd.DataFrame, rule: DetectionRule) -> pd.DataFrame:
    """Accept either a variant table or the output of :func:`sample_summaries`."""
    if {"gene", "variant", "vaf"}.issubset(data.columns):
        return sample_summaries(data, rule)
    need = {"patient_id", "day", "positive"}
    if not need.issubset(data.columns):
        raise ValueError(
            "expected a ctDNA variant table (read_variant_table) or sample_summaries() output; "
            f"missing columns {', '.join(sorted(need - set(data.columns)))}"
        )
    return data


def ctdna_trajectory(
    data: pd.DataFrame,
    *,
    level: str = "mean_vaf",
    baseline_max_day: float = 0.0,
    response_drop: float = 0.5,
    progression_fold: float = 2.0,
    nadir_floor: float | None = None,
    redetection: bool = False,
    confirm: bool = False,
    as_of_day: float | None = None,
    rule: DetectionRule | None = None,
) -> pd.DataFrame:
    """Per-sample longitudinal view (one row per sample, sorted by patient and day), causal at every row.

    ``level`` is one of :data:`LEVELS` or, when ``data`` is a summaries frame, any of its columns (a per-sample level
    such as a reported maximum MAF, in VAF units).

    Columns: patient_id, sample_id, day, level, positive, on_treatment, is_baseline, baseline_level,
    ratio_to_baseline, response (ratio <= 1 - response_drop; NaN without a positive baseline), nadir_before
    (lowest floored level at the baseline and later samples before this one), fold_over_nadir, rise (a positive
    sample at >= ``progression_fold`` x nadir_before, or a re-detection after a negative sample from baseline on),
    progression_called (the rise is called at this sample: the rise itself, or with ``confirm`` the next sample
    still positive and still >= ``progression_fold`` x the nadir before the rise), progression_day (the day of the
    rise that was called).
    """
    rule = rule or DetectionRule()
    if not 0 < response_drop < 1 or progression_fold <= 1:
        raise ValueError("response_drop must be in (0, 1) and progression_fold > 1")
    s = _summaries_of(data, rule)
    if level not in LEVELS and level not in s.columns:  # a per-sample level the report gives (e.g. max MAF only)
        raise ValueError(f"level must be one of {', '.join(LEVELS)} or a column of the summaries, got {level!r}")
    if as_of_day is not None:
        s = s[s["day"] <= as_of_day]
    s = s.reset_index().sort_values(["patient_id", "day", "sample_id"], kind="stable").reset_index(drop=True)
    floor = rule.vaf_floor if level != "mean_mutant_molecules" else 0.5
    if nadir_floor is None:
        nadir_floor = rule.lod_vaf if level != "mean_mutant_molecules" else float(rule.min_alt)
    lvl = s[level].astype(float)
    flo = np.maximum(lvl.fillna(0.0), floor)
    pid = s["patient_id"]
    g = s.groupby("patient_id", sort=False)
    pos = s["positive"].astype(float) > 0

    # Baseline: the last sample on or before baseline_max_day; the series starts there (or at the first sample).
    pre = s["day"] <= baseline_max_day
    idx_in_group = g.cumcount()
    last_pre = pd.Series(np.where(pre, idx_in_group, -1)).groupby(pid).transform("max")
    is_baseline = pre & (idx_in_group == last_pre)
    start = np.maximum(last_pre, 0)
    in_series = idx_in_group >= start
    on_treatment = in_series & ~pre & (idx_in_group > last_pre)
    base_level = pd.Series(np.where(is_baseline, flo, np.nan)).groupby(pid).transform("max")
    base_pos = pd.Series(np.where(is_baseline, pos, False)).groupby(pid).transform("max").astype(bool)
    ratio = flo / base_level

    # Running nadir over the series, strictly before each sample.
    series_level = pd.Series(np.where(in_series, flo, np.nan))
    nadir_incl = series_level.groupby(pid).cummin().groupby(pid).ffill()
    nadir_before = np.maximum(nadir_incl.groupby(pid).shift(1), nadir_floor)
    neg_seen = pd.Series(np.where(in_series & ~pos, 1.0, 0.0)).groupby(pid).cumsum().groupby(pid).shift(1).fillna(0)
    fold = flo / nadir_before
    rise = on_treatment & pos & ((fold >= progression_fold) | (redetection & (neg_seen > 0)))

    if confirm:
        prev_rise = rise.groupby(pid).shift(1, fill_value=False).astype(bool)
        prev_nadir = nadir_before.groupby(pid).shift(1)
        prev_day = s["day"].groupby(pid).shift(1)
        still_high = pos & ((flo >= progression_fold * prev_nadir) | (redetection & (neg_seen > 0)))
        called = prev_rise & still_high & on_treatment
        called_day = np.where(called, prev_day, np.nan)
    else:
        called = rise
        called_day = np.where(called, s["day"], np.nan)
    # Only the first call counts: molecular progression is an event.
    first_call = called & (called.astype(int).groupby(pid).cumsum() == 1)
    response = pd.Series(np.where(base_pos & on_treatment, (ratio <= 1 - response_drop).astype(float), np.nan))

    return pd.DataFrame(
        {
            "patient_id": pid,
            "sample_id": s["sample_id"],
            "day": s["day"].astype(float),
            "level": lvl,
            "positive": pos.astype(float),
            "on_treatment": on_treatment.astype(float),
            "is_baseline": is_baseline.astype(float),
            "baseline_level": base_level,
            "ratio_to_baseline": ratio,
            "response": response,
            "nadir_before": nadir_before,
            "fold_over_nadir": fold,
            "rise": rise.astype(float),
            "progression_called": first_call.astype(float),
            "progression_day": np.where(first_call, called_day, np.nan),
        }
    )


def ctdna_dynamics(
    data: pd.DataFrame,
    *,
    level: str = "mean_vaf",
    baseline_max_day: float = 0.0,
    response_drop: float = 0.5,
    progression_fold: float = 2.0,
    nadir_floor: float | None = None,
    redetection: bool = False,
    confirm: bool = False,
    as_of_day: float | None = None,
    rule: DetectionRule | None = None,
) -> pd.DataFrame:
    """One row per patient (index ``patient_id``) summarising :func:`ctdna_trajectory` up to ``as_of_day``.

    Columns: n_samples, first_day, last_day, baseline_day, baseline_level, baseline_positive, nadir_level,
    nadir_day (on-treatment), min_ratio, last_ratio, molecular_response (0/1, NaN without a positive baseline),
    molecular_response_day, clearance (0/1, NaN without a positive baseline), clearance_day, time_to_clearance
    (days from baseline), molecular_progression (0/1), molecular_progression_day (the rise),
    molecular_progression_called_day (when the call could be made: the confirming sample with ``confirm``).
    Times are days as in the table; flags are floats so they can enter a feature matrix directly.
    """
    t = ctdna_trajectory(
        data,
        level=level,
        baseline_max_day=baseline_max_day,
        response_drop=response_drop,
        progression_fold=progression_fold,
        nadir_floor=nadir_floor,
        redetection=redetection,
        confirm=confirm,
        as_of_day=as_of_day,
        rule=rule,
    )
    g = t.groupby("patient_id", sort=True)
    on = t[t["on_treatment"] > 0]
    go = on.groupby("patient_id", sort=True)
    base = t[t["is_baseline"] > 0].set_index("patient_id")
    out = pd.DataFrame({"n_samples": g.size().astype(float), "first_day": g["day"].min(), "last_day": g["day"].max()})
    out["baseline_day"] = base["day"]
    out["baseline_level"] = base["level"]
    out["baseline_positive"] = base["positive"]
    if len(on):
        nadir_idx = on["level"].fillna(np.inf).groupby(on["patient_id"]).idxmin()
        out["nadir_level"] = on.loc[nadir_idx.to_numpy(), ["patient_id", "level"]].set_index("patient_id")["level"]
        out["nadir_day"] = on.loc[nadir_idx.to_numpy(), ["patient_id", "day"]].set_index("patient_id")["day"]
        out["min_ratio"] = go["ratio_to_baseline"].min()
        out["last_ratio"] = go["ratio_to_baseline"].last()
    else:
        for c in ("nadir_level", "nadir_day", "min_ratio", "last_ratio"):
            out[c] = np.nan
    # Response and clearance are defined for patients with a positive baseline and an on-treatment sample.
    evaluable = (out["baseline_positive"] == 1) & out.index.isin(on["patient_id"])
    resp = on[on["response"] == 1].groupby("patient_id")["day"].min()
    out["molecular_response"] = np.where(evaluable, out.index.isin(resp.index), np.nan)
    out["molecular_response_day"] = resp.reindex(out.index).where(evaluable)
    clear = on[on["positive"] == 0].groupby("patient_id")["day"].min()
    out["clearance"] = np.where(evaluable, out.index.isin(clear.index), np.nan)
    out["clearance_day"] = clear.reindex(out.index).where(evaluable)
    out["time_to_clearance"] = out["clearance_day"] - out["baseline_day"]
    prog = t[t["progression_called"] > 0].set_index("patient_id")
    out["molecular_progression"] = out.index.isin(prog.index).astype(float)
    out["molecular_progression_day"] = prog["progression_day"].reindex(out.index)
    out["molecular_progression_called_day"] = prog["day"].reindex(out.index)
    out.index.name = "patient_id"
    return out


def read_dynamics(cohort: Cohort, modality: str = "ctdna", **kwargs: Any) -> pd.DataFrame:
    """:func:`ctdna_dynamics` of a cohort's ctDNA modality (all its variant tables), restricted to samples.csv."""
    samples = cohort.samples_of(modality)
    tables = [read_variant_table(cohort.path(str(p))) for p in sorted(samples["path"].unique())]
    if not tables:
        raise ValueError(f"cohort {cohort.root} has no '{modality}' samples")
    table = pd.concat(tables, ignore_index=True)
    table = table[table["sample_id"].isin(set(samples["sample_id"]))]
    return ctdna_dynamics(table, **kwargs)

"""Plasma metabolomics: per-run QC correction at extraction, everything learned from patients inside the model.

Two layers, split by what each step learns from:

1. :class:`MetabolomicsExtractor` (``omics-risk extract``) uses only the **pooled-QC and blank injections of
   the same analytical run**, never a patient's outcome or another patient's injection:

   a. *blank filter*: ratio of the median QC intensity (QC pools mix all study samples) to the median blank
      intensity (an undetected blank counts as 0); features under ``min_blank_ratio`` (default 3) are
      contaminants or background and are dropped from the output;
   b. *QC-RLSC drift correction* (Dunn et al. 2011): per batch, a LOESS (statsmodels ``lowess``, span
      ``loess_frac``) of each feature's QC log-intensity against injection order, linearly interpolated to
      every injection and divided out, then every batch re-centred on the feature's overall QC median.
      Batches with fewer than ``min_qc_per_batch`` detected QCs for a feature get the re-centring only.

   It returns the patient injections' corrected intensities (linear scale; NaN stays NaN = below detection).
   An injection with unusable cells or sheet row (a sample missing from the matrix, a negative intensity, no
   injection order) is left out of the run: a patient's fails alone, a QC's or blank's is reported as a note, and
   the run is corrected with the rest; if no QC (or, with the blank filter, no blank) is left, the run fails.
   The per-feature QC statistics do not fit a sample x feature table, so they come from a separate call,
   :meth:`MetabolomicsExtractor.qc_report` (feature x ``qc_rsd_before, qc_rsd_after, qc_detect_rate,
   blank_ratio, blank_pass, n_qc`` plus the feature annotation), which the caller writes next to the features
   (e.g. ``features/metabolomics_qc.csv``).

2. Fold-fitted scikit-learn transformers, in the order of the domain brief (section 4), built by
   :func:`make_metabolomics_pipeline`: :class:`QCRSDFilter` (QC RSD and detection from the report given at
   construction: a property of the run, so it learns nothing from the fold; it is a step so that thresholds
   are tuned and shipped with the model) -> :class:`MissingnessFilter` -> :class:`DetectionLimitImputer` ->
   :class:`PQNormalizer` -> :class:`Log2Transformer` -> ``StandardScaler`` or :class:`ParetoScaler`.
   Drift correction runs before the QC filter (at extraction) so that the filter uses the corrected RSD, as
   in Dunn 2011.

Columns: the feature store names columns ``<timepoint>__<feature_id>``. Each timepoint block is one injection
per patient, so PQN and imputation work per block, and a row whose whole block is NaN is a **missing sample**
(not below detection): every step leaves it NaN for the model's presence mask. Columns without ``__`` form one
block (e.g. the extractor's own output).

Layer 1 lives here; layer 2 in :mod:`omics_risk.features.metabolomics_pipeline`, whose names are re-exported.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from statsmodels.nonparametric.smoothers_lowess import lowess

from omics_risk.data.contract import Cohort
from omics_risk.data.readers import DataFileError, MetabolomicsData, read_metabolomics
from omics_risk.features.base import ExtractionResult, Extractor
from omics_risk.features.metabolomics_pipeline import (
    DetectionLimitImputer,
    Log2Transformer,
    MissingnessFilter,
    ParetoScaler,
    PQNormalizer,
    QCRSDFilter,
    make_metabolomics_pipeline,
)
from omics_risk.features.screening import _quiet
from omics_risk.features.shared_files import SharedFile, display_path, read_isolating
from omics_risk.progress import progress_bar

__all__ = [
    "DetectionLimitImputer",
    "Log2Transformer",
    "MetabolomicsExtractor",
    "MissingnessFilter",
    "PQNormalizer",
    "ParetoScaler",
    "QCRSDFilter",
    "blank_ratio",
    "make_metabolomics_pipeline",
    "qc_rlsc",
    "rsd",
]


# --------------------------------------------------------------------------------------- run-level QC steps
def rsd(values: np.ndarray, axis: int = 1) -> np.ndarray:
    """Relative standard deviation (SD / mean, ddof 1) of the detected values; NaN with fewer than 2."""
    v = np.asarray(values, dtype=np.float64)
    n = (~np.isnan(v)).sum(axis=axis)
    with np.errstate(all="ignore"), _quiet():
        out = np.nanstd(v, axis=axis, ddof=1) / np.nanmean(v, axis=axis)
    return np.where(n >= 2, out, np.nan)


def blank_ratio(reference: np.ndarray, blanks: np.ndarray) -> np.ndarray:
    """Per feature (rows): median detected reference intensity / median blank intensity (undetected blank = 0).

    ``inf`` when the blanks are mostly empty, NaN without blanks or without any detected reference value.
    """
    if blanks.shape[1] == 0:
        return np.full(reference.shape[0], np.nan)
    with _quiet():
        ref = np.nanmedian(reference, axis=1) if reference.shape[1] else np.full(reference.shape[0], np.nan)
    blank = np.median(np.nan_to_num(blanks, nan=0.0), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(blank > 0, ref / blank, np.where(np.isnan(ref), np.nan, np.inf))


def qc_rlsc(
    intensities: pd.DataFrame,
    sheet: pd.DataFrame,
    *,
    frac: float = 0.75,
    iterations: int = 0,
    min_qc: int = 5,
    progress: bool | None = None,
) -> pd.DataFrame:
    """QC-based robust LOESS signal correction of a feature x injection matrix (NaN = below detection).

    ``sheet`` is indexed by injection (sample_id) with ``sample_type``, ``batch`` and ``injection_order``.
    Per batch and feature the LOESS fit of the QC log-intensities is interpolated to every injection of the
    batch and subtracted on the log scale (divided out), then the feature's overall QC median (log) is added
    back, which also removes between-batch offsets. Injections before the first or after the last QC of a batch
    get the trend of the nearest QC (runs normally start and end with QCs). Returns the corrected matrix (same
    shape, linear scale).
    """
    if not 0 < frac <= 1:
        raise ValueError(f"loess frac must be in (0, 1], got {frac}")
    sheet = sheet.loc[intensities.columns]
    with np.errstate(divide="ignore", invalid="ignore"):
        logv = np.log(intensities.to_numpy(dtype=np.float64))
    is_qc = (sheet["sample_type"] == "qc").to_numpy()
    if not is_qc.any():
        return intensities.copy()
    with _quiet():
        centre = np.nanmedian(logv[:, is_qc], axis=1)
    out = logv.copy()
    batches = sheet["batch"].astype(str).to_numpy()
    order = sheet["injection_order"].to_numpy(dtype=np.float64)
    units = [(b, j) for b in pd.unique(batches) for j in range(logv.shape[0])]
    for b, j in progress_bar(
        units, desc="QC-RLSC", unit="feature", disable=progress is False or (progress is None and len(units) < 20_000)
    ):
        in_b = batches == b
        qc = np.flatnonzero(in_b & is_qc)
        qc = qc[np.argsort(order[qc])]
        y = logv[j, qc]
        ok = ~np.isnan(y)
        if not ok.any():
            continue  # no QC signal for this feature in this batch: nothing to correct against
        if ok.sum() >= max(min_qc, 3):
            x = order[qc][ok]
            fit = lowess(y[ok], x, frac=frac, it=iterations, is_sorted=True, return_sorted=False)
            trend = np.interp(order[in_b], x, fit)
        else:
            trend = np.median(y[ok])
        out[j, in_b] = logv[j, in_b] - trend + centre[j]
    return pd.DataFrame(np.exp(out), index=intensities.index, columns=intensities.columns)


class MetabolomicsExtractor(Extractor):
    """Blank filter and QC-RLSC drift correction of a metabolomics run; features = corrected patient intensities.

    Reads the matrix (``path`` of the modality's samples), the sample sheet and the optional feature annotation
    declared in cohort.yaml (``sample_sheet:``, ``features:``). See the module docstring for the steps.
    """

    name = "metabolomics"
    formats = ("metabolomics_matrix",)
    version = "1"
    per_sample = False

    def __init__(
        self,
        min_blank_ratio: float | None = 3.0,
        drift_correction: bool = True,
        loess_frac: float = 0.75,
        loess_iterations: int = 0,
        min_qc_per_batch: int = 5,
    ):
        self.min_blank_ratio = min_blank_ratio
        self.drift_correction = drift_correction
        self.loess_frac = loess_frac
        self.loess_iterations = loess_iterations
        self.min_qc_per_batch = min_qc_per_batch

    def read(self, cohort: Cohort, modality: str = "metabolomics") -> MetabolomicsData:
        """The run of one metabolomics modality of ``cohort`` (matrix, sample sheet, annotation), strictly: any
        problem in the files raises (see :meth:`read_run` for the run without its unusable injections)."""
        matrix, sheet, features = self._paths(cohort, modality)
        return read_metabolomics(matrix, sheet, features)

    def read_run(self, cohort: Cohort, modality: str = "metabolomics") -> tuple[MetabolomicsData, dict[str, str]]:
        """The run without the injections whose own cells or sheet row are unusable, and why each was left out.

        One broken injection must not cost the others their features: problems the reader locates in an
        injection's matrix column or sheet row set that injection aside; any other problem (the header, a
        feature_id) still raises. Raises too when the run had QC injections (or blanks, with the blank filter)
        and none is usable, since the correction and the QC report would then silently mean something else.
        """
        matrix, sheet, features = self._paths(cohort, modality)
        root = cohort.root
        files = [
            SharedFile(matrix, "metabolomics matrix", "column", display_path(matrix, root)),
            SharedFile(sheet, "metabolomics sample sheet", "row", display_path(sheet, root)),
        ]
        if features is not None:
            files.append(SharedFile(features, "metabolomics feature annotation", None, display_path(features, root)))
        data, dropped = read_isolating(read_metabolomics, files)
        if dropped:
            original = SharedFile(sheet, "metabolomics sample sheet", "row").raw()
            self._check_usable(original, data, dropped, files[0].display)
        return data, dropped

    def _check_usable(
        self, original_sheet: pd.DataFrame | None, data: MetabolomicsData, dropped: dict[str, str], matrix: str
    ) -> None:
        """Refuse a run whose QCs (or blanks, when the blank filter is on) were all left out."""
        if original_sheet is None or not {"sample_id", "sample_type"} <= set(original_sheet.columns):
            return
        kinds = original_sheet["sample_type"].astype(str).str.strip()
        ids = original_sheet["sample_id"].astype(str).str.strip()
        needed = [("qc", "the drift correction and the QC report need at least one")]
        if self.min_blank_ratio is not None:
            needed.append(("blank", "the blank filter needs at least one (or set min_blank_ratio: null)"))
        for kind, why in needed:
            had = set(ids[kinds == kind])
            if had and not (data.sheet["sample_type"] == kind).any():
                reasons = "; ".join(f"{i}: {dropped[i]}" for i in sorted(had) if i in dropped)
                raise DataFileError(matrix, f"every {kind} injection of the run is unusable ({reasons}); {why}")

    def _paths(self, cohort: Cohort, modality: str) -> tuple[Path, Path, Path | None]:
        """Matrix, sample sheet and optional annotation of one metabolomics modality."""
        spec = cohort.spec.modality(modality)
        if spec is None or spec.format != "metabolomics_matrix":
            raise ValueError(f"modality '{modality}' of cohort {cohort.root} is not a metabolomics_matrix")
        if not spec.options.get("sample_sheet"):
            raise ValueError(
                f"{cohort.root / 'cohort.yaml'}: modality '{modality}' needs 'sample_sheet: <path>' "
                "(columns sample_id, sample_type, batch, injection_order); see docs/data_format.md"
            )
        paths = sorted(set(cohort.samples_of(modality)["path"]))
        if len(paths) != 1:
            raise ValueError(
                f"modality '{modality}': samples.csv points to {len(paths)} matrices "
                f"({', '.join(paths[:3])}); a run is one matrix with one sample sheet: merge them"
            )
        features = spec.options.get("features")
        return (
            cohort.path(paths[0]),
            cohort.path(spec.options["sample_sheet"]),
            cohort.path(features) if features else None,
        )

    def references(self, cohort: Cohort) -> dict[str, Path]:
        """The sample sheet and annotation change the output, so they are part of the provenance."""
        refs = {}
        for mod in cohort.modalities:
            spec = cohort.spec.modality(mod)
            if spec is not None and spec.format == "metabolomics_matrix":
                for key in ("sample_sheet", "features"):
                    if spec.options.get(key):
                        refs[f"{mod}_{key}"] = cohort.path(spec.options[key])
        return refs

    def correct(self, data: MetabolomicsData) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(corrected feature x injection matrix, QC report) of one run."""
        raw = data.intensities
        sheet = data.sheet.loc[raw.columns]
        qc = (sheet["sample_type"] == "qc").to_numpy()
        blank = (sheet["sample_type"] == "blank").to_numpy()
        sample = (sheet["sample_type"] == "sample").to_numpy()
        corrected = raw
        if self.drift_correction and qc.any():
            corrected = qc_rlsc(
                raw, sheet, frac=self.loess_frac, iterations=self.loess_iterations, min_qc=self.min_qc_per_batch
            )
        rv, cv = raw.to_numpy(dtype=np.float64), corrected.to_numpy(dtype=np.float64)
        ratio = blank_ratio(rv[:, qc] if qc.any() else rv[:, sample], rv[:, blank])
        report = pd.DataFrame(
            {
                "qc_rsd_before": rsd(rv[:, qc]),
                "qc_rsd_after": rsd(cv[:, qc]),
                "qc_detect_rate": (~np.isnan(rv[:, qc])).mean(axis=1) if qc.any() else np.nan,
                "blank_ratio": ratio,
                "blank_pass": ~(ratio < self.min_blank_ratio) if self.min_blank_ratio is not None else True,
                "n_qc": int(qc.sum()),
            },
            index=raw.index,
        )
        if data.features is not None:
            report = report.join(data.features, how="left")
        return corrected, report

    def qc_report(self, cohort: Cohort, modality: str = "metabolomics") -> pd.DataFrame:
        """Per-feature QC statistics of the run (see module docstring), for :class:`QCRSDFilter` and reports.

        Injections :meth:`read_run` leaves out are named in a warning.
        """
        data, dropped = self.read_run(cohort, modality)
        if dropped:
            shown = "; ".join(f"{k}: {v}" for k, v in sorted(dropped.items()))
            warnings.warn(f"metabolomics QC report without {len(dropped)} unusable injection(s): {shown}", stacklevel=2)
        return self.correct(data)[1]

    def side_tables(self, cohort: Cohort, samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """The QC report, written as ``<modality>.qc.csv`` for :class:`QCRSDFilter` at training time (the injections
        it leaves out are reported by :meth:`extract_shared`)."""
        if samples.empty:
            return {}
        data, _ = self.read_run(cohort, str(samples["modality"].iloc[0]))
        return {"qc": self.correct(data)[1]}

    def extract_shared(self, cohort: Cohort, samples: pd.DataFrame) -> ExtractionResult:
        if samples.empty:
            return ExtractionResult(pd.DataFrame(index=pd.Index([], name="sample_id")))
        modality = str(samples["modality"].iloc[0])
        data, dropped = self.read_run(cohort, modality)
        corrected, report = self.correct(data)
        keep = report.index[report["blank_pass"].to_numpy(dtype=bool)]
        failures: dict[str, str] = {}
        ok: list[str] = []
        matrix = display_path(self._paths(cohort, modality)[0], cohort.root)
        for sid in samples["sample_id"]:
            if sid in dropped:
                failures[sid] = dropped[sid]
            elif sid not in data.sheet.index:
                failures[sid] = f"not a column of the metabolomics matrix {matrix} (nor a row of its sample sheet)"
            elif data.sheet.at[sid, "sample_type"] != "sample":
                failures[sid] = f"the sample sheet marks it as '{data.sheet.at[sid, 'sample_type']}', not 'sample'"
            else:
                ok.append(sid)
        feats = corrected.loc[keep, ok].T.astype(np.float64)
        feats.index.name = "sample_id"
        feats.columns = feats.columns.astype(str)
        feats.columns.name = None
        empty = feats.index[feats.isna().all(axis=1).to_numpy()] if feats.shape[1] else feats.index
        for sid in empty:
            failures[sid] = "no feature detected (every value below the detection limit or removed as blank)"
        wanted = set(samples["sample_id"])
        notes = [
            f"injection {inj} ({self._kind(inj, cohort, modality)}) is left out of the run: {reason}"
            for inj, reason in sorted(dropped.items())
            if inj not in wanted
        ]
        return ExtractionResult(feats.drop(index=empty), failures, notes)

    def _kind(self, injection: str, cohort: Cohort, modality: str) -> str:
        """The sample type the sample sheet gives an injection that was left out (for the note)."""
        raw = SharedFile(self._paths(cohort, modality)[1], "metabolomics sample sheet", "row").raw()
        if raw is None or not {"sample_id", "sample_type"} <= set(raw.columns):
            return "not in the sample sheet"
        hit = raw.loc[raw["sample_id"].astype(str).str.strip() == injection, "sample_type"]
        return f"sample_type {str(hit.iloc[0]).strip()}" if len(hit) else "not in the sample sheet"

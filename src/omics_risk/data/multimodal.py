"""Patient-level multimodal data: the feature store joined with clinical data and the outcome.

Every patient of the cohort is kept. A modality a patient lacks (no sample, or a sample whose extraction
failed) is an all-NaN row plus ``present[patient, modality] = False``: missingness is data, not a code branch.

With a prediction time (:class:`~omics_risk.data.timing.PredictionTime`) the modality tables come from the
per-sample store (``<modality>.samples.parquet``) and hold only samples taken at or before it, as patient x
``<slot>__<feature>``; the presence mask says whether such a sample exists; patients whose event or censoring came
at or before it leave the risk set and outcome times count from it. Without one, the tables are the label-matched
wide tables of every sample (``<modality>.parquet``), as before prediction times existed.

Modalities asked for that the cohort has no sample of (an experiment written for TCGA's RPPA, miRNA and copy number,
run on a cohort without miRNA) are left out with a note: a run uses whatever of its modalities the cohort has. A
cohort without any sample (clinical-only) predicts at the index date whatever the task's prediction time says,
since no sample can place it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from omics_risk.data.contract import BinaryEndpoint, Cohort, SurvivalEndpoint, load_cohort
from omics_risk.data.formats import preprocessing_kind
from omics_risk.data.timing import PredictionTime, at_risk, prediction_days, select_samples, slot_table

__all__ = ["MultimodalData", "load_landmarks", "load_multimodal", "placeable_prediction_time", "stored_modalities"]

log = logging.getLogger(__name__)


@dataclass
class MultimodalData:
    """Per-patient tables keyed by modality, a presence mask and the outcome, all in the same patient order."""

    patients: pd.Index
    clinical: pd.DataFrame  # declared clinical feature columns only (never endpoint columns)
    modalities: dict[str, pd.DataFrame]  # modality -> patient x feature (NaN rows where absent)
    present: pd.DataFrame  # patient x modality, bool ("clinical" is always present)
    time: np.ndarray | None = None  # survival endpoint, in days
    event: np.ndarray | None = None
    label: np.ndarray | None = None  # binary endpoint (NaN = not assessed)
    endpoint: str = ""
    extra_labels: dict[str, np.ndarray] = field(default_factory=dict)
    #: modality -> its cohort.yaml format (what :meth:`preprocessing_kind` asks the format registry about).
    formats: dict[str, str] = field(default_factory=dict)
    #: Each patient's prediction day (days from the index date; None: no prediction time, every sample used).
    prediction_day: np.ndarray | None = None
    #: The landmark day of one data set of :func:`load_landmarks` (None otherwise).
    landmark: float | None = None
    #: With a prediction time: ``at_risk`` (patients kept), ``left_out`` (event or censoring at or before it) and
    #: ``without_timepoint`` (no sample at the named timepoint) counts; empty without one.
    risk_set: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.patients)

    @property
    def modality_names(self) -> list[str]:
        return list(self.modalities)

    def subset(self, idx: np.ndarray | Sequence[int]) -> MultimodalData:
        """Rows ``idx`` (positions) of every table, e.g. one cross-validation fold."""
        idx = np.asarray(idx)

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return MultimodalData(
            patients=self.patients[idx],
            clinical=self.clinical.iloc[idx],
            modalities={m: t.iloc[idx] for m, t in self.modalities.items()},
            present=self.present.iloc[idx],
            time=pick(self.time), event=pick(self.event), label=pick(self.label), endpoint=self.endpoint,
            extra_labels={k: v[idx] for k, v in self.extra_labels.items()}, formats=dict(self.formats),
            prediction_day=pick(self.prediction_day), landmark=self.landmark, risk_set=dict(self.risk_set),
        )

    def preprocessing_kind(self, modality: str) -> str:
        """The fold-fitted preprocessing kind of model input ``modality`` (``clinical``, ``tabular``,
        ``metabolomics``): its format's, from the registry; a modality of unknown format (data built by hand) by its
        name's default format, else ``tabular``."""
        return preprocessing_kind(modality, self.formats.get(modality))

    def frame(self, modalities: Sequence[str] | None = None, *, with_clinical: bool = True) -> pd.DataFrame:
        """One wide frame (columns prefixed ``modality/``) for models that take a single table."""
        parts = []
        if with_clinical:
            parts.append(self.clinical.add_prefix("clinical/"))
        for m in modalities if modalities is not None else self.modality_names:
            parts.append(self.modalities[m].add_prefix(f"{m}/"))
        return pd.concat(parts, axis=1) if parts else pd.DataFrame(index=self.patients)

    def survival_y(self) -> np.ndarray:
        """scikit-survival structured outcome (event, time)."""
        from sksurv.util import Surv  # lazy: scikit-survival is heavy, and the CLI's validate imports this package

        if self.time is None or self.event is None:
            raise ValueError(f"endpoint '{self.endpoint}' is not a survival endpoint")
        return Surv.from_arrays(self.event.astype(bool), self.time)


def _clinical_features(cohort: Cohort) -> pd.DataFrame:
    cols = list(cohort.spec.clinical)
    return cohort.clinical.set_index("patient_id")[cols]


def stored_modalities(store: str | Path) -> list[str]:
    """The modalities a feature store holds (``<modality>.parquet``; the per-sample ``.samples.parquet`` are no
    modality of their own)."""
    return sorted(p.stem for p in Path(store).glob("*.parquet") if "." not in p.stem)


def _open(cohort: str | Path | Cohort, features_dir: str | Path | None,
          modalities: Sequence[str] | None) -> tuple[Cohort, Path, list[str]]:
    """The parsed cohort, its feature store and the wanted modalities (checked against the store)."""
    cohort = cohort if isinstance(cohort, Cohort) else load_cohort(cohort)
    store = Path(features_dir) if features_dir is not None else cohort.root / "features"
    if modalities is not None and not list(modalities):  # clinical only: nothing to read from a feature store
        return cohort, store, []
    if not (store / "manifest.json").is_file():
        raise FileNotFoundError(f"no feature store at {store}: run `omics-risk extract {cohort.root}` first")
    available = stored_modalities(store)
    wanted = list(modalities) if modalities is not None else available
    lacking = [m for m in wanted if m not in available and m not in cohort.modalities]
    if lacking:
        log.warning("note: cohort %s has no sample of %s (data.modalities); using %s", cohort.spec.name,
                    ", ".join(lacking), ", ".join(["clinical", *[m for m in wanted if m not in lacking]]))
        wanted = [m for m in wanted if m not in lacking]
    unknown = [m for m in wanted if m not in available]
    if unknown:
        raise ValueError(f"modalities {unknown} are not in the feature store {store} (has: {', '.join(available)})")
    return cohort, store, wanted


@dataclass
class _Outcome:
    """The endpoint columns of the patients kept (those with an outcome when unlabelled ones are dropped)."""

    patients: pd.Index
    endpoint: str
    time: np.ndarray | None = None
    event: np.ndarray | None = None
    label: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def _outcome(cohort: Cohort, endpoint: str | None, response: str | None, drop_unlabelled: bool) -> _Outcome:
    patients = _clinical_features(cohort).index
    time = event = label = None
    ep_name = endpoint or next(iter(cohort.spec.endpoints))
    if ep_name not in cohort.spec.endpoints:
        raise ValueError(f"endpoint '{ep_name}' is not in cohort.yaml (has: {', '.join(cohort.spec.endpoints)})")
    ep = cohort.spec.endpoints[ep_name]
    raw = cohort.clinical.set_index("patient_id")
    if isinstance(ep, SurvivalEndpoint):
        t = raw[ep.time].astype(float) * cohort.spec.days_per_unit
        e = raw[ep.event].astype(float)
        keep = t.notna() & e.notna() if drop_unlabelled else pd.Series(True, index=raw.index)
        patients = patients[keep.to_numpy()]
        time, event = t.loc[patients].to_numpy(), e.loc[patients].to_numpy()
    elif isinstance(ep, BinaryEndpoint):
        lab = raw[ep.column].astype(float)
        keep = lab.notna() if drop_unlabelled else pd.Series(True, index=raw.index)
        patients = patients[keep.to_numpy()]
        label = lab.loc[patients].to_numpy()

    extra: dict[str, np.ndarray] = {}
    if response is not None:
        rep = cohort.spec.endpoints.get(response)
        if not isinstance(rep, BinaryEndpoint):
            raise ValueError(f"response endpoint '{response}' must be a binary endpoint in cohort.yaml")
        label = raw[rep.column].astype(float).loc[patients].to_numpy()
        extra = {response: label}
    return _Outcome(patients, ep_name, time, event, label, extra)


def load_multimodal(cohort: str | Path | Cohort, features_dir: str | Path | None = None, *,
                    modalities: Sequence[str] | None = None, endpoint: str | None = None,
                    response: str | None = None, drop_unlabelled: bool = True,
                    prediction_time: PredictionTime | None = None) -> MultimodalData:
    """Join the feature store of ``cohort`` with its clinical table and ``endpoint``.

    ``modalities`` defaults to every table in the store. Patients without the endpoint's outcome are left out
    only when ``drop_unlabelled`` (training); scoring keeps them all. ``response`` names a binary endpoint read
    alongside a survival ``endpoint`` (e.g. SCLC response and PFS, trained jointly); its missing labels stay NaN.
    ``prediction_time``: None uses every sample (the label-matched wide tables); a single-time
    :class:`~omics_risk.data.timing.PredictionTime` uses only samples at or before it and its risk set (see the
    module doc; patients out of the risk set are left out only when ``drop_unlabelled``). Landmarks:
    :func:`load_landmarks`.
    """
    cohort, store, wanted = _open(cohort, features_dir, modalities)
    prediction_time = placeable_prediction_time(cohort, prediction_time)
    if prediction_time is not None and prediction_time.at == "landmarks":
        raise ValueError("task.prediction_time: at: landmarks gives one data set per landmark (load_landmarks, for "
                         "dynamic models); a model fitted on one data set needs a single prediction time, e.g. "
                         "{at: day, day: 90}")
    out = _outcome(cohort, endpoint, response, drop_unlabelled)
    if prediction_time is not None:
        return _at_prediction_time(cohort, out, _sample_tables(cohort, store, wanted), prediction_time,
                                   drop_unlabelled=drop_unlabelled)
    patients = out.patients
    clinical = _clinical_features(cohort)
    tables = {m: pd.read_parquet(store / f"{m}.parquet").reindex(patients) for m in wanted}
    present = pd.DataFrame({"clinical": True, **{m: tables[m].notna().any(axis=1) for m in wanted}}, index=patients)
    formats = {m: ms.format for m in wanted if (ms := cohort.spec.modality(m)) is not None}
    return MultimodalData(patients=patients, clinical=clinical.loc[patients], modalities=tables, present=present,
                          time=out.time, event=out.event, label=out.label, endpoint=out.endpoint,
                          extra_labels=out.extra, formats=formats)


def load_landmarks(cohort: str | Path | Cohort, features_dir: str | Path | None = None, *,
                   prediction_time: PredictionTime, modalities: Sequence[str] | None = None,
                   endpoint: str | None = None, response: str | None = None,
                   drop_unlabelled: bool = True) -> dict[float, MultimodalData]:
    """One data set per landmark day of ``prediction_time`` (``at: landmarks``; a single-time kind gives one, keyed
    by its day, NaN for ``at: timepoint``): the patients at risk at that landmark, in cohort order, with their
    inputs at that landmark and outcome times counted from it (for landmark super-models)."""
    cohort, store, wanted = _open(cohort, features_dir, modalities)
    prediction_time = cast(PredictionTime, placeable_prediction_time(cohort, prediction_time))
    out = _outcome(cohort, endpoint, response, drop_unlabelled)
    samples = _sample_tables(cohort, store, wanted)
    if prediction_time.at != "landmarks":
        key = {"index": 0.0, "day": prediction_time.day}.get(prediction_time.at, float("nan"))
        return {float(key): _at_prediction_time(cohort, out, samples, prediction_time,  # type: ignore[arg-type]
                                                drop_unlabelled=drop_unlabelled)}
    return {lm: _at_prediction_time(cohort, out, samples, prediction_time.at_landmark(lm),
                                    drop_unlabelled=drop_unlabelled, landmark=lm)
            for lm in prediction_time.landmarks}


def placeable_prediction_time(cohort: Cohort, pt: PredictionTime | None) -> PredictionTime | None:
    """``pt``, or the index date for a timepoint label in a cohort without samples (clinical-only), with a note."""
    if pt is None or pt.at != "timepoint" or len(cohort.samples):
        return pt
    log.warning("note: cohort %s has no samples, so task.prediction_time (timepoint %s) cannot be placed; predicting "
                "at the index date (day 0) from the clinical data", cohort.spec.name, pt.timepoint)
    return PredictionTime()


def _sample_tables(cohort: Cohort, store: Path, wanted: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The per-sample tables of ``wanted``; a store written before they existed says to extract again."""
    missing = [m for m in wanted if not (store / f"{m}.samples.parquet").is_file()]
    if missing:
        raise ValueError(f"the feature store {store} has no per-sample table for {', '.join(missing)} "
                         f"({missing[0]}.samples.parquet): it was written before prediction times existed. Re-run "
                         f"`omics-risk extract {cohort.root}` (cached: only the tables are written again), or train "
                         "with extract.run=true")
    return {m: pd.read_parquet(store / f"{m}.samples.parquet") for m in wanted}


def _at_prediction_time(cohort: Cohort, out: _Outcome, samples: dict[str, pd.DataFrame], pt: PredictionTime, *,
                        drop_unlabelled: bool, landmark: float | None = None) -> MultimodalData:
    """The data at one single-time prediction time: risk set, shifted outcome, tables of samples up to it."""
    patients = out.patients
    pday = prediction_days(pt, cohort.samples, patients)
    has_day = pday.notna().to_numpy()
    time, event, label, extra = out.time, out.event, out.label, dict(out.extra)
    if time is not None and event is not None:
        keep, time = at_risk(time, event, pday.to_numpy())
    else:
        keep = has_day
    counts = {"at_risk": int(keep.sum()), "left_out": int((has_day & ~keep).sum()),
              "without_timepoint": int((~has_day).sum())}
    if drop_unlabelled:
        patients = patients[keep]
        pday = pday.loc[patients]

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[keep]

        time, event, label = pick(time), pick(event), pick(label)
        extra = {k: v[keep] for k, v in extra.items()}
    tables, present = {}, {"clinical": pd.Series(True, index=patients)}
    for m, long in samples.items():
        selected = select_samples(long, pday, pt.windows)
        tables[m] = slot_table(selected, patients)
        present[m] = pd.Series(patients.isin(selected["patient_id"]), index=patients)
    formats = {m: ms.format for m in samples if (ms := cohort.spec.modality(m)) is not None}
    return MultimodalData(patients=patients, clinical=_clinical_features(cohort).loc[patients], modalities=tables,
                          present=pd.DataFrame(present, index=patients), time=time, event=event, label=label,
                          endpoint=out.endpoint, extra_labels=extra, formats=formats,
                          prediction_day=pday.to_numpy(dtype=float), landmark=landmark, risk_set=counts)

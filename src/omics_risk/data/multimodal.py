"""Patient-level multimodal data: the feature store joined with clinical data and the outcome.

Every patient of the cohort is kept. A modality a patient lacks (no sample, or a sample whose extraction
failed) is an all-NaN row plus ``present[patient, modality] = False``: missingness is data, not a code branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from omics_risk.data.contract import BinaryEndpoint, Cohort, SurvivalEndpoint, load_cohort
from omics_risk.data.formats import preprocessing_kind

__all__ = ["MultimodalData", "load_multimodal"]


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


def load_multimodal(cohort: str | Path | Cohort, features_dir: str | Path | None = None, *,
                    modalities: Sequence[str] | None = None, endpoint: str | None = None,
                    response: str | None = None, drop_unlabelled: bool = True) -> MultimodalData:
    """Join the feature store of ``cohort`` with its clinical table and ``endpoint``.

    ``modalities`` defaults to every table in the store. Patients without the endpoint's outcome are left out
    only when ``drop_unlabelled`` (training); scoring keeps them all. ``response`` names a binary endpoint read
    alongside a survival ``endpoint`` (e.g. SCLC response and PFS, trained jointly); its missing labels stay NaN.
    """
    cohort = cohort if isinstance(cohort, Cohort) else load_cohort(cohort)
    store = Path(features_dir) if features_dir is not None else cohort.root / "features"
    if not (store / "manifest.json").is_file():
        raise FileNotFoundError(f"no feature store at {store}: run `omics-risk extract {cohort.root}` first")
    available = sorted(p.stem for p in store.glob("*.parquet"))
    wanted = list(modalities) if modalities is not None else available
    unknown = [m for m in wanted if m not in available]
    if unknown:
        raise ValueError(f"modalities {unknown} are not in the feature store {store} (has: {', '.join(available)})")

    clinical = _clinical_features(cohort)
    patients = clinical.index
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

    tables = {m: pd.read_parquet(store / f"{m}.parquet").reindex(patients) for m in wanted}
    present = pd.DataFrame({"clinical": True, **{m: tables[m].notna().any(axis=1) for m in wanted}}, index=patients)
    formats = {m: ms.format for m in wanted if (ms := cohort.spec.modality(m)) is not None}
    return MultimodalData(patients=patients, clinical=clinical.loc[patients], modalities=tables, present=present,
                          time=time, event=event, label=label, endpoint=ep_name, extra_labels=extra, formats=formats)

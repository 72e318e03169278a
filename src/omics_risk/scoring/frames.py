"""The flat per-patient scoring frame: what the pyfunc model takes and what Spark's ``spark_udf`` sends.

One row per patient and one column per input, named so that the column alone says where the value belongs:

- ``patient_id``: the patient's identifier (string, unique);
- ``clinical/<column>``: the declared clinical columns, raw typed values (numbers, or category / ordinal strings);
- ``<modality>/<timepoint>__<feature>``: modality features (floats), NaN throughout a modality's block when the
  patient lacks that modality.

A :class:`FeatureManifest` (stored with every model) lists the expected columns in order and the clinical value
kinds. :func:`from_frame` checks a frame against it: a modality may be absent entirely (its columns left out,
e.g. a cohort without CT), but a modality that is there must be complete, so a renamed or dropped feature
column is an error rather than a silently imputed value.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from omics_risk.data.multimodal import MultimodalData

__all__ = [
    "CLINICAL",
    "ID_COLUMN",
    "FeatureManifest",
    "from_frame",
    "to_frame",
]

ID_COLUMN = "patient_id"
CLINICAL = "clinical"
#: Kinds of a clinical column in the frame: numbers (numeric, binary) or text (categorical, ordinal levels).
ClinicalKind = Literal["double", "string"]
_KIND_OF_TYPE: dict[str, ClinicalKind] = {
    "numeric": "double",
    "binary": "double",
    "categorical": "string",
    "ordinal": "string",
}
_MAX_LISTED = 20


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


@dataclass(frozen=True)
class FeatureManifest:
    """The input columns a model expects, in order: clinical columns with their kind, features per modality.

    Args:
        clinical: ``{column: "double" | "string"}`` for the clinical columns (without the ``clinical/`` prefix).
        modalities: ``{modality: (timepoint__feature, ...)}`` in the model's column order.
        images: modalities the model reads from image tensors, which a flat frame cannot carry (scored as absent).
    """

    clinical: Mapping[str, ClinicalKind]
    modalities: Mapping[str, tuple[str, ...]]
    images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        bad = {c: k for c, k in self.clinical.items() if k not in ("double", "string")}
        if bad:
            raise ValueError(f"clinical column kinds must be 'double' or 'string', got {bad}")
        if CLINICAL in self.modalities:
            raise ValueError(f"'{CLINICAL}' is reserved for the clinical columns; rename that modality")
        for m in self.modalities:
            if "/" in m or not m:
                raise ValueError(f"modality name {m!r} must be non-empty and contain no '/'")

    @classmethod
    def from_data(cls, data: MultimodalData, clinical_types: Mapping[str, Any] | None = None) -> FeatureManifest:
        """The manifest of ``data``'s columns.

        ``clinical_types`` (``{column: "numeric"}`` or ``{column: {"type": ...}}``, as from
        :func:`omics_risk.features.clinical.clinical_types`) decides each clinical column's kind; without it the
        kind follows the column's dtype (numbers and booleans are ``double``, anything else ``string``).
        """
        kinds: dict[str, ClinicalKind] = {}
        for col in data.clinical.columns:
            info = (clinical_types or {}).get(col)
            declared = info if isinstance(info, str) or info is None else info.get("type")
            if declared is not None:
                if declared not in _KIND_OF_TYPE:
                    raise ValueError(f"clinical column '{col}' has unknown type {declared!r}")
                kinds[str(col)] = _KIND_OF_TYPE[declared]
            else:
                s = data.clinical[col]
                numeric = pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
                kinds[str(col)] = "double" if numeric else "string"
        mods = {m: tuple(str(c) for c in t.columns) for m, t in data.modalities.items()}
        return cls(clinical=kinds, modalities=mods)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], clinical_types: Mapping[str, Any] | None = None) -> FeatureManifest:
        """Inverse of :meth:`to_dict`; also reads the per-modality form of the fused model's ``config.json``.

        That form is ``{modality: {"kind": ..., "columns_in": [...]}}`` (``"clinical"`` among the modalities,
        ``"kind": "ct_images"`` for image inputs); ``clinical_types`` (cohort.yaml types) then give the clinical
        kinds, and a column without a known type is read as text.
        """
        if "modalities" not in d and all(isinstance(v, Mapping) for v in d.values()):
            return cls._from_modality_specs(d, clinical_types or {})
        if "clinical" not in d or "modalities" not in d:
            raise ValueError(f"a feature manifest needs 'clinical' and 'modalities' keys, got {sorted(d)}")
        clinical = d["clinical"]
        if not isinstance(clinical, Mapping):  # a plain column list: kinds unknown, numbers assumed
            clinical = dict.fromkeys(clinical, "double")
        return cls(
            clinical={str(k): v for k, v in clinical.items()},
            modalities={str(m): tuple(str(c) for c in cols) for m, cols in d["modalities"].items()},
            images=tuple(d.get("images", ())),
        )

    @classmethod
    def _from_modality_specs(cls, specs: Mapping[str, Mapping[str, Any]], types: Mapping[str, Any]) -> FeatureManifest:
        clinical: dict[str, ClinicalKind] = {}
        modalities: dict[str, tuple[str, ...]] = {}
        images: list[str] = []
        for m, spec in specs.items():
            if spec.get("kind") == "ct_images":
                images.append(str(m))
            elif m == CLINICAL:
                for col in spec.get("columns_in", []):
                    info = types.get(col)
                    declared = info if isinstance(info, str) or info is None else info.get("type")
                    clinical[str(col)] = _KIND_OF_TYPE.get(declared or "", "string")
            elif "columns_in" in spec:
                modalities[str(m)] = tuple(str(c) for c in spec["columns_in"])
            else:
                raise ValueError(f"feature manifest entry '{m}' has no 'columns_in': {dict(spec)}")
        return cls(clinical=clinical, modalities=modalities, images=tuple(images))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        out: dict[str, Any] = {
            "clinical": dict(self.clinical),
            "modalities": {m: list(c) for m, c in self.modalities.items()},
        }
        if self.images:
            out["images"] = list(self.images)
        return out

    def clinical_columns(self) -> list[str]:
        return [f"{CLINICAL}/{c}" for c in self.clinical]

    def modality_columns(self, modality: str) -> list[str]:
        return [f"{modality}/{c}" for c in self.modalities[modality]]

    def columns(self) -> list[str]:
        """Every input column of the flat frame, ``patient_id`` first."""
        out = [ID_COLUMN, *self.clinical_columns()]
        for m in self.modalities:
            out.extend(self.modality_columns(m))
        return out


def to_frame(data: MultimodalData) -> pd.DataFrame:
    """The flat scoring frame of ``data``: ``patient_id``, ``clinical/<col>``, ``<modality>/<timepoint>__<feature>``."""
    wide = data.frame()
    ids = pd.Series(data.patients.astype(str), index=wide.index, name=ID_COLUMN)
    return pd.concat([ids, wide], axis=1).reset_index(drop=True)


def _coerce_float(block: pd.DataFrame) -> pd.DataFrame:
    """Float64 columns; a value that is not a number is an error naming its column."""
    try:
        return block.astype(np.float64)
    except (TypeError, ValueError):
        pass
    out = {}
    for col in block.columns:
        s = block[col]
        num = pd.to_numeric(s, errors="coerce")
        bad = s.notna() & num.isna()
        if bad.any():
            examples = ", ".join(repr(v) for v in s[bad].unique()[:3])
            raise ValueError(
                f"column '{col}' must hold numbers; found {examples} in {int(bad.sum())} row(s). "
                "Fix the values or leave the cells empty (missing)."
            )
        out[col] = num.astype(np.float64)
    return pd.DataFrame(out, index=block.index)


def _coerce_text(s: pd.Series) -> pd.Series:
    """Object column of strings with missing cells as NaN (Spark sends None, CSV readers NaN)."""
    if pd.api.types.is_bool_dtype(s):
        s = s.astype(object)
    text = s.astype(object).where(s.notna(), np.nan)
    return text.map(lambda v: v if isinstance(v, str) or (isinstance(v, float) and np.isnan(v)) else str(v))


def from_frame(df: pd.DataFrame, manifest: FeatureManifest) -> MultimodalData:
    """Rebuild :class:`MultimodalData` (no outcome) from a flat scoring frame checked against ``manifest``.

    A modality whose columns are all left out is absent for every patient (allowed); a modality with only some of
    its columns is an error listing the missing ones, as are missing clinical columns. Columns the manifest does
    not know are ignored with a warning. Presence per patient is "any non-missing value in the modality block".
    """
    if ID_COLUMN not in df.columns:
        raise ValueError(f"the scoring frame has no '{ID_COLUMN}' column (columns: {_listing(list(map(str, df)))})")
    if df.columns.duplicated().any():
        dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        raise ValueError(f"the scoring frame has duplicated columns: {_listing(dup)}")
    ids = df[ID_COLUMN]
    if ids.isna().any():
        rows = np.flatnonzero(ids.isna().to_numpy())[:10].tolist()
        raise ValueError(f"'{ID_COLUMN}' is empty in row(s) {rows}: every row must name its patient")
    patients = pd.Index(ids.astype(str).to_numpy(), name=ID_COLUMN)
    if patients.has_duplicates:
        raise ValueError(
            f"'{ID_COLUMN}' must be unique (one row per patient); repeated: "
            f"{_listing(sorted(set(patients[patients.duplicated()])))}"
        )
    cols = set(map(str, df.columns))
    known = set(manifest.columns())
    extra = [str(c) for c in df.columns if str(c) not in known]
    if extra:
        warnings.warn(f"ignoring {len(extra)} column(s) the model does not use: {_listing(extra)}", stacklevel=2)

    missing: list[str] = [c for c in manifest.clinical_columns() if c not in cols]
    blocks: dict[str, list[str]] = {}
    for m in manifest.modalities:
        expected = manifest.modality_columns(m)
        have = [c for c in expected if c in cols]
        if have and len(have) < len(expected):
            missing.extend(c for c in expected if c not in cols)
        blocks[m] = expected if have else []
    if missing:
        raise ValueError(
            f"the scoring frame lacks {len(missing)} column(s) the model needs: {_listing(missing)}. "
            "A modality may be left out as a whole (all its columns), but not in part; clinical columns are required."
        )

    index = pd.RangeIndex(len(df))
    body = df.set_axis(index, axis=0)
    clinical: dict[str, pd.Series] = {}
    for col, kind in manifest.clinical.items():
        s = body[f"{CLINICAL}/{col}"]
        clinical[col] = _coerce_float(s.to_frame())[s.name] if kind == "double" else _coerce_text(s)
    clinical_df = pd.DataFrame(clinical, index=index).set_axis(patients, axis=0)

    modalities: dict[str, pd.DataFrame] = {}
    present = {CLINICAL: np.ones(len(df), dtype=bool)}
    for m, feats in manifest.modalities.items():
        if blocks[m]:
            block = _coerce_float(body[blocks[m]])
            block.columns = list(feats)
        else:
            block = pd.DataFrame(np.full((len(df), len(feats)), np.nan), index=index, columns=list(feats))
        block = block.set_axis(patients, axis=0)
        modalities[m] = block
        present[m] = block.notna().any(axis=1).to_numpy()
    return MultimodalData(
        patients=patients,
        clinical=clinical_df,
        modalities=modalities,
        present=pd.DataFrame(present, index=patients),
    )

"""The flat per-patient scoring frame: what the pyfunc model takes and what Spark's ``spark_udf`` sends.

One row per patient and one column per input, named so that the column alone says where the value belongs:

- ``patient_id``: the patient's identifier (string, unique);
- ``clinical/<column>``: the declared clinical columns: float64 numbers (numeric, binary), or text (object) for
  category / ordinal levels;
- ``<modality>/<timepoint>__<feature>``: modality features (float64), NaN throughout a modality's block when the
  patient lacks that modality.

A :class:`FeatureManifest` (stored with every model; :meth:`FeatureManifest.of` reads it off a loaded MLflow model)
lists the expected columns in order and the clinical value kinds. ``to_frame(data, manifest)`` emits exactly those
columns in the logged schema's types, so ``model.predict(to_frame(data, manifest))`` needs nothing else. Numbers are
always float64: MLflow's schema enforcement refuses int64 for a ``double`` column (it converts only integers that
fit a double exactly), and a whole-number column read from CSV (age) is int64.

:func:`from_frame` checks a frame against a manifest. A modality may be absent entirely (its columns left out, e.g. a
cohort without CT) or in part (features a cohort-level QC removed): its missing feature columns are NaN, imputed by
the model's fitted preprocessing, with a warning naming them. ``patient_id`` and the clinical columns are required.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from omics_risk.data.multimodal import MultimodalData

__all__ = [
    "CLINICAL",
    "CONFIG_FILE",
    "ID_COLUMN",
    "RISK_GROUPS",
    "FeatureManifest",
    "from_frame",
    "model_manifest",
    "to_frame",
]

ID_COLUMN = "patient_id"
CLINICAL = "clinical"
#: A saved model's settings file (``SurvivalModel.save``), which may hold its ``feature_manifest``.
CONFIG_FILE = "config.json"
#: Risk-group schemes whose training cut-offs a logged model stores (see omics_risk.evaluation.riskgroups); here,
#: not in pyfunc, so that ``omics-risk score`` checks its options without importing torch and MLflow.
RISK_GROUPS: tuple[str, ...] = ("median", "tertiles")
#: Kinds of a clinical column in the frame: numbers (numeric, binary) or text (categorical, ordinal levels).
ClinicalKind = Literal["double", "string"]
_KIND_OF_TYPE: dict[str, ClinicalKind] = {
    "numeric": "double",
    "binary": "double",
    "categorical": "string",
    "ordinal": "string",
}
#: MLflow column types (``mlflow.types.DataType`` names) of a clinical column, as a manifest kind.
_KIND_OF_MLFLOW_TYPE: dict[str, ClinicalKind] = {
    "double": "double",
    "float": "double",
    "long": "double",
    "integer": "double",
    "boolean": "double",
    "string": "string",
}
_MAX_LISTED = 20
#: Feature names shown in a missing-features warning (the count says how many there are in all).
_FIRST_FEW = 5


def _listing(names: list[str], limit: int = _MAX_LISTED) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... ({len(names)} in all)" if len(names) > limit else "")


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
    def of(cls, source: Any) -> FeatureManifest:
        """The manifest of ``source``: a FeatureManifest, its dict form, a loaded MLflow model, its input schema,
        or a fitted omics-risk model.

        A loaded pyfunc (``load_scoring_model(uri)`` / ``mlflow.pyfunc.load_model(uri)``) gives the manifest of its
        logged input schema (:meth:`from_schema`): the columns and types ``predict`` enforces.
        """
        if isinstance(source, FeatureManifest):
            return source
        if isinstance(source, Mapping):
            return cls.from_dict(source)
        metadata = getattr(source, "metadata", None)
        if callable(getattr(metadata, "get_input_schema", None)):
            schema = metadata.get_input_schema()
            if schema is None:
                raise ValueError(f"{type(source).__name__} was logged without an input signature: no manifest to read")
            return cls.from_schema(schema)
        if hasattr(source, "inputs") and callable(getattr(source, "input_names", None)):
            return cls.from_schema(source)
        if hasattr(source, "predict_risk"):  # a fitted SurvivalModel: its feature_manifest (the pyfunc's lookup)
            return model_manifest(source)
        raise TypeError(
            f"cannot read a feature manifest from {type(source).__name__}: pass a FeatureManifest, a loaded MLflow "
            "model, its input schema (model.metadata.get_input_schema()) or a fitted omics-risk model"
        )

    @classmethod
    def from_schema(cls, schema: Any) -> FeatureManifest:
        """The manifest of a logged model's MLflow column schema (``pyfunc.input_schema``'s layout).

        ``patient_id``, ``clinical/<col>`` (``double`` or ``string``) and ``<modality>/<timepoint>__<feature>``
        columns, in schema order. Image modalities are not in a schema (a flat frame cannot carry them).
        """
        clinical: dict[str, ClinicalKind] = {}
        modalities: dict[str, list[str]] = {}
        names = []
        for spec in schema.inputs:
            name = str(spec.name)
            names.append(name)
            if name == ID_COLUMN:
                continue
            block, sep, rest = name.partition("/")
            if not sep or not block or not rest:
                raise ValueError(f"schema column {name!r} is not '{CLINICAL}/<column>' or '<modality>/<feature>': "
                                 "not an omics-risk scoring schema")
            if block == CLINICAL:
                type_name = str(getattr(spec.type, "name", spec.type))
                if type_name not in _KIND_OF_MLFLOW_TYPE:
                    raise ValueError(f"schema column {name!r} has type {type_name!r}; a clinical column must be "
                                     "a number or a string")
                clinical[rest] = _KIND_OF_MLFLOW_TYPE[type_name]
            else:
                modalities.setdefault(block, []).append(rest)
        if ID_COLUMN not in names:
            raise ValueError(f"the schema has no '{ID_COLUMN}' column (columns: {_listing(names)}): "
                             "not an omics-risk scoring schema")
        return cls(clinical=clinical, modalities={m: tuple(f) for m, f in modalities.items()})

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
                kinds[str(col)] = "double" if _is_number_dtype(data.clinical[col]) else "string"
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


def _is_number_dtype(s: pd.Series) -> bool:
    """Numbers and booleans (what the manifest calls ``double``); not complex or timestamps."""
    return (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)) and not pd.api.types.is_complex_dtype(s)


def _warn_missing_features(modality: str, lacking: list[str], n_expected: int, where: str) -> None:
    """One warning per modality: features the model uses that ``where`` lacks, scored as missing (imputed)."""
    names = ", ".join(f"{modality}/{f}" for f in lacking[:_FIRST_FEW])
    more = f" and {len(lacking) - _FIRST_FEW} more" if len(lacking) > _FIRST_FEW else ""
    warnings.warn(
        f"modality '{modality}': {len(lacking)} of the model's {n_expected} feature column(s) are missing from "
        f"{where} ({names}{more}); they are scored as missing values, imputed by the model's preprocessing. "
        "Many missing features usually mean the cohort was extracted with other settings than the model's.",
        UserWarning,
        stacklevel=3,
    )


def to_frame(data: MultimodalData, manifest: Any = None) -> pd.DataFrame:
    """The flat scoring frame of ``data``: ``patient_id``, ``clinical/<col>``, ``<modality>/<timepoint>__<feature>``.

    With ``manifest`` (a :class:`FeatureManifest`, a loaded MLflow model or its input schema, see
    :meth:`FeatureManifest.of`) the frame holds exactly the model's columns, in its order and its schema's types:
    numeric clinical and modality columns float64, text clinical columns object strings; feature columns the cohort
    lacks are NaN (a whole modality silently, part of one with a warning naming the missing features); columns the
    model does not use are left out. A clinical column the model needs but ``data`` lacks is an error (add it to
    clinical.csv, with empty cells if unknown). Without ``manifest``: every column of ``data``, numbers and booleans
    as float64.
    """
    ids = pd.Series(data.patients.astype(str).to_numpy(dtype=object), name=ID_COLUMN)
    if manifest is None:
        wide = data.frame()
        to_float = {c: np.float64 for c in wide.columns if _is_number_dtype(wide[c]) and wide[c].dtype != np.float64}
        wide = wide.astype(to_float) if to_float else wide
        return pd.concat([ids, wide.reset_index(drop=True)], axis=1)

    manifest = FeatureManifest.of(manifest)
    lacking_clin = [c for c in manifest.clinical if c not in data.clinical.columns]
    if lacking_clin:
        raise ValueError(
            f"the data lacks clinical column(s) the model needs: {_listing(lacking_clin)}; add them to "
            "clinical.csv and cohort.yaml (empty cells are allowed and are imputed)"
        )
    n = len(data)
    index = pd.RangeIndex(n)
    clinical = data.clinical if data.clinical.index.equals(data.patients) else data.clinical.reindex(data.patients)
    clinical = clinical.reset_index(drop=True)
    parts: list[pd.DataFrame] = [ids.to_frame()]
    clin: dict[str, pd.Series] = {}
    for col, kind in manifest.clinical.items():
        s = clinical[col].rename(f"{CLINICAL}/{col}")
        clin[str(s.name)] = _coerce_float(s.to_frame())[s.name] if kind == "double" else _coerce_text(s)
    parts.append(pd.DataFrame(clin, index=index))
    for m, feats in manifest.modalities.items():
        names = manifest.modality_columns(m)
        table = data.modalities.get(m)
        if table is None:  # the cohort has no such modality: absent for every patient, as from_frame allows
            parts.append(pd.DataFrame(np.full((n, len(feats)), np.nan), index=index, columns=names))
            continue
        lacking = [f for f in feats if f not in table.columns]
        if lacking:
            _warn_missing_features(m, lacking, len(feats), "the data")
        if not table.index.equals(data.patients):
            table = table.reindex(data.patients)
        block = _coerce_float(table.reindex(columns=list(feats)))
        block.columns = names
        parts.append(block.reset_index(drop=True))
    return pd.concat(parts, axis=1)


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


def _as_label(v: Any) -> Any:
    """A category label as text; a whole float (``2.0``, what a CSV column with gaps or Spark makes of the
    integer code ``2``) reads as ``"2"``."""
    if isinstance(v, str) or (isinstance(v, float) and np.isnan(v)):
        return v
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _coerce_text(s: pd.Series) -> pd.Series:
    """Object column of strings with missing cells as NaN (Spark sends None, CSV readers NaN)."""
    if pd.api.types.is_bool_dtype(s):
        s = s.astype(object)
    text = s.astype(object).where(s.notna(), np.nan)
    return text.map(_as_label).astype(object)


def from_frame(df: pd.DataFrame, manifest: FeatureManifest) -> MultimodalData:
    """Rebuild :class:`MultimodalData` (no outcome) from a flat scoring frame checked against ``manifest``.

    A modality whose columns are all left out is absent for every patient; a modality with only some of its columns
    (features this cohort's QC removed) keeps them, the missing ones NaN (imputed by the model's preprocessing), with
    a warning naming the modality and the missing columns. Errors: no ``patient_id`` column, empty or repeated ids,
    a missing clinical column (send an empty column if the values are unknown), a value that is not a number in a
    numeric column. Columns the manifest does not know are ignored with one warning naming them. Presence per
    patient is "any non-missing value in the modality block".
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

    missing = [c for c in manifest.clinical_columns() if c not in cols]
    if missing:
        raise ValueError(
            f"the scoring frame lacks {len(missing)} clinical column(s) the model needs: {_listing(missing)}. "
            "Clinical columns are required; send an empty column (all missing) if the values are unknown."
        )
    have: dict[str, list[str]] = {}
    for m, feats in manifest.modalities.items():
        have[m] = [f for f in feats if f"{m}/{f}" in cols]
        if have[m] and len(have[m]) < len(feats):
            _warn_missing_features(m, [f for f in feats if f"{m}/{f}" not in cols], len(feats), "the scoring frame")

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
        if have[m]:
            block = _coerce_float(body[[f"{m}/{f}" for f in have[m]]])
            block.columns = have[m]
            block = block.reindex(columns=list(feats))  # the missing features of a partial modality: NaN
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


def _clinical_types_of(model: Any) -> dict[str, Any]:
    """Clinical column types a fitted model encodes with (its ClinicalEncoder's, else its settings')."""
    pp = (
        getattr(model, "preprocessors_", {}).get(CLINICAL)
        if isinstance(getattr(model, "preprocessors_", None), Mapping)
        else None
    )
    from omics_risk.features.clinical import ClinicalEncoder  # lazy: sklearn stays out of the CLI's option checks

    for _, step in getattr(getattr(pp, "pipeline_", None), "steps", []):
        if isinstance(step, ClinicalEncoder) and step.types:
            return dict(step.types)
    return dict(getattr(model, "clinical_types", None) or {})


def model_manifest(model: Any, directory: str | Path | None = None) -> FeatureManifest:
    """The model's :class:`FeatureManifest`.

    From its ``feature_manifest`` attribute (a FeatureManifest or its dict), else the fused model's
    per-modality ``feature_manifest_`` (clinical kinds from the model's clinical encoder), else ``config.json``.
    """
    types = _clinical_types_of(model)
    for attr in ("feature_manifest", "feature_manifest_"):
        found = getattr(model, attr, None)
        if isinstance(found, FeatureManifest):
            return found
        if isinstance(found, Mapping):
            return FeatureManifest.from_dict(found, types)
    if directory is not None and (Path(directory) / CONFIG_FILE).is_file():
        cfg = json.loads((Path(directory) / CONFIG_FILE).read_text())
        if "feature_manifest" in cfg:
            return FeatureManifest.from_dict(cfg["feature_manifest"], types)
    raise ValueError(
        f"{type(model).__name__} has no feature manifest: set `feature_manifest` (a FeatureManifest) when fitting, "
        "or store it under 'feature_manifest' in config.json"
    )

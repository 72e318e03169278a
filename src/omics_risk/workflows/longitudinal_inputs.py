"""Longitudinal features as model inputs: ``task.longitudinal`` -> one table ``<modality>_dynamics`` per modality.

A serial quantity's course up to the prediction time (:mod:`omics_risk.features.longitudinal`: baseline, last value,
ratio, slope, nadir, response, clearance, progression, number of draws) is a model input like any other modality, so
the fused model and every per-modality baseline use it. The tables are derived at each patient's prediction day from
the per-sample store, so they exist only with a prediction time; no stored sample carries their values, and the
look-ahead guard (``check_no_look_ahead``) leaves them to :func:`longitudinal_table`, which reads no later draw.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.data.multimodal import MultimodalData
from omics_risk.data.timing import sample_features
from omics_risk.features.longitudinal import LongitudinalSpec, longitudinal_table

__all__ = ["DYNAMICS_SUFFIX", "LongitudinalInput", "add_longitudinal", "dynamics_name", "longitudinal_inputs",
           "serial_measurements"]

#: The model input of a modality's longitudinal features is named ``<modality>_dynamics``.
DYNAMICS_SUFFIX = "_dynamics"
_KEY = "task.longitudinal"
_SPEC_FIELDS = tuple(f.name for f in fields(LongitudinalSpec) if f.name != "name")
_EXAMPLE = "{ctdna: [{feature: ctdna_mean_vaf, detection_limit: 0.001}]}"


def dynamics_name(modality: str) -> str:
    """The model input holding ``modality``'s longitudinal features."""
    return f"{modality}{DYNAMICS_SUFFIX}"


@dataclass(frozen=True)
class LongitudinalInput:
    """One quantity of ``task.longitudinal``: the column ``feature`` of ``<modality>.samples.parquet``, read as
    ``spec`` (whose ``name`` prefixes the feature columns); ``key`` says where it was configured, for messages."""

    modality: str
    feature: str
    spec: LongitudinalSpec
    key: str


def longitudinal_inputs(node: Mapping[str, Any] | None) -> list[LongitudinalInput]:
    """Parse ``task.longitudinal``: a mapping modality -> list of quantities, each a mapping ``{feature: <column of
    <modality>.samples.parquet>, name: <optional, default the feature>, detection_limit: ..., response_fraction:
    ..., progression_factor: ..., baseline_window: [lo, hi], min_draws_for_slope: ..., slope_per_days: ...}`` (the
    :class:`~omics_risk.features.longitudinal.LongitudinalSpec` fields) or a ``LongitudinalSpec`` (its name is the
    feature). None or empty: none. OmegaConf nodes are accepted as they are."""
    if node is None:
        return []
    if not isinstance(node, Mapping):
        raise ValueError(f"{_KEY} must be null or a mapping modality -> list of quantities, e.g. {_EXAMPLE}; "
                         f"got {node!r}")
    out: list[LongitudinalInput] = []
    for modality, items in node.items():
        if isinstance(items, Mapping | LongitudinalSpec):
            items = [items]
        if isinstance(items, str | bytes) or not isinstance(items, Sequence) or not items:
            raise ValueError(f"{_KEY}.{modality} must be a non-empty list of quantities, e.g. {_EXAMPLE}")
        names: set[str] = set()
        for i, item in enumerate(items):
            q = _quantity(str(modality), item, f"{_KEY}.{modality}[{i}]")
            if q.spec.name in names:
                raise ValueError(f"{q.key}: a second quantity named {q.spec.name!r} for {modality}; give it another "
                                 "'name:' (its feature columns are <name>__<feature>)")
            names.add(q.spec.name)
            out.append(q)
    return out


def _quantity(modality: str, item: Any, key: str) -> LongitudinalInput:
    """One configured quantity, checked (the feature itself is checked against the store by add_longitudinal)."""
    if isinstance(item, LongitudinalSpec):
        return LongitudinalInput(modality, item.name, item, key)
    if not isinstance(item, Mapping):
        raise ValueError(f"{key} must be a mapping such as {{feature: ctdna_mean_vaf, detection_limit: 0.001}}; "
                         f"got {item!r}")
    allowed = ("feature", "name", *_SPEC_FIELDS)
    unknown = [str(k) for k in item if k not in allowed]
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {unknown} (allowed: {', '.join(allowed)})")
    feature = item.get("feature")
    if not isinstance(feature, str) or not feature:
        raise ValueError(f"{key}.feature must name a feature column of {modality}.samples.parquet, e.g. "
                         "ctdna_mean_vaf")
    kwargs: dict[str, Any] = {}
    for k in _SPEC_FIELDS:
        value = item.get(k)
        if value is None:
            continue
        try:
            if k == "baseline_window":
                lo, hi = (_as_float(v) for v in value)
                kwargs[k] = (lo, hi)
            else:
                kwargs[k] = int(value) if k == "min_draws_for_slope" else _as_float(value)
        except (TypeError, ValueError) as exc:
            shape = "[lo, hi] days" if k == "baseline_window" else "a number"
            raise ValueError(f"{key}.{k} must be {shape}; got {value!r}") from exc
    try:
        spec = LongitudinalSpec(str(item.get("name") or feature), **kwargs)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from exc
    return LongitudinalInput(modality, feature, spec, key)


def _as_float(value: Any) -> float:
    """A number of the config (YAML may give '1e-3' as text; '-inf' is allowed for a window's open end)."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    out = float(value)
    if math.isnan(out):
        raise ValueError("NaN is not a number here")
    return out


def add_longitudinal(data: MultimodalData, store: str | Path,
                     quantities: Sequence[LongitudinalInput]) -> MultimodalData:
    """Add one model input ``<modality>_dynamics`` per modality of ``quantities``: the longitudinal features of its
    quantities at each patient's prediction day (:func:`~omics_risk.features.longitudinal.longitudinal_table` over
    ``<modality>.samples.parquet``), present where the patient has a draw at or before it, of format ``table`` (the
    tabular preprocessing). In place; returns ``data``. Works on any data set with a prediction day (e.g. each
    landmark's of :func:`~omics_risk.data.multimodal.load_landmarks`)."""
    if not quantities:
        return data
    if data.prediction_day is None:
        raise ValueError(f"{_KEY} needs a prediction time (task.prediction_time): these data have none")
    store = Path(store)
    pday = pd.Series(np.asarray(data.prediction_day, dtype=float), index=data.patients.astype(str))
    by_modality: dict[str, list[LongitudinalInput]] = {}
    for q in quantities:
        by_modality.setdefault(q.modality, []).append(q)
    for modality, qs in by_modality.items():
        name = dynamics_name(modality)
        if name in data.modalities or (store / f"{name}.parquet").is_file():
            raise ValueError(f"{_KEY}.{modality}: its features would be model input '{name}', but a modality of "
                             f"that name is already in the data (feature store {store}); rename that modality")
        table = longitudinal_table(_serial_long(store, modality, qs), pday, [q.spec for q in qs])
        table = table.reindex(pday.index).set_axis(data.patients, axis=0)
        data.modalities[name] = table
        counts = table[[f"{q.spec.name}__n_draws" for q in qs]]
        data.present[name] = (counts > 0).any(axis=1).to_numpy()
        data.formats[name] = "table"
    return data


def _serial_long(store: Path, modality: str, quantities: Sequence[LongitudinalInput]) -> pd.DataFrame:
    """One modality's quantities as a long table: ``patient_id``, ``day`` and one column per quantity (its name)."""
    samples = _samples_table(store, modality)
    _check_features(samples, quantities)
    return pd.DataFrame({"patient_id": samples["patient_id"].astype(str).to_numpy(),
                         "day": samples["day"].to_numpy(dtype=float),
                         **{q.spec.name: samples[q.feature].to_numpy(dtype=float) for q in quantities}})


def serial_measurements(store: str | Path, quantities: Sequence[LongitudinalInput]) -> pd.DataFrame:
    """Every configured quantity of every modality in one long table (``patient_id``, ``day``, one column per
    quantity; a row per sample, NaN in the other modalities' columns): the input of the time-varying Cox model."""
    store = Path(store)
    by_modality: dict[str, list[LongitudinalInput]] = {}
    for q in quantities:
        by_modality.setdefault(q.modality, []).append(q)
    return pd.concat([_serial_long(store, m, qs) for m, qs in by_modality.items()], ignore_index=True)


def _samples_table(store: Path, modality: str) -> pd.DataFrame:
    """The per-sample table of a configured modality; an error listing what the store holds."""
    path = store / f"{modality}.samples.parquet"
    if not path.is_file():
        have = sorted(p.name.removesuffix(".samples.parquet") for p in store.glob("*.samples.parquet"))
        raise ValueError(f"{_KEY} names modality '{modality}', but the feature store {store} has no per-sample table "
                         f"{path.name} (modalities with one: {', '.join(have) or 'none'}); name one of those, or "
                         "re-run `omics-risk extract` for a store written before prediction times existed")
    return pd.read_parquet(path)


def _check_features(samples: pd.DataFrame, quantities: Sequence[LongitudinalInput]) -> None:
    """Each configured feature is a numeric column of the per-sample table; an error suggesting the close names."""
    have = [str(c) for c in sample_features(samples)]
    for q in quantities:
        if q.feature in have:
            if not pd.api.types.is_numeric_dtype(samples[q.feature]):
                raise ValueError(f"{q.key}.feature {q.feature!r} is not numeric in {q.modality}.samples.parquet: a "
                                 "longitudinal quantity must be a number per sample")
            continue
        prefixed = f"{q.modality}_{q.feature}"  # extractors prefix their features with the modality
        close = ([prefixed] if prefixed in have else [c for c in have if c.endswith(f"_{q.feature}")]
                 or difflib.get_close_matches(q.feature, have, n=5))
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"{q.key}.feature {q.feature!r} is not a feature of {q.modality}.samples.parquet{hint} "
                         f"(it has {len(have)}: {', '.join(have[:30])}{' ...' if len(have) > 30 else ''})")

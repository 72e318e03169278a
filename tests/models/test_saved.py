"""models/saved.py: the one plain-JSON helper of saved models and summaries."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from omegaconf import OmegaConf

from omics_risk.evaluation.bootstrap import Estimate
from omics_risk.models.saved import plain


@dataclass
class _Point:
    x: float
    tags: tuple[str, ...]


def test_plain_gives_json_values_and_null_for_non_finite_only_when_asked() -> None:
    value = {"cfg": OmegaConf.create({"a": [1, 2]}), 3: np.float32(0.5), "p": _Point(np.nan, ("u",)),
             "n": [np.int64(4), np.bool_(True), float("inf")]}
    out = plain(value)
    assert out["cfg"] == {"a": [1, 2]} and out["3"] == 0.5 and out["n"][:2] == [4, True]
    assert np.isnan(out["p"]["x"]) and out["p"]["tags"] == ["u"] and out["n"][2] == float("inf")
    strict = plain(value, finite=True)
    assert strict["p"]["x"] is None and strict["n"][2] is None
    json.dumps(strict, allow_nan=False)  # valid JSON, no NaN token


def test_a_custom_form_applies_at_every_depth() -> None:
    def estimate(v):  # type: ignore[no-untyped-def]
        return {"value": v.value, "ci_low": v.low} if isinstance(v, Estimate) else v

    out = plain({"c": [Estimate(0.7, np.nan, 0.8, 10)]}, finite=True, custom=estimate)
    assert out == {"c": [{"value": 0.7, "ci_low": None}]}

"""Plain JSON for saved models: the helpers every model that saves without pickle shares (the fused network, the super
learner, the landmark super-model), the scoring settings saved beside them and the summaries of ``omics-risk monitor``
and ``surveil``, in a module that imports no model code."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["plain", "read_config"]


def plain(value: Any, *, finite: bool = False, custom: Callable[[Any], Any] | None = None) -> Any:
    """OmegaConf containers, dataclasses, tuples and numpy scalars as plain JSON-able Python values.

    ``finite``: NaN and infinite floats become None (JSON has no NaN; a summary a person or another tool reads says
    null). ``custom``: applied to every value first, for a type with its own JSON form (it returns the value unchanged
    when it does not apply)."""
    if custom is not None:
        value = custom(value)
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v, finite=finite, custom=custom) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, finite=finite, custom=custom) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if finite and isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_config(directory: str | Path, fmt: str, version: int, what: str) -> dict[str, Any]:
    """A saved model's ``config.json``, checked to be of format ``fmt`` and a version this code reads."""
    cfg_file = Path(directory) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"no config.json in {directory}: not a saved {what}")
    config = json.loads(cfg_file.read_text())
    if config.get("format") != fmt or int(config.get("format_version", 0)) > version:
        raise ValueError(f"{cfg_file} is not a {fmt} model of format version <= {version}")
    return config

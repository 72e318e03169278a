"""Plain JSON for saved models: the helpers every model that saves without pickle shares (the fused network, the super
learner, the landmark super-model) and the scoring settings saved beside them, in a module that imports no model
code."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["plain", "read_config"]


def plain(value: Any) -> Any:
    """OmegaConf containers, dataclasses, tuples and numpy scalars as plain JSON-able Python values."""
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
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

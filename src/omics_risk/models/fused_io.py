"""Saving and loading a fitted :class:`~omics_risk.models.fused.FusedSurvivalModel` without pickle.

Layout of a saved model directory::

    <directory>/config.json          constructor settings, network spec (input dims), feature manifest, versions
    <directory>/fitted.json          Breslow baseline, discrete-time cuts, training medians, history
    <directory>/weights.pt           network state_dict (loaded with torch.load(weights_only=True))
    <directory>/preprocessing/<modality>.skops   fitted preprocessors (skops, trusted-types allow-list)

Apart from the model so that the network code does not carry the file format, and the format has one home.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import skops
import torch

from omics_risk import __version__
from omics_risk.models.multimodal import MultimodalSurvivalNet, build_network
from omics_risk.models.preprocessing import load_preprocessor, save_preprocessor
from omics_risk.models.saved import plain, read_config

__all__ = ["FORMAT", "FORMAT_VERSION", "load_fused", "save_fused"]

FORMAT = "omics-risk-fused"
FORMAT_VERSION = 1


def save_fused(model: Any, directory: str | Path) -> Path:
    """Write the fitted ``model`` (layout in the module docstring); returns the directory."""
    out = Path(directory)
    (out / "preprocessing").mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "settings": model.get_params(),
        "modalities": list(model.modalities_),
        "network": model.network_spec_,
        "feature_manifest": model.feature_manifest_,
        "image_shape": getattr(model, "image_shape_", None),
        "versions": {"omics_risk": __version__, "torch": torch.__version__,
                     "sklearn": sklearn.__version__, "skops": skops.__version__},
    }
    fitted = {
        "train_median_risk": model.train_median_risk_,
        "train_median_logit": getattr(model, "train_median_logit_", None),
        "risk_offset": getattr(model, "risk_offset_", None),
        "baseline_times": None if not hasattr(model, "baseline_times_") else model.baseline_times_.tolist(),
        "baseline_cumhaz": None if not hasattr(model, "baseline_cumhaz_") else model.baseline_cumhaz_.tolist(),
        "cuts": None if model.cuts_ is None else [float(c) for c in model.cuts_],
        "best_epoch": model.best_epoch_,
        "history": model.history_,
    }
    (out / "config.json").write_text(json.dumps(plain(config), indent=2))
    (out / "fitted.json").write_text(json.dumps(plain(fitted), indent=2))
    torch.save(model.network_.state_dict(), out / "weights.pt")
    for m, pp in model.preprocessors_.items():
        save_preprocessor(pp, out / "preprocessing" / f"{m}.skops")
    return out


def load_fused(cls: type, directory: str | Path) -> Any:
    """Rebuild a ``cls`` model written by :func:`save_fused` (JSON, ``weights_only`` torch, trusted skops)."""
    root = Path(directory)
    config = read_config(root, FORMAT, FORMAT_VERSION, "FusedSurvivalModel")
    fitted = json.loads((root / "fitted.json").read_text())
    settings = {k: v for k, v in config["settings"].items() if k in cls._setting_names()}
    model = cls(**settings)
    model.modalities_ = list(config["modalities"])
    model.network_spec_ = config["network"]
    model.feature_manifest_ = config["feature_manifest"]
    if config.get("image_shape"):
        model.image_shape_ = list(config["image_shape"])
    network: MultimodalSurvivalNet = build_network(model.network_spec_)
    state = torch.load(root / "weights.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    network.eval()
    model.network_ = network
    model.preprocessors_ = {}
    for m in model.modalities_:
        if model._is_image(m):
            continue
        pp = load_preprocessor(root / "preprocessing" / f"{m}.skops")
        if list(pp.features_out_) != list(model.feature_manifest_[m]["features_out"]):
            raise ValueError(f"preprocessing of '{m}' in {root} does not match its feature manifest")
        model.preprocessors_[m] = pp
    model.train_median_risk_ = float(fitted["train_median_risk"])
    if fitted.get("train_median_logit") is not None:
        model.train_median_logit_ = float(fitted["train_median_logit"])
    if fitted.get("risk_offset") is not None:
        model.risk_offset_ = float(fitted["risk_offset"])
        model.baseline_times_ = np.asarray(fitted["baseline_times"], dtype=np.float64)
        model.baseline_cumhaz_ = np.asarray(fitted["baseline_cumhaz"], dtype=np.float64)
    model.cuts_ = None if fitted.get("cuts") is None else np.asarray(fitted["cuts"], dtype=np.float64)
    model.best_epoch_ = int(fitted.get("best_epoch", -1))
    model.history_ = list(fitted.get("history", []))
    return model

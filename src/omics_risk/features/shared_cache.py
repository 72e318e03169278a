"""The feature cache of shared-file extractors (``table``, ``cn_segments``, ``variant_table``, metabolomics).

Per-sample extractors are cached per sample by :mod:`omics_risk.features.extract`. A shared file holds every
sample, so its extractor's whole result (features, side tables) is cached under one key: the extractor's settings
hash, the content hashes of its reference files and of the shared files, the modality's cohort.yaml options (a
column mapping changes what is read) and the samples.csv rows it extracts. A re-run with none of them changed
reads the result back instead of re-reading the file; anything changed is a new key.

Only a clean result is stored (no failed sample, no note, every side table written): a failure's reason names the
paths of its run and may come from the machine, so it is recomputed every time, as for per-sample extractors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from omics_risk.atomic import atomic_path, atomic_write_text

__all__ = ["SharedCacheEntry", "shared_cache_entry"]

#: The samples.csv columns a shared extractor may read; part of the key.
_SAMPLE_COLUMNS = ("sample_id", "patient_id", "timepoint", "day", "path")


class SharedCacheEntry:
    """One cached shared-extractor result: ``<key>.features.parquet`` and ``<key>.json`` (side tables as CSV text)."""

    def __init__(self, folder: Path, key: str):
        self.features_file = folder / f"shared-{key}.features.parquet"
        self.meta_file = folder / f"shared-{key}.json"

    def load(self) -> tuple[pd.DataFrame, dict[str, str]] | None:
        """(features indexed by sample_id, {side table name: its CSV text}), or None when absent or torn."""
        try:
            meta = json.loads(self.meta_file.read_text())
            features = pd.read_parquet(self.features_file)
        except Exception:  # absent, or torn (OSError, JSON or pyarrow's own error types): recompute
            return None
        if not isinstance(meta, dict) or not isinstance(meta.get("side_tables"), dict):
            return None
        return features, {str(k): str(v) for k, v in meta["side_tables"].items()}

    def save(self, features: pd.DataFrame, side_tables: Mapping[str, str]) -> None:
        """Store a clean result (the Parquet first, so a stored ``.json`` always has its features)."""
        self.features_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(self.features_file) as tmp:
                features.to_parquet(tmp)
        except Exception:  # a frame Parquet cannot hold (non-text column names): it is simply not cached
            return
        atomic_write_text(self.meta_file, json.dumps({"side_tables": dict(side_tables)}))


def shared_cache_entry(folder: Path, settings_hash: str, references: Mapping[str, str], inputs: Mapping[str, str],
                       options: Mapping[str, Any], samples: pd.DataFrame) -> SharedCacheEntry | None:
    """The cache entry of one shared extractor's run on ``samples``; None when an input could not be hashed."""
    if any(v in ("unreadable", "missing") for v in inputs.values()):
        return None
    rows = samples[[c for c in _SAMPLE_COLUMNS if c in samples.columns]].astype(str).to_numpy().tolist()
    blob = json.dumps([settings_hash, dict(references), sorted(inputs.items()), dict(options), rows], sort_keys=True,
                      default=str)
    return SharedCacheEntry(folder, hashlib.sha256(blob.encode()).hexdigest()[:24])

"""Find patient identifiers anywhere in an MLflow store: before sharing it, and in the tests that keep it clean.

:func:`audit_store` opens everything a reader of the store can see: experiment names and tags; every run's name,
params (keys and values), tags (keys and values) and metric names; every file of every run's artifacts and of every
logged model (MLflow 3 keeps models apart from runs); the registered models and their versions (names,
descriptions, tags, aliases). :func:`find_in_bytes` looks inside each file: its raw bytes, and what they wrap:
zip members (``.skops``, ``.pt``), gzip, Parquet values and metadata (read with pyarrow, since compressed pages hide
strings from a byte scan), PNG text chunks (``tEXt``, ``zTXt``, ``iTXt``) and the base64 images embedded in HTML
reports. Matching is case-insensitive on substrings, so ``ID0042`` is found inside ``ID0042_ct_preop``.

Stores written before artifacts were pseudonymised (:mod:`omics_risk.privacy`) hold raw ids in
``oof_risk.parquet``; this finds them. Text rendered into plot pixels cannot be found by any scan: no plot of
the package labels patients.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import io
import re
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pyarrow.parquet as pq
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from omics_risk.progress import mlflow_bars_off

__all__ = ["Finding", "audit_store", "find_in_bytes", "find_in_text"]

_DATA_URI = re.compile(rb"data:image/png;base64,([A-Za-z0-9+/=\s]+)")
_MAX_DEPTH = 3  # archives inside archives inside archives


@dataclass(frozen=True)
class Finding:
    """One identifier found at one place of the store; ``where`` is e.g.
    ``run 3f2a9c1d (fused) artifact oof_risk.parquet``."""

    where: str
    identifier: str


def _needles(identifiers: Iterable[Any], min_length: int) -> list[str]:
    ids = {str(i).strip().casefold() for i in identifiers if i is not None and str(i).strip()}
    short = sorted(i for i in ids if len(i) < min_length)
    if short:
        raise ValueError(f"{len(short)} identifier(s) are shorter than {min_length} characters (e.g. {short[0]!r}): "
                         "a substring scan would find them everywhere")
    return sorted(ids)


def find_in_text(text: str, identifiers: Sequence[str]) -> set[str]:
    """The ``identifiers`` (case-folded, as :func:`audit_store` prepares them) that occur in ``text``."""
    folded = text.casefold()
    return {i for i in identifiers if i in folded}


def _png_text(data: bytes) -> Iterator[bytes]:
    """The payloads of a PNG's text chunks (decompressed)."""
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        try:
            if kind == b"tEXt":
                yield body
            elif kind == b"zTXt":
                yield zlib.decompress(body.split(b"\0", 1)[1][1:])
            elif kind == b"iTXt":
                keyword, rest = body.split(b"\0", 1)
                compressed, text = rest[0], rest[2:].split(b"\0", 2)[-1]
                yield keyword + b"\0" + (zlib.decompress(text) if compressed else text)
        except (IndexError, zlib.error):
            yield body  # a malformed chunk is still scanned as it is


def _parquet_text(data: bytes) -> str:
    table = pq.read_table(io.BytesIO(data))
    meta = table.schema.metadata or {}
    parts = [" ".join(table.column_names), *(k.decode("utf-8", "replace") + v.decode("utf-8", "replace")
                                            for k, v in meta.items())]
    for column in table.columns:
        parts.append("\n".join("" if v is None else str(v) for v in column.to_pylist()))
    return "\n".join(parts)


def find_in_bytes(data: bytes, identifiers: Sequence[str], *, name: str = "", _depth: int = 0) -> set[str]:
    """The ``identifiers`` (case-folded) in a file's bytes or in anything it wraps (see the module docstring).

    A file that is not what its first bytes claim (a truncated zip, a broken Parquet file) is scanned as raw bytes.
    ``identifiers`` must be case-folded already (:func:`audit_store` does it).
    """
    found = find_in_text(data.decode("utf-8", "replace"), identifiers)
    if _depth >= _MAX_DEPTH:
        return found
    nested: list[tuple[str, bytes]] = []
    # a file that is not what its magic bytes say was still scanned as raw bytes above
    with contextlib.suppress(zipfile.BadZipFile, OSError, EOFError, ValueError, binascii.Error):
        if data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                found |= find_in_text("\n".join(z.namelist()), identifiers)
                nested += [(n, z.read(n)) for n in z.namelist()]
        elif data[:2] == b"\x1f\x8b":
            nested.append((name.removesuffix(".gz"), gzip.decompress(data)))
        elif data[:4] == b"PAR1":
            found |= find_in_text(_parquet_text(data), identifiers)
        elif data[:8] == b"\x89PNG\r\n\x1a\n":
            found |= find_in_text(b"\n".join(_png_text(data)).decode("utf-8", "replace"), identifiers)
        else:
            for m in _DATA_URI.finditer(data):
                nested.append(("embedded.png", base64.b64decode(re.sub(rb"\s+", b"", m.group(1)))))
    for inner_name, inner in nested:
        found |= find_in_bytes(inner, identifiers, name=inner_name, _depth=_depth + 1)
    return found


def _scan_folder(root: Path, label: str, ids: Sequence[str]) -> Iterator[Finding]:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        for hit in sorted(find_in_text(rel, ids) | find_in_bytes(path.read_bytes(), ids, name=path.name)):
            yield Finding(f"{label} artifact {rel}", hit)


def _scan_texts(texts: Iterable[tuple[str, Any]], label: str, ids: Sequence[str]) -> Iterator[Finding]:
    for what, text in texts:
        if text is None:
            continue
        for hit in sorted(find_in_text(str(text), ids)):
            yield Finding(f"{label} {what}", hit)


def audit_store(identifiers: Iterable[Any], *, tracking_uri: str | None = None,
                experiment_names: Sequence[str] | None = None, min_length: int = 4) -> list[Finding]:
    """Every place of the MLflow store at ``tracking_uri`` (default: the current one) where one of ``identifiers``
    (patient ids, sample ids) appears; empty when there is none.

    ``experiment_names`` limits the runs and logged models to those experiments (default: all, deleted ones
    included); registered models are always checked. Identifiers shorter than ``min_length`` are refused: a
    substring scan would find ``12`` in every number.
    """
    ids = _needles(identifiers, min_length)
    client = MlflowClient(tracking_uri)
    exps = client.search_experiments(view_type=ViewType.ALL)
    if experiment_names is not None:
        exps = [e for e in exps if e.name in set(experiment_names)]
    findings: list[Finding] = []
    with tempfile.TemporaryDirectory(prefix="omics_risk_audit_") as tmp, mlflow_bars_off():
        for exp in exps:
            label = f"experiment {exp.name!r}"
            findings += _scan_texts([("name", exp.name), *((f"tag {k}", f"{k}={v}") for k, v in exp.tags.items())],
                                    label, ids)
            runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=50_000)
            for run in runs:
                d = run.data
                label = f"run {run.info.run_id[:8]} ({run.info.run_name})"
                texts = [("run name", run.info.run_name), *((f"param {k}", f"{k}={v}") for k, v in d.params.items()),
                         *((f"tag {k}", f"{k}={v}") for k, v in d.tags.items()),
                         *((f"metric {k}", k) for k in d.metrics)]
                findings += _scan_texts(texts, label, ids)
                if client.list_artifacts(run.info.run_id):
                    dest = Path(tmp) / "runs" / run.info.run_id
                    dest.mkdir(parents=True)
                    client.download_artifacts(run.info.run_id, "", str(dest))
                    findings += _scan_folder(dest, label, ids)
            for model in _logged_models(client, exp.experiment_id):
                label = f"logged model {model.model_id} ({model.name})"
                texts = [("name", model.name), *((f"param {k}", f"{k}={v}") for k, v in (model.params or {}).items()),
                         *((f"tag {k}", f"{k}={v}") for k, v in (model.tags or {}).items())]
                findings += _scan_texts(texts, label, ids)
                dest = Path(tmp) / "models" / model.model_id
                mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, dst_path=str(dest),
                                                    tracking_uri=tracking_uri)
                findings += _scan_folder(dest, label, ids)
    for rm in client.search_registered_models(max_results=1000):
        label = f"registered model {rm.name!r}"
        texts = [("name", rm.name), ("description", rm.description),
                 *((f"tag {k}", f"{k}={v}") for k, v in (rm.tags or {}).items()),
                 *((f"alias {k}", k) for k in (rm.aliases or {}))]
        findings += _scan_texts(texts, label, ids)
        for mv in client.search_model_versions(f"name = '{rm.name}'"):
            texts = [("description", mv.description), ("source", mv.source),
                     *((f"tag {k}", f"{k}={v}") for k, v in (mv.tags or {}).items())]
            findings += _scan_texts(texts, f"{label} version {mv.version}", ids)
    return findings


def _logged_models(client: Any, experiment_id: str) -> list[Any]:
    """The logged models of an experiment, every page (MLflow 3; none on servers without them)."""
    out: list[Any] = []
    token = None
    while True:
        page = client.search_logged_models([experiment_id], max_results=100, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out

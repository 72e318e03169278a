"""The identifier audit of an MLflow store finds ids where a plain byte scan cannot (compressed Parquet pages, zip
members such as skops files, compressed PNG text, images embedded in HTML) and everywhere MLflow keeps text."""

from __future__ import annotations

import base64
import gzip
import io
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from omics_risk.tracking import mlflow_utils as mu
from omics_risk.tracking.audit import audit_store, find_in_bytes

IDS = ["po0001", "po0002"]  # case-folded, as audit_store passes them


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + b"".join(chunk(k, b) for k, b in [(b"IHDR", bytes(13)), *chunks, (b"IEND", b"")])


def test_find_in_bytes_opens_what_files_wrap() -> None:
    assert find_in_bytes(b"id,risk\nPO0001,0.5\n", IDS) == {"po0001"}
    assert find_in_bytes(b"sample PO0002_ct_preop", IDS) == {"po0002"}  # sample ids embed patient ids
    # Parquet: values are dictionary-encoded and compressed, so only reading them is reliable
    buf = io.BytesIO()
    pd.DataFrame({"patient_id": ["PO0001"] * 500, "x": range(500)}).to_parquet(buf, compression="gzip",
                                                                              write_statistics=False)
    assert b"PO0001" not in buf.getvalue() and find_in_bytes(buf.getvalue(), IDS) == {"po0001"}
    # zip members (skops files, torch .pt files are zips), deflated
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("schema.json", '{"index": ["PO0002"]}' * 50)
    assert b"PO0002" not in zbuf.getvalue() and find_in_bytes(zbuf.getvalue(), IDS) == {"po0002"}
    assert find_in_bytes(gzip.compress(b"PO0001" * 50), IDS) == {"po0001"}
    # PNG metadata: a compressed zTXt chunk; and the same PNG embedded in an HTML report
    png = _png([(b"zTXt", b"Title\x00\x00" + zlib.compress(b"KM curve of PO0001" * 20))])
    assert b"PO0001" not in png and find_in_bytes(png, IDS) == {"po0001"}
    html = b"<html><img src='data:image/png;base64," + base64.b64encode(png) + b"'></html>"
    assert find_in_bytes(html, IDS) == {"po0001"}
    # clean files, and files whose first bytes lie, are scanned without error
    assert find_in_bytes(b"PK\x03\x04 not a zip", IDS) == set()
    assert find_in_bytes(b"PAR1 not parquet", IDS) == set()
    assert find_in_bytes(b"p_72f44780247f2500,0.5", IDS) == set()


def test_audit_store_covers_names_tags_params_artifacts_and_the_registry(tmp_path: Path,
                                                                         mlflow_template_db: Path) -> None:
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mu.clear_protected_identifiers()  # the helpers' own guard would refuse most of what is planted below
    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    exp = client.create_experiment("audit", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=exp, run_name="clean") as clean:
        mlflow.log_param("n", 3)
        mlflow.log_text("nothing here", "notes/readme.txt")
    assert audit_store(["PO0001"], tracking_uri=uri) == []
    with mlflow.start_run(experiment_id=exp, run_name="debug-PO0001") as run:
        mlflow.log_param("exclude", "PO0002")
        mlflow.set_tag("note", "po0001 rescanned")  # case does not matter
        mlflow.log_metric("risk/PO0002", 1.0)
        buf = io.BytesIO()
        pd.DataFrame({"patient_id": ["PO0001"] * 50}).to_parquet(buf, compression="gzip", write_statistics=False)
        (tmp_path / "oof_risk.parquet").write_bytes(buf.getvalue())
        mlflow.log_artifact(str(tmp_path / "oof_risk.parquet"), "deep/er")
    client.create_registered_model("m", description="trained without PO0002")
    found = {(f.where, f.identifier) for f in audit_store(["PO0001", "PO0002"], tracking_uri=uri)}
    label = f"run {run.info.run_id[:8]} (debug-PO0001)"
    assert found == {(f"{label} run name", "po0001"), (f"{label} tag mlflow.runName", "po0001"),
                     (f"{label} param exclude", "po0002"),
                     (f"{label} tag note", "po0001"), (f"{label} metric risk/PO0002", "po0002"),
                     (f"{label} artifact deep/er/oof_risk.parquet", "po0001"),
                     ("registered model 'm' description", "po0002")}
    assert not any(clean.info.run_id[:8] in w for w, _ in found)
    assert audit_store(["PO0001"], tracking_uri=uri, experiment_names=["Default"]) == []
    with pytest.raises(ValueError, match="shorter than 4"):
        audit_store(["12"], tracking_uri=uri)

"""Keyed pseudonyms of patient ids (omics_risk.privacy): the HMAC against a reference computed here, the key file
(created once, 0600, never overwritten, found where the docs say), the raw-id opt-in and mapping pseudonyms back."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from omics_risk import privacy
from omics_risk.privacy import (
    ID_MODE_TAG,
    KEY_ENV,
    KEY_ID_TAG,
    Pseudonymiser,
    key_id,
    load_key,
    pseudonym,
    pseudonym_table,
    reidentify,
    resolve_key_file,
)

KEY = bytes(range(32))


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def test_pseudonym_is_the_truncated_hmac_sha256_of_the_id() -> None:
    expected = "p_" + hmac.new(KEY, b"PO0001", hashlib.sha256).hexdigest()[:16]
    assert pseudonym("PO0001", KEY) == expected
    assert expected == "p_72f44780247f2500"  # pinned: old runs' pseudonyms must stay valid across versions
    assert pseudonym("PO0002", KEY) != expected
    assert pseudonym("PO0001", bytes(32)) != expected  # another key, another pseudonym
    assert pseudonym("Patient-é", KEY) == "p_" + hmac.new(KEY, "Patient-é".encode(), hashlib.sha256).hexdigest()[:16]
    assert pseudonym(1042, KEY) == pseudonym("1042", KEY)  # ids are text


def test_key_file_is_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    path = tmp_path / "store" / ".omics-risk" / "pseudonym.key"
    key = load_key(path)
    assert len(key) == 32 and path.read_text().strip() == key.hex()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_key(path) == key  # stable: read, not re-created
    privacy._create_key(path)  # a second creator (another sweep job) never overwrites the first key
    assert load_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["pseudonym.key"]  # no temporary file left behind
    with pytest.raises(FileNotFoundError, match="no pseudonym key"):
        load_key(tmp_path / "missing.key", create=False)


def test_key_file_checks(tmp_path: Path) -> None:
    loose = tmp_path / "loose.key"
    loose.write_text(KEY.hex())
    loose.chmod(0o644)
    with pytest.warns(UserWarning, match="readable by other users"):
        assert load_key(loose) == KEY
    bad = tmp_path / "bad.key"
    bad.write_text("not hex")
    bad.chmod(0o600)
    with pytest.raises(ValueError, match="not a pseudonym key"):
        load_key(bad)
    short = tmp_path / "short.key"
    short.write_text("abcd")
    short.chmod(0o600)
    with pytest.raises(ValueError, match="at least 16"):
        load_key(short)


def test_key_location_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "store" / "mlflow.db"
    sqlite = f"sqlite:///{db}"
    assert resolve_key_file(sqlite, root=tmp_path / "project") == db.parent / ".omics-risk" / "pseudonym.key"
    server = "http://mlflow.example:5000"
    assert resolve_key_file(server, root=tmp_path / "project") == tmp_path / "project" / ".omics-risk" / \
        "pseudonym.key"
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "team.key"))
    assert resolve_key_file(sqlite, root=tmp_path) == tmp_path / "team.key"
    assert resolve_key_file(sqlite, key_file=tmp_path / "mine.key") == tmp_path / "mine.key"  # explicit wins


def test_pseudonymiser_modes_and_tags(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    p = Pseudonymiser.for_store(uri)
    assert p.key_file == tmp_path / ".omics-risk" / "pseudonym.key" and p.key_file.is_file()
    assert p(["PO0001", "PO0002"]) == [pseudonym("PO0001", p.key), pseudonym("PO0002", p.key)]
    assert Pseudonymiser.for_store(uri)(["PO0001"]) == p(["PO0001"])  # stable across runs of the project
    assert p.tags() == {ID_MODE_TAG: "pseudonymised", KEY_ID_TAG: key_id(p.key)}
    assert len(key_id(p.key)) == 12 and key_id(p.key) not in p.key.hex()
    raw = Pseudonymiser.for_store(f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}", raw=True)
    assert raw(["PO0001", 7]) == ["PO0001", "7"] and raw.tags() == {ID_MODE_TAG: "raw"}
    assert not (tmp_path / "other").exists()  # the opt-in reads and makes no key
    with pytest.raises(ValueError, match="needs a key"):
        Pseudonymiser(None)


def test_pseudonymiser_refuses_a_collision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(privacy, "pseudonym", lambda pid, key: "p_0000000000000000")
    with pytest.raises(ValueError, match="share a pseudonym"):
        Pseudonymiser(KEY)(["a", "b"])
    assert Pseudonymiser(KEY)(["a", "a"]) == ["p_0000000000000000"] * 2  # repeats of one patient are fine


def test_reidentify_maps_pseudonyms_back_with_the_key(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = ["PO0001", "PO0002", "PO0003"]
    p = Pseudonymiser.for_store(uri)
    logged = pd.DataFrame({"patient_id": p(["PO0003", "PO0001", "PO0003"]), "risk": [0.1, 0.2, 0.3]})
    back = reidentify(logged, ids, tracking_uri=uri)
    assert back["patient_id"].tolist() == ["PO0003", "PO0001", "PO0003"]
    assert back["risk"].tolist() == [0.1, 0.2, 0.3] and logged["patient_id"].iloc[0].startswith("p_")
    link = pseudonym_table(ids, key_file=p.key_file)
    assert link.set_index("patient_id")["pseudonym"].to_dict() == dict(zip(ids, p(ids), strict=True))
    with pytest.raises(ValueError, match="1 of 2 pseudonyms"):
        reidentify(logged, ["PO0001"], tracking_uri=uri)  # PO0003 is not in the given cohort
    other = tmp_path / "other.key"
    other.write_text(bytes(32).hex())
    os.chmod(other, 0o600)
    with pytest.raises(ValueError, match="another cohort or another key"):
        reidentify(logged, ids, key_file=other)
    with pytest.raises(FileNotFoundError, match="no pseudonym key"):
        reidentify(logged, ids, key_file=tmp_path / "nowhere.key")  # mapping back never invents a key
    assert not (tmp_path / "nowhere.key").exists()

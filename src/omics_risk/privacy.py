"""Keyed pseudonyms of patient identifiers for everything that is logged to MLflow.

MLflow artifacts travel further than the cohort does (a shared tracking server, a zipped ``mlartifacts/`` folder sent
to a collaborator), so per-patient tables logged there (out-of-fold risks, external-validation scores) carry a
**pseudonym** instead of the cohort's ``patient_id``::

    pseudonym = "p_" + HMAC-SHA256(key, patient_id)[:16 hex digits]

The key is a per-project secret (32 random bytes, hex) that never goes to MLflow. Without it the pseudonyms cannot be
linked to patients, not even by someone who knows the cohort's id scheme (``ID0001``, ``ID0002``, ...), which row
numbers or a plain hash would allow. With it, they are stable: every run of the project gives a patient the same
pseudonym, so ``evaluate.py mode=compare`` still pairs the patients of different runs, and a data manager holding
the key maps them back with :func:`reidentify`.

Where the key lives (:func:`resolve_key_file`, first match wins):

1. an explicit file (``tracking.pseudonym_key_file=...`` in the train/evaluate configs);
2. ``$OMICS_RISK_PSEUDONYM_KEY_FILE`` (a team sharing one tracking server shares one key this way);
3. ``<folder of the SQLite tracking database>/.omics-risk/pseudonym.key`` for a local ``sqlite:///`` store (by
   default the project root, where ``mlflow.db`` lives): beside the store, never inside the database or the
   artifact folder, so neither ``mlflow server`` nor a copy of the artifacts hands it out;
4. ``<project root>/.omics-risk/pseudonym.key`` for a server URI.

It is created on first use with permissions 0600 (folder 0700) and is git-ignored. Losing it loses the link
between old pseudonyms and patients (new runs get new pseudonyms); sharing it (or the ``.omics-risk`` folder) shares
the link. Raw ids can be kept on purpose (``tracking.raw_ids=true``, :meth:`Pseudonymiser.raw_ids`): the runs are
then tagged ``omics_risk.patient_ids=raw``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "ID_MODE_TAG",
    "KEY_DIR",
    "KEY_ENV",
    "KEY_FILE",
    "KEY_ID_TAG",
    "PREFIX",
    "Pseudonymiser",
    "key_id",
    "load_key",
    "pseudonym",
    "pseudonym_table",
    "reidentify",
    "resolve_key_file",
]

#: Environment variable naming the key file (overrides the default location, not an explicit ``key_file``).
KEY_ENV = "OMICS_RISK_PSEUDONYM_KEY_FILE"
KEY_DIR = ".omics-risk"
KEY_FILE = "pseudonym.key"
#: Every pseudonym starts with this, so a reader can tell a pseudonym from a cohort id at a glance.
PREFIX = "p_"
#: Hex digits of the HMAC kept: 64 bits, a collision among a million patients has probability ~3e-8 (checked anyway).
DIGITS = 16
KEY_BYTES = 32
#: Run tag saying what the ``patient_id`` column of the run's per-patient artifacts holds: ``pseudonymised`` / ``raw``.
ID_MODE_TAG = "omics_risk.patient_ids"
#: Run tag naming the key (a fingerprint that reveals nothing about it) the pseudonyms were made with.
KEY_ID_TAG = "omics_risk.pseudonym_key_id"
_FINGERPRINT_MESSAGE = b"omics-risk pseudonym key id"


def pseudonym(patient_id: Any, key: bytes) -> str:
    """``"p_"`` + the first 16 hex digits of HMAC-SHA256(``key``, the id's UTF-8 text)."""
    digest = hmac.new(key, str(patient_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:DIGITS]


def key_id(key: bytes) -> str:
    """A 12-hex-digit fingerprint of ``key`` (an HMAC of a fixed message): tells keys apart, reveals nothing."""
    return hmac.new(key, _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:12]


def _sqlite_dir(tracking_uri: str | None) -> Path | None:
    if not tracking_uri or not str(tracking_uri).startswith("sqlite:///"):
        return None
    return Path(str(tracking_uri)[len("sqlite:///"):]).expanduser().resolve().parent


def resolve_key_file(tracking_uri: str | None = None, *, root: str | Path | None = None,
                     key_file: str | Path | None = None) -> Path:
    """Where the project's key is (see the module docstring): ``key_file``, ``$OMICS_RISK_PSEUDONYM_KEY_FILE``,
    beside a SQLite ``tracking_uri``, else under ``root`` (default: the current directory)."""
    if key_file is not None and str(key_file).strip():
        return Path(key_file).expanduser().resolve()
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    base = _sqlite_dir(tracking_uri) or Path(root if root is not None else Path.cwd()).expanduser().resolve()
    return base / KEY_DIR / KEY_FILE


def _create_key(path: Path) -> None:
    """Write a fresh key to ``path`` atomically (0600), unless another process got there first."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(KEY_BYTES) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process made the key first: use theirs
            os.link(tmp, path)  # atomic and never overwrites, so concurrent sweep jobs end up with one key
    finally:
        tmp.unlink(missing_ok=True)


def load_key(path: str | Path, *, create: bool = True) -> bytes:
    """The key in ``path`` (hex text); created first when missing and ``create`` is set.

    A key file readable by other users is used with a warning (``chmod 600`` it).
    """
    path = Path(path)
    if not path.is_file():
        if not create:
            raise FileNotFoundError(f"no pseudonym key at {path}: the pseudonyms of this project were made with "
                                    f"another key file (set {KEY_ENV} or key_file= to it)")
        _create_key(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if os.name == "posix" and mode & 0o077:
        warnings.warn(f"pseudonym key {path} is readable by other users (mode {mode:o}): chmod 600 it", stacklevel=2)
    text = path.read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path} is not a pseudonym key (expected hex text)") from None
    if len(key) < 16:
        raise ValueError(f"{path} holds a key of {len(key)} bytes; at least 16 are needed")
    return key


@dataclass(frozen=True)
class Pseudonymiser:
    """What a per-patient MLflow artifact's ``patient_id`` column holds: keyed pseudonyms (default) or, when
    asked for, the raw ids. Call it on ids; ``tags()`` says which on the run.

    Build it with :meth:`for_store` (the project's key, created on first use) or :meth:`raw_ids` (the opt-in).
    """

    key: bytes | None = field(default=None, repr=False)
    raw: bool = False
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.raw and not self.key:
            raise ValueError("a Pseudonymiser needs a key (or raw=True to keep the raw ids)")

    @classmethod
    def for_store(cls, tracking_uri: str | None = None, *, root: str | Path | None = None,
                  key_file: str | Path | None = None, raw: bool = False) -> Pseudonymiser:
        """The pseudonymiser of the project whose runs go to ``tracking_uri`` (key: :func:`resolve_key_file`).
        ``raw=True`` keeps the raw ids and reads no key."""
        if raw:
            return cls.raw_ids()
        path = resolve_key_file(tracking_uri, root=root, key_file=key_file)
        return cls(load_key(path), key_file=path)

    @classmethod
    def raw_ids(cls) -> Pseudonymiser:
        """The opt-in: artifacts keep the cohort's ids (runs are tagged ``omics_risk.patient_ids=raw``)."""
        return cls(None, raw=True)

    @property
    def mode(self) -> str:
        return "raw" if self.raw else "pseudonymised"

    @property
    def key_id(self) -> str | None:
        return None if self.key is None else key_id(self.key)

    def __call__(self, patient_ids: Iterable[Any]) -> list[str]:
        """The value logged for each id, in order (the ids' text when raw)."""
        ids = [str(p) for p in patient_ids]
        if self.raw:
            return ids
        assert self.key is not None
        out = [pseudonym(p, self.key) for p in ids]
        if len(set(out)) != len(set(ids)):  # 64-bit digests: practically never, but a join must not merge patients
            raise ValueError("two patient ids share a pseudonym; use another key (delete the key file)")
        return out

    def tags(self) -> dict[str, str]:
        """Run tags: ``omics_risk.patient_ids`` (``pseudonymised`` / ``raw``) and the key's fingerprint."""
        tags = {ID_MODE_TAG: self.mode}
        if self.key is not None:
            tags[KEY_ID_TAG] = key_id(self.key)
        return tags


def pseudonym_table(patient_ids: Iterable[Any], *, tracking_uri: str | None = None, root: str | Path | None = None,
                    key_file: str | Path | None = None) -> pd.DataFrame:
    """``patient_id`` -> ``pseudonym`` for the given ids, with the project's existing key (never creates one): the
    link table a data manager keeps with the cohort, not with the runs."""
    path = resolve_key_file(tracking_uri, root=root, key_file=key_file)
    ids = [str(p) for p in patient_ids]
    p = Pseudonymiser(load_key(path, create=False), key_file=path)
    return pd.DataFrame({"patient_id": ids, "pseudonym": p(ids)})


def reidentify(table: pd.DataFrame, patient_ids: Iterable[Any], *, column: str = "patient_id",
               tracking_uri: str | None = None, root: str | Path | None = None,
               key_file: str | Path | None = None) -> pd.DataFrame:
    """A copy of a downloaded artifact ``table`` whose ``column`` of pseudonyms is replaced by the cohort's ids.

    ``patient_ids``: the cohort's ids (e.g. ``clinical.csv``'s ``patient_id``); the key is found as for the runs
    (:func:`resolve_key_file`). Raises when a pseudonym matches none of them (another cohort or another key).
    """
    link = pseudonym_table(patient_ids, tracking_uri=tracking_uri, root=root, key_file=key_file)
    back = dict(zip(link["pseudonym"], link["patient_id"], strict=True))
    values = table[column].astype(str)
    unknown = sorted(set(values) - set(back))
    if unknown:
        raise ValueError(f"{len(unknown)} of {values.nunique()} pseudonyms in '{column}' match none of the "
                         f"{len(back)} patient ids with this key (e.g. {unknown[0]}): another cohort or another key")
    out = table.copy()
    out[column] = values.map(back).to_numpy()
    return out

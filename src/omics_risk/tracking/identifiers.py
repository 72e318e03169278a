"""The patient-identifier guard: finds patient ids inside names and values (as whole tokens) so that no MLflow
name, tag or param can carry one. :mod:`omics_risk.tracking.mlflow_utils` checks everything it logs against the ids
registered here (:func:`protect_identifiers`)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from typing import Any

__all__ = ["IdentifierGuard", "IdentifierLeakError", "assert_no_identifiers", "check_identifiers",
           "clear_protected_identifiers", "protect_identifiers"]


class IdentifierLeakError(ValueError):
    """A name or tag about to be logged contains a patient identifier."""


class IdentifierGuard:
    """Finds patient identifiers inside names and values, as whole tokens.

    An id matches where it is not glued to further letters or digits: with id ``ID0042``, ``risk/ID0042``,
    ``ID0042_fold0`` and ``["ID0042"]`` match, ``ID00421`` does not. Matching is case-insensitive and costs a
    few set look-ups per character, independent of the number of patients.

    Purely numeric ids (``"1042"``) are only looked for in names, not in values (values are numbers all the
    time: seeds, epochs), and numeric ids shorter than ``min_digits`` cannot be told from fold or epoch numbers
    at all, so they are not guarded (with a warning): give such cohorts pseudonymous ids with a letter prefix.
    """

    def __init__(self, patient_ids: Iterable[Any], *, min_digits: int = 4):
        ids = {str(i).strip().casefold() for i in patient_ids if i is not None and str(i).strip()}
        short = {i for i in ids if i.isdigit() and len(i) < min_digits}
        if short:
            warnings.warn(
                f"{len(short)} patient id(s) are numbers shorter than {min_digits} digits (e.g. {sorted(short)[0]!r}); "
                "they cannot be told apart from fold or epoch numbers and are not guarded in MLflow names",
                stacklevel=2,
            )
        self.min_digits = min_digits
        self.ids = frozenset(ids - short)
        self._alpha = frozenset(i for i in self.ids if not i.isdigit())
        self._max_len = max((len(i) for i in self.ids), default=0)
        self._clean: set[tuple[str, bool]] = set()

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, text: str, *, value: bool = False) -> str | None:
        """The first patient id in ``text`` (case-folded), or None."""
        if not self.ids or not text or (text, value) in self._clean:
            return None
        ids = self._alpha if value else self.ids
        t = text.casefold()
        n = len(t)
        alnum = [c.isalnum() for c in t]
        cuts = [i for i in range(n + 1) if i in (0, n) or not (alnum[i - 1] and alnum[i])]
        for a, start in enumerate(cuts[:-1]):
            for end in cuts[a + 1 :]:
                if end - start > self._max_len:
                    break
                if t[start:end] in ids:
                    return t[start:end]
        if len(self._clean) > 100_000:  # a cache of checked names, not a log of every value ever seen
            self._clean.clear()
        self._clean.add((text, value))
        return None

    def check(self, names: Iterable[Any] = (), values: Iterable[Any] = (), *, what: str = "name") -> None:
        """Raise :class:`IdentifierLeakError` if any name or value holds a patient id (the id itself is masked)."""
        for texts, is_value in ((names, False), (values, True)):
            for text in texts:
                if text is None:
                    continue
                s = str(text)
                hit = self.find(s, value=is_value)
                if hit is not None:
                    masked = re.sub(re.escape(hit), "<patient-id>", s, flags=re.IGNORECASE)[:200]
                    kind = f"{what} value" if is_value else what
                    raise IdentifierLeakError(
                        f"refusing to log {kind} '{masked}': it contains a patient identifier. Log per-patient "
                        "results as a table artifact of the run, never in names, tags or params."
                    )


_GUARD = IdentifierGuard(())


def protect_identifiers(patient_ids: Iterable[Any]) -> IdentifierGuard:
    """Register patient ids (added to those already registered) that no helper of this module may ever log."""
    global _GUARD
    _GUARD = IdentifierGuard([*_GUARD.ids, *patient_ids], min_digits=_GUARD.min_digits)
    return _GUARD


def clear_protected_identifiers() -> None:
    """Forget the registered ids (tests; a process scoring several cohorts one after the other)."""
    global _GUARD
    _GUARD = IdentifierGuard(())


def assert_no_identifiers(names: Iterable[Any], patient_ids: Iterable[Any], *, values: Iterable[Any] = ()) -> None:
    """Raise :class:`IdentifierLeakError` if any of ``names`` (or ``values``) contains one of ``patient_ids``."""
    IdentifierGuard(patient_ids).check(names, values)


def check_identifiers(names: Iterable[Any] = (), values: Iterable[Any] = (), *, what: str = "name") -> None:
    """Check ``names`` / ``values`` against the registered ids (:func:`protect_identifiers`); raise on a hit."""
    _GUARD.check(names, values, what=what)

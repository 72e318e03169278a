"""Patient-level validation splits shared by every model of a run, so comparisons are paired.

Folds are stratified by outcome (event status, or the binary label) so each held-out fold has events; with
few events per fold, C-index and IPCW metrics become unstable (scikit-survival #117).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import RepeatedStratifiedKFold

__all__ = ["Fold", "repeated_stratified_folds"]


@dataclass(frozen=True)
class Fold:
    repeat: int
    fold: int
    train: np.ndarray  # positions
    test: np.ndarray

    @property
    def tag(self) -> str:
        return f"r{self.repeat}f{self.fold}"


def _strata(event: np.ndarray | None, time: np.ndarray | None, label: np.ndarray | None, n_splits: int) -> np.ndarray:
    """Event status crossed with early/late time when every stratum can still fill every fold; else event status;
    else (fewer censored patients or events than folds: a small risk set late in follow-up) early/late time, so
    that every fold still gets a share of the events."""
    if label is not None:
        return np.asarray(label).astype(int)
    assert event is not None and time is not None
    ev = np.asarray(event).astype(int)
    late = (np.asarray(time) > np.median(time)).astype(int)
    for strata in (ev * 2 + late, ev, late):
        counts = np.bincount(strata)
        if (counts[counts > 0] >= n_splits).all():
            return strata
    return ev


def repeated_stratified_folds(n_splits: int, n_repeats: int, seed: int, *, event: np.ndarray | None = None,
                              time: np.ndarray | None = None, label: np.ndarray | None = None) -> list[Fold]:
    """``n_repeats`` x ``n_splits`` patient-level folds, deterministic for ``seed``."""
    n = len(label) if label is not None else len(np.asarray(event))
    strata = _strata(event, time, label, n_splits)
    counts = np.bincount(strata)
    if counts[counts > 0].min() < n_splits:
        raise ValueError(f"too few patients in the smallest outcome group ({counts[counts > 0].min()}) for "
                         f"{n_splits}-fold cross-validation; lower training.cv.folds")
    rskf = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    folds = []
    for i, (tr, te) in enumerate(rskf.split(np.zeros(n), strata)):
        folds.append(Fold(i // n_splits, i % n_splits, np.sort(tr), np.sort(te)))
    return folds

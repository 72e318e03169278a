"""Outer cross-validation folds (omics_risk.evaluation.splits): stratified so that every held-out fold has events,
including the small, event-heavy risk sets of a late prediction time."""

from __future__ import annotations

import numpy as np
import pytest

from omics_risk.evaluation.splits import _strata, repeated_stratified_folds


def test_event_by_time_strata_when_every_stratum_fills_every_fold() -> None:
    event = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0])
    time = np.array([1, 2, 30, 40, 3, 4, 50, 60, 5, 70, 6, 80])
    assert list(_strata(event, time, None, 2)) == list(event * 2 + (time > np.median(time)))


def test_event_strata_when_a_time_stratum_is_too_small() -> None:
    event = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    time = np.array([1, 2, 3, 8, 4, 5, 6, 7])  # one late event: a stratum of 1 cannot fill 3 folds
    np.testing.assert_array_equal(_strata(event, time, None, 3), event)


def test_all_events_fall_back_to_time_halves_and_every_fold_gets_events() -> None:
    # A late landmark's risk set: 1 censored patient, 21 events (the event strata cannot fill 2 folds).
    rng = np.random.default_rng(0)
    event = np.ones(22, dtype=int)
    event[5] = 0
    time = rng.exponential(100, 22)
    folds = repeated_stratified_folds(2, 2, 0, event=event, time=time)
    assert len(folds) == 4
    late = time > np.median(time)
    for f in folds:
        assert event[f.test].sum() >= 10
        assert late[f.test].sum() in (5, 6)  # stratified on early/late time


def test_too_small_for_the_folds_says_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"lower training\.cv\.folds"):
        repeated_stratified_folds(5, 1, 0, event=np.array([1, 0, 1, 0]), time=np.array([1.0, 2, 3, 4]))

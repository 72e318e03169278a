"""Inner cross-validation folds of the tabular baselines (omics_risk.models.tabular.inner_splits)."""

from __future__ import annotations

import numpy as np
import pytest

from omics_risk.models.base import InsufficientTrainingData
from omics_risk.models.tabular import inner_splits


def test_stratified_when_both_classes_fill_the_folds() -> None:
    strata = np.array([1] * 9 + [0] * 6)
    splits = inner_splits(strata, 3, 0)
    assert len(splits) == 3
    assert all(strata[va].sum() == 3 for _, va in splits)  # 9 events, 3 per fold


def test_rare_class_shrinks_the_number_of_folds() -> None:
    assert len(inner_splits(np.array([1] * 10 + [0] * 2), 5, 0)) == 2


def test_survival_with_one_censored_patient_gets_unstratified_folds_with_events() -> None:
    # A late prediction time's training fold: 13 events, 1 censored (the SCLC c3d1 risk set of a tiny cohort).
    strata = np.array([1] * 13 + [0])
    splits = inner_splits(strata, 3, 0, survival=True)
    assert len(splits) == 3
    covered = np.sort(np.concatenate([va for _, va in splits]))
    np.testing.assert_array_equal(covered, np.arange(14))  # every patient validated once
    assert all(strata[va].sum() >= 1 and len(va) >= 2 for _, va in splits)


@pytest.mark.parametrize(("strata", "survival"), [
    (np.array([1] * 13 + [0]), False),  # a binary label with one non-responder: no AUC in an inner fold
    (np.array([0] * 13 + [1]), True),  # one event: no inner C-index at all
    (np.array([1] * 3), True),  # too few patients
])
def test_no_inner_cross_validation_possible_is_insufficient_training_data(strata: np.ndarray,
                                                                          survival: bool) -> None:
    with pytest.raises(InsufficientTrainingData, match=r"this training fold has \["):
        inner_splits(strata, 3, 0, survival=survival)

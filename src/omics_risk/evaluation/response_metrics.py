"""Metrics of a binary response endpoint (scikit-learn); patients without a label are skipped."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, brier_score_loss, roc_auc_score

__all__ = ["balanced_accuracy", "response_auc", "response_brier"]


def _labelled(label: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    label, prob = np.asarray(label, float), np.asarray(prob, float)
    ok = np.isfinite(label) & np.isfinite(prob)
    return label[ok].astype(int), prob[ok]


def response_auc(label: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of a response probability (higher = more likely to respond)."""
    label = np.asarray(label)
    if len(np.unique(label[~np.isnan(label)])) < 2:
        return float("nan")
    ok = ~np.isnan(label)
    return float(roc_auc_score(label[ok], np.asarray(score)[ok]))


def response_brier(label: np.ndarray, prob: np.ndarray) -> float:
    """Brier score of a response probability (sklearn ``brier_score_loss``); patients without a label are skipped."""
    label, prob = _labelled(label, prob)
    return float(brier_score_loss(label, prob)) if len(label) else float("nan")


def balanced_accuracy(label: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> float:
    """Balanced accuracy of ``prob >= threshold`` (sklearn); NaN unless both classes are present."""
    label, prob = _labelled(label, prob)
    if len(np.unique(label)) < 2:
        return float("nan")
    return float(balanced_accuracy_score(label, (prob >= threshold).astype(int)))

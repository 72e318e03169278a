"""MLflow's caution about pickling ``python_model`` is replaced, while logging a model, by one line saying what it
means for an omics-risk model (README: the scorer never unpickles the wrapper)."""

from __future__ import annotations

import logging

import mlflow.pyfunc  # noqa: F401 - creates MLflow's logger as it is when models are logged

from omics_risk.scoring.pyfunc import _pickled_wrapper_explained

NOTICE = ("Passing a Python object as `python_model` causes it to be serialized using CloudPickle, it requires "
          "exercising caution as Python object serialization mechanisms may execute arbitrary code during "
          "deserialization.Consider using a file path (str or Path) instead.")


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_cloudpickle_notice_is_explained_in_one_line() -> None:
    mlflow_log, ours = logging.getLogger("mlflow.pyfunc"), logging.getLogger("omics_risk.scoring.pyfunc")
    seen_mlflow, seen_ours = _Kept(), _Kept()
    mlflow_log.addHandler(seen_mlflow)
    ours.addHandler(seen_ours)
    level = ours.level
    ours.setLevel(logging.INFO)
    try:
        with _pickled_wrapper_explained():
            mlflow_log.warning(NOTICE)
            mlflow_log.warning("another MLflow warning")
        mlflow_log.warning(NOTICE)  # outside log_model: MLflow's own words again
    finally:
        mlflow_log.removeHandler(seen_mlflow)
        ours.removeHandler(seen_ours)
        ours.setLevel(level)
    assert [r.getMessage() for r in seen_mlflow.records] == ["another MLflow warning", NOTICE]
    [explained] = [r.getMessage() for r in seen_ours.records]
    assert "python_model.pkl (CloudPickle)" in explained and "never unpickles" in explained
    assert "\n" not in explained

"""``task.prediction_times``: several prediction times in one run, each its own complete run, summarised side by
side (omics_risk.workflows.prediction_times). The runs themselves are stubbed here; the end-to-end run on a tiny
SCLC cohort is tests/workflows/test_train_e2e.py::test_sclc_response_reports_response_auc_with_ci."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import DictConfig, OmegaConf

from omics_risk.data.timing import PredictionTime
from omics_risk.workflows.prediction_times import prediction_times_of, run_prediction_times, slug


def _cfg(tmp_path: Path, times: object) -> DictConfig:
    cfg = OmegaConf.create({
        "run_name": "sclc-response", "paths": {"output_dir": str(tmp_path / "run")},
        "tracking": {"registered_model_name": "omics-risk-sclc_response"},
        "task": {"name": "sclc_response", "endpoint": "pfs", "response": "response",
                 "prediction_time": {"at": "index", "day": None, "timepoint": None, "landmarks": None,
                                     "windows": None},
                 "prediction_times": times},
    })
    OmegaConf.set_struct(cfg, True)
    return cfg


def test_slugs_name_each_kind_of_prediction_time() -> None:
    assert slug(PredictionTime()) == "index"
    assert slug(PredictionTime(at="day", day=90.0)) == "day90"
    assert slug(PredictionTime(at="day", day=-14.0)) == "daym14"
    assert slug(PredictionTime(at="timepoint", timepoint="c3 d1")) == "c3_d1"


@pytest.mark.parametrize(("times", "message"), [
    ([], "non-empty list"),
    ({"at": "index"}, "non-empty list"),
    ([{"at": "index"}, {"at": "day", "day": 0}, {"at": "index"}], "listed twice"),
    ([{"at": "landmarks", "landmarks": [0, 90]}], r"prediction_times\[0\]: landmarks"),
    ([{"at": "index"}, {"at": "timepoint"}], r"prediction_times\[1\]: .*timepoint label"),
])
def test_bad_lists_are_refused_naming_the_entry(tmp_path: Path, times: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prediction_times_of(_cfg(tmp_path, times))


def test_unset_means_one_run(tmp_path: Path) -> None:
    assert prediction_times_of(_cfg(tmp_path, None)) is None


def test_each_prediction_time_is_its_own_run_then_one_summary(tmp_path: Path) -> None:
    seen: list[dict] = []

    def fake_train(sub: DictConfig) -> dict[str, float]:
        """Stands in for train(): records its config, writes what train() writes, returns its metrics."""
        seen.append(OmegaConf.to_container(sub, resolve=True))
        out = Path(sub.paths.output_dir)
        out.mkdir(parents=True)
        late = sub.task.prediction_time.at == "timepoint"
        metrics = {"fused/cindex": 0.7 if late else 0.6, "fused/cindex_ci_low": 0.5, "fused/cindex_ci_high": 0.8,
                   "fused/response_auc": 0.9 if late else 0.55, "fused/response_auc_ci_low": 0.4,
                   "fused/response_auc_ci_high": 0.95, "fused/response_n": 20 if late else 30,
                   "clinical_cox/cindex": 0.58, "clinical_cox/cindex_ci_low": 0.5, "clinical_cox/cindex_ci_high": 0.7}
        summary = {"n_patients": 25 if late else 40, "n_events": 20, "metrics": metrics,
                   "table": [{"model": "fused"}, {"model": "clinical_cox"}],
                   "prediction_time": {"describe": "x", "n_at_risk": 25 if late else 40, "n_left_out": 15 if late
                                       else 0, "n_without_timepoint": 0},
                   "response": {"endpoint": "response", "n_labelled": 20 if late else 30, "n_responders": 9},
                   **({"models_left_out": {"coxnet_ct": "training fold r0f1 (12 patients): too few"}} if late else {})}
        (out / "summary.json").write_text(json.dumps(summary))
        return metrics

    cfg = _cfg(tmp_path, [{"at": "index"}, {"at": "timepoint", "timepoint": "c3d1"}])
    metrics = run_prediction_times(cfg, fake_train)
    # Each run: its own prediction time (every key, so it parses), folder, run name and registered model.
    assert [s["task"]["prediction_time"]["at"] for s in seen] == ["index", "timepoint"]
    assert seen[1]["task"]["prediction_time"]["timepoint"] == "c3d1"
    assert all(s["task"]["prediction_times"] is None for s in seen)
    assert [s["paths"]["output_dir"] for s in seen] == [str(tmp_path / "run" / "index"), str(tmp_path / "run" / "c3d1")]
    assert [s["run_name"] for s in seen] == ["sclc-response@index", "sclc-response@c3d1"]
    assert seen[1]["tracking"]["registered_model_name"] == "omics-risk-sclc_response-c3d1"
    # Metrics: the first prediction time's unprefixed (optimized_metric), every one's under <slug>/.
    assert metrics["fused/response_auc"] == 0.55
    assert metrics["c3d1/fused/response_auc"] == 0.9 and metrics["index/fused/response_auc"] == 0.55
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    late = summary["prediction_times"][1]
    assert late["slug"] == "c3d1" and late["n_patients"] == 25 and late["response"]["n_labelled"] == 20
    assert late["models"]["fused"] == {"cindex": 0.7, "cindex_ci_low": 0.5, "cindex_ci_high": 0.8,
                                       "response_auc": 0.9, "response_auc_ci_low": 0.4,
                                       "response_auc_ci_high": 0.95, "response_n": 20}
    assert "response_auc" not in late["models"]["clinical_cox"]
    assert late["models_left_out"] == {"coxnet_ct": "training fold r0f1 (12 patients): too few"}
    table = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert list(table["prediction_time"]) == ["index", "index", "c3d1", "c3d1"]
    assert table.set_index(["prediction_time", "model"]).loc[("c3d1", "fused"), "cindex"] == 0.7

"""docs/architecture.md, "Adding a metric": the worked example's code runs, and the metric it registers is computed
by evaluate_survival and shows up, under its one name, in every output that reads the list of metric definitions
(run report tables and its MLflow metric names, the comparison table and the metrics the comparison logs)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omics_risk.data.multimodal import MultimodalData
from omics_risk.evaluation import metric_defs
from omics_risk.evaluation.compare import ModelRun, compare_runs, display_table
from omics_risk.evaluation.metric_defs import describe_metric, headline_metrics
from omics_risk.evaluation.metrics import evaluate_survival, harrell_c
from omics_risk.evaluation.run_report import build_run_report
from omics_risk.evaluation.tables import flat_metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
N_BOOT = 20


def _section_code() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Adding a metric", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "the 'Adding a metric' section has no python code block"
    return "\n".join(blocks)


@pytest.fixture
def doc_metric() -> Iterator[dict]:
    """Run the section's code; the global list of metrics is restored afterwards."""
    before = list(metric_defs.METRICS)
    namespace: dict = {"__name__": "docs_add_metric"}
    try:
        exec(compile(_section_code(), str(DOC), "exec"), namespace)  # the documented example, run as written
        yield namespace
    finally:
        metric_defs.METRICS[:] = before


def _cohort(n: int = 120, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = 1000 * (-np.log(rng.uniform(size=n)) / np.exp(x)) ** (1 / 1.5)
    c = rng.uniform(0, 2500, n)
    return np.minimum(t, c), t <= c, x + rng.normal(0, 0.5, n), rng.normal(size=n)


def test_the_documented_metric_is_computed_and_shown_under_one_name(doc_metric: dict, tmp_path: Path) -> None:
    time, event, risk, noise = _cohort()
    want = doc_metric["harrell_c_truncated"](time, event, risk, horizon=730.5)
    late = time > 730.5
    assert want == pytest.approx(harrell_c(np.minimum(time, 730.5), event & ~late, risk))
    assert "harrell_c_2y" in metric_defs.metric_names("survival") and "harrell_c_2y" in headline_metrics()
    assert describe_metric("harrell_c_2y").startswith("Harrell's C-index with follow-up truncated at 2 years")

    est = evaluate_survival(time, event, risk, n_boot=N_BOOT, seed=0)
    assert est["harrell_c_2y"].value == pytest.approx(want) and est["harrell_c_2y"].n_boot > 0
    assert list(est)[-1] == "harrell_c_2y"  # after the metrics listed before it

    # the run report: metrics.csv with the description, report.html, and the MLflow names it would log
    patients = pd.Index([f"DM{i:04d}" for i in range(len(time))])
    data = MultimodalData(patients=patients, clinical=pd.DataFrame({"age": np.zeros(len(time))}, index=patients),
                          modalities={}, present=pd.DataFrame({"clinical": True}, index=patients),
                          time=time, event=event.astype(float), endpoint="rfs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = build_run_report({"fused": risk, "clinical_cox": noise}, data, output_dir=tmp_path / "eval",
                               n_boot=N_BOOT, seed=0)
    table = pd.read_csv(rep.paths["metrics"]).set_index(["model", "metric"])
    assert table.loc[("fused", "harrell_c_2y"), "estimate"] == pytest.approx(want)
    assert table.loc[("fused", "harrell_c_2y"), "description"] == describe_metric("harrell_c_2y")
    assert "harrell_c_2y" in rep.paths["report"].read_text(encoding="utf-8")
    logged = flat_metrics({"": rep.metrics["fused"]})  # what the fused model's run gets
    assert logged["harrell_c_2y"] == pytest.approx(want)
    assert [k for k in logged if "2y" in k] == ["harrell_c_2y", "harrell_c_2y_ci_low", "harrell_c_2y_ci_high"]

    # the comparison: a column of the table (with CI) and among the metrics it logs
    rows = []
    for i, (name, score) in enumerate((("fused", risk), ("clinical_cox", noise))):
        oof = pd.DataFrame({"patient_id": patients.astype(str), "repeat": 0, "fold": np.arange(len(time)) % 5,
                            "time": time, "event": event.astype(int), "risk": score})
        rows.append(ModelRun(run_id=f"r{i}", model=name, job_run_id="job", job_name="job", start_time=0,
                             metrics={}, oof=oof, label=name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comp, _ = compare_runs(rows, reference="clinical_cox", n_boot=N_BOOT, seed=0)
    assert {"harrell_c_2y", "harrell_c_2y_ci_low", "harrell_c_2y_ci_high"} <= set(comp.columns)
    assert "harrell_c_2y" in display_table(comp).columns


def test_the_list_is_restored_after_the_example() -> None:
    assert "harrell_c_2y" not in metric_defs.metric_names()

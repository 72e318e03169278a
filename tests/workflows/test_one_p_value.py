"""One statistics engine for every output: a tracked tiny training run with two CV repeats reports the same p for
the fused model against the reference in summary.csv, report.html, the forest plot's data, the model card and
``evaluate.py mode=compare`` (same bootstrap size and seed, same patients -> the same resamples -> the same p), and
says that both repeats were pooled."""

from __future__ import annotations

import html as html_text
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from omics_risk.data.synthetic import generate_cohort
from omics_risk.evaluation import run_report
from omics_risk.evaluation.compare import compare_experiment
from omics_risk.evaluation.tables import format_p
from omics_risk.tracking.mlflow_utils import clear_protected_identifiers
from omics_risk.workflows.training import train

ROOT = Path(__file__).resolve().parents[2]
N_BOOT, BOOT_SEED = 40, 3
REF = "clinical_cox"


def _cell_row(html: str, model: str) -> str:
    """The text of the first table row of ``report.html`` whose first cell is ``model`` (tags dropped)."""
    for row in re.findall(r"<tr>(.*?)</tr>", html, flags=re.S):
        cells = [html_text.unescape(re.sub(r"<[^>]+>", "", c)).strip()
                 for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
        if cells and cells[0] == model:
            return " | ".join(cells)
    raise AssertionError(f"no row for {model} in report.html")


@pytest.mark.slow
def test_one_p_value_in_every_output(tmp_path: Path, mlflow_template_db: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cohort = generate_cohort("nsclc-postop", n=40, seed=5, out=tmp_path / "cohort", fragments_per_sample=300,
                             n_metabolites=20, ct_shape=(24, 24, 16), workers=1, progress=False)
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    forest: list[pd.DataFrame] = []  # what the run report's forest plot is drawn from
    plot = run_report.plot_model_comparison

    def recording_plot(table: pd.DataFrame, **kw: Any):
        forest.append(table.copy())
        return plot(table, **kw)

    monkeypatch.setattr(run_report, "plot_model_comparison", recording_plot)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}", "tracking=mlflow",
            f"tracking.uri={uri}", "tracking.experiment=one-p", "tracking.log_folds=false", "training.progress=false",
            "extract.workers=1", "data=cohort", f"data.root={cohort}", "debug=fast", "model.estimator.epochs=2",
            "data.modalities=[ctdna,metabolomics]", f"baselines.settings.include=[{REF},coxnet_metabolomics]",
            "training.cv.repeats=2", "training.final_model=true",
            "task.prediction_time=null", f"evaluation.bootstrap={N_BOOT}", f"evaluation.seed={BOOT_SEED}",
            # the network alone, named fused: on 40 patients the super learner is its clinical backbone, the
            # reference itself (p 1 both ways), and this test needs a comparison with a difference to report
            "model=fused_network", "model.name=fused"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg)
        clear_protected_identifiers()
        cmp = compare_experiment("one-p", output_dir=tmp_path / "cmp", reference=REF, n_boot=N_BOOT, seed=BOOT_SEED,
                                 tracking_uri=uri, log_to_mlflow=False)
    clear_protected_identifiers()
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert "report_error" not in summary and "model_card_error" not in summary
    stats = summary["statistics"]
    assert (stats["bootstrap"], stats["seed"], stats["repeats_pooled"]) == (N_BOOT, BOOT_SEED, 2)

    table = pd.read_csv(run / "summary.csv", float_precision="round_trip").set_index("model")
    drawn = forest[-1].set_index("model")  # the run report's forest plot, drawn from comparison.csv's frame
    saved = pd.read_csv(run / "evaluation" / "comparison.csv", float_precision="round_trip").set_index("model")
    page = (run / "evaluation" / "report.html").read_text(encoding="utf-8")
    assert "2 CV repeats" in page
    got = cmp.table.set_index("model")  # evaluate.py mode=compare on the logged out-of-fold predictions
    models = [m for m in table.index if m != REF]
    assert models == ["fused", "coxnet_metabolomics"]
    p_of: dict[str, tuple[float, float]] = {}
    for m in models:
        p, p_t = float(table.loc[m, "p"]), float(table.loc[m, "p_corrected_t"])
        p_of[m] = p, p_t
        assert 0 <= p <= 1 and 0 < p_t <= 1 and p != p_t, m
        assert p == table.loc[m, "p_bootstrap"] == summary["metrics"][f"{m}/delta_vs_{REF}_p"], m
        assert p_t == summary["metrics"][f"{m}/p_vs_{REF}_corrected_t"], m
        # the forest plot and comparison.csv: the same numbers, not recomputed with other settings
        assert drawn.loc[m, "p_value"] == p and drawn.loc[m, "p_corrected_t"] == p_t, m
        assert drawn.loc[m, "repeats_pooled"] == 2
        assert drawn.loc[m, "harrell_c"] == pytest.approx(table.loc[m, "cindex_pooled"], abs=1e-12)
        assert drawn.loc[m, "delta_c"] == pytest.approx(table.loc[m, f"delta_vs_{REF}"], abs=1e-12)
        assert saved.loc[m, "p_value"] == pytest.approx(p, abs=1e-12)
        # report.html: the headline row shows that p, and the corrected t p beside it
        cells = _cell_row(page, m).split(" | ")
        assert cells[3:5] == [format_p(p), format_p(p_t)], cells
        # evaluate.py mode=compare: the same p, exactly (same resamples of the same patients)
        assert got.loc[m, "p_value"] == p and got.loc[m, "p_corrected_t"] == pytest.approx(p_t, abs=1e-12), m
        assert got.loc[m, "harrell_c"] == pytest.approx(table.loc[m, "cindex_pooled"], abs=1e-12)
        assert got.loc[m, "delta_c"] == pytest.approx(table.loc[m, f"delta_vs_{REF}"], abs=1e-12)
        assert got.loc[m, "repeats_pooled"] == 2
    assert np.isnan(got.loc[REF, "p_value"])

    # the model card of the registered version (the fused model)
    p, p_t = p_of["fused"]
    card = Path(summary["model_card"]).read_text(encoding="utf-8")
    boot_line = next(line for line in card.splitlines() if "p vs clinical\\_cox (paired bootstrap)" in line)
    t_line = next(line for line in card.splitlines() if "p vs clinical\\_cox (corrected resampled t)" in line)
    assert f"| {format_p(p)} |" in boot_line and f"| {format_p(p_t)} |" in t_line

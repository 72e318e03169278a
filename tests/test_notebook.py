"""notebooks/walkthrough.ipynb is shipped with its outputs, and they come from its current code: every code cell ran,
in order, without error, and the hash of the code cells that notebooks/run_walkthrough.py (``make notebook``) stamped
when it executed them matches the code cells now. The slow test runs it end to end (synthesise, train, compare,
validate externally, score) in a kernel that uses this interpreter: a temporary kernelspec pointing at
``sys.executable`` is put first on ``JUPYTER_PATH``, so an ``ipykernel`` installed for another Python can never be
picked up."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"
KERNEL = "omics-risk-test"
MAX_BYTES = 1_500_000


def _runner():
    """notebooks/run_walkthrough.py, which executes the notebook and stamps the hash of its code."""
    spec = importlib.util.spec_from_file_location("run_walkthrough", ROOT / "notebooks" / "run_walkthrough.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kernelspec(base: Path) -> Path:
    spec = base / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "omics-risk (test)", "language": "python"}))
    return base


def test_notebook_is_shipped_with_outputs_of_its_current_code() -> None:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        "run the notebook top to bottom in one kernel: make notebook"
    assert all(c.outputs for c in code), "every code cell shows its result"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors[0].get("ename") if errors else ""
    stamp = nb.metadata.get("omics_risk", {}).get("code_sha256")
    assert stamp == _runner().code_sha256(nb), "the stored outputs are from older code: re-run make notebook"
    images = sum(1 for c in code for o in c.outputs if "image/png" in o.get("data", {}))
    assert images == 4
    assert NOTEBOOK.stat().st_size < MAX_BYTES
    text = "\n".join(c.source for c in nb.cells)
    for step in ("synth", "train(cfg)", "compare_experiment", "validate_external", "load_scoring_model"):
        assert step in text, step
    # its runs go to the project's MLflow store, as train.py resolves it, under a model name of its own
    assert "TRACKING_URI = tracking_uri(None, REPO)" in text and 'MODEL_NAME = "omics-risk-rfs-walkthrough"' in text
    outputs = "\n".join(o.get("text", "") for c in code for o in c.outputs)
    assert "External validation of omics-risk-rfs-walkthrough v" in outputs and "70 patients scored" in outputs
    assert "mlflow ui --backend-store-uri sqlite:///" in outputs


@pytest.mark.slow
def test_walkthrough_notebook_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_client.kernelspec import KernelSpecManager

    monkeypatch.setenv("JUPYTER_PATH", str(_kernelspec(tmp_path / "jupyter")))
    assert KernelSpecManager().get_kernel_spec(KERNEL).argv[0] == sys.executable
    work = tmp_path / "work"
    monkeypatch.setenv("OMICS_RISK_NOTEBOOK_DIR", str(work))
    store = tmp_path / "project" / "mlflow.db"  # stands for the project's store (never the repository's in a test)
    store.parent.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=900,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()

    def text(cell) -> str:
        return "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/plain", ""))
                       for o in cell.outputs)

    outputs = "\n".join(text(c) for c in nb.cells if c.cell_type == "code")
    assert str(work) in outputs and sys.executable in outputs
    assert "Held-out metrics" in outputs  # train()'s table
    assert "Model comparison in experiment 'walkthrough' against clinical_cox" in outputs
    assert "External validation of omics-risk-rfs-walkthrough v1 (@challenger)" in outputs
    assert "70 patients scored" in outputs
    images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images == 4
    for f in ("compare/report.html", "external/report.html", "external/summary.json", "train_run/summary.json"):
        assert (work / f).is_file(), f
    assert f"runs in experiment 'walkthrough' of sqlite:///{store}" in outputs
    import mlflow  # lazy: heavy, and only this slow test needs it

    tracking = mlflow.tracking.MlflowClient(f"sqlite:///{store}")
    runs = tracking.search_runs([tracking.get_experiment_by_name("walkthrough").experiment_id])
    assert {r.data.tags.get("omics_risk.level") for r in runs} >= {"job", "model"}
    summary = json.loads((work / "external" / "summary.json").read_text())
    # the 61 of the 70 patients at risk at their 'postop1' sample (rfs predicts from there: docs/time.md)
    assert summary["n_patients"] == 61 and summary["cutoff_source"] == "model"
    assert 0.0 <= summary["metrics"]["harrell_c"]["value"] <= 1.0

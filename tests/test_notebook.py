"""notebooks/walkthrough.ipynb runs end to end (synthesise, train, compare, validate externally, score) in a kernel
that uses this interpreter: a temporary kernelspec pointing at ``sys.executable`` is put first on ``JUPYTER_PATH``,
so an ``ipykernel`` installed for another Python can never be picked up."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"
KERNEL = "omics-risk-test"


def _kernelspec(base: Path) -> Path:
    spec = base / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "omics-risk (test)", "language": "python"}))
    return base


def test_notebook_is_clean_and_uses_the_python3_kernel() -> None:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit the notebook without outputs"
    text = "\n".join(c.source for c in nb.cells)
    for step in ("synth", "train(cfg)", "compare_experiment", "validate_external", "load_scoring_model"):
        assert step in text, step


@pytest.mark.slow
def test_walkthrough_notebook_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_client.kernelspec import KernelSpecManager

    monkeypatch.setenv("JUPYTER_PATH", str(_kernelspec(tmp_path / "jupyter")))
    assert KernelSpecManager().get_kernel_spec(KERNEL).argv[0] == sys.executable
    work = tmp_path / "work"
    monkeypatch.setenv("OMICS_RISK_NOTEBOOK_DIR", str(work))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
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
    assert "External validation of omics-risk-rfs v1 (@challenger)" in outputs
    assert "70 patients scored" in outputs
    images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images == 4
    for f in ("compare/report.html", "external/report.html", "external/summary.json", "train_run/summary.json"):
        assert (work / f).is_file(), f
    summary = json.loads((work / "external" / "summary.json").read_text())
    assert summary["n_patients"] == 70 and summary["cutoff_source"] == "model"
    assert 0.0 <= summary["metrics"]["harrell_c"]["value"] <= 1.0

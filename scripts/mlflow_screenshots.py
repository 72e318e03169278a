"""Screenshots of the MLflow UI as a statistician first sees it, taken in a real (headless) browser.

    python scripts/mlflow_screenshots.py [--out docs/images] [--work /tmp/omics_risk_screens] [--port 5077]

1. writes a tiny synthetic cohort (80 patients) and runs a small tracked training run on it
   (``python train.py data=cohort debug=fast ...``, a few minutes on a laptop CPU) into its own SQLite store;
2. starts ``mlflow ui`` on that store;
3. opens, with headless Chromium (Debian's ``chromium`` package: ``apt-get install -y chromium``), the experiment's
   runs table with the headline view (:func:`omics_risk.tracking.ui_view.experiment_url`), the experiment's runs
   table as MLflow opens it without that view, the experiment at its plain address (a fresh browser profile), the
   fused model's run, and the job run's ``comparison.html``;
4. saves ``mlflow_runs_table.png``, ``mlflow_runs_table_default.png``, ``mlflow_experiment_plain_url.png``,
   ``mlflow_model_run.png`` and ``mlflow_comparison.png`` under ``--out`` (docs/images, referenced from
   docs/evaluation.md).

``--reuse`` skips steps 1-2 when the work folder already has a finished run. Nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mlflow.tracking import MlflowClient  # noqa: E402  (after the src path)

from omics_risk.tracking.ui_view import experiment_url  # noqa: E402

EXPERIMENT = "omics-risk-screenshots"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    sys.exit("no Chromium found: install Debian's package (apt-get install -y chromium) and run again")


def _train(work: Path, uri: str) -> None:
    """A tiny cohort and one tracked training run of the fused model and the fast baselines."""
    from omics_risk.data.synthetic import generate_cohort  # lazy: only when a new run is needed

    cohort = work / "cohort"
    if not (cohort / "cohort.yaml").is_file():
        generate_cohort("nsclc-postop", n=80, seed=7, out=cohort, fragments_per_sample=300, n_metabolites=20,
                        ct_shape=(24, 24, 16), workers=1, progress=False, overwrite=True)
    cmd = [sys.executable, str(ROOT / "train.py"), "data=cohort", f"data.root={cohort}", "debug=fast",
           "baselines=fast", "training.cv.folds=3", "model.estimator.epochs=3", "task.prediction_time=null",
           f"tracking.uri={uri}", f"tracking.experiment={EXPERIMENT}", f"paths.root_dir={work}",
           f"paths.output_dir={work / 'run'}", "run_name=screenshot-demo", "training.progress=false"]
    print("training:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def _serve(uri: str, port: int, log: Path) -> subprocess.Popen:
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow_bin), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=log.open("w"), stderr=subprocess.STDOUT)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            time.sleep(1)
    proc.terminate()
    sys.exit(f"mlflow ui did not start on port {port}; see {log}")


def _shot(browser: str, url: str, png: Path, size: str = "1900,1000", wait_ms: int = 20000) -> None:
    """One headless screenshot after ``wait_ms`` of virtual time (the UI loads its runs asynchronously)."""
    profile = png.parent / f".profile-{png.stem}"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={size}",
           f"--virtual-time-budget={wait_ms}", f"--user-data-dir={profile}", f"--screenshot={png}", url]
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    shutil.rmtree(profile, ignore_errors=True)
    print("wrote", png, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    ap.add_argument("--work", type=Path, default=Path("/tmp/omics_risk_screens"))
    ap.add_argument("--port", type=int, default=5077)
    ap.add_argument("--reuse", action="store_true", help="reuse the tracked run of an earlier call")
    args = ap.parse_args()
    browser = _browser()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{args.work.resolve() / 'mlflow.db'}"
    client = MlflowClient(uri)
    if not (args.reuse and client.get_experiment_by_name(EXPERIMENT)):
        _train(args.work, uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    job = client.search_runs([exp.experiment_id], "tags.`omics_risk.level` = 'job'", max_results=1,
                             order_by=["attributes.start_time DESC"])[0]
    fused = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{job.info.run_id}' and "
                               "tags.model = 'fused'", max_results=1)[0]
    proc = _serve(uri, args.port, args.work / "mlflow_ui.log")
    base = f"http://127.0.0.1:{args.port}"
    try:
        _shot(browser, experiment_url(exp.experiment_id, base), args.out / "mlflow_runs_table.png")
        _shot(browser, experiment_url(exp.experiment_id, base, view=False), args.out / "mlflow_runs_table_default.png")
        # the chart view of the same shared view: one chart per metric name, one bar per model run
        _shot(browser, experiment_url(exp.experiment_id, base) + "&compareRunsMode=CHART",
              args.out / "mlflow_charts.png", size="1900,1200")
        _shot(browser, f"{base}/#/experiments/{exp.experiment_id}", args.out / "mlflow_experiment_plain_url.png")
        _shot(browser, experiment_url(exp.experiment_id, base, run_id=fused.info.run_id),
              args.out / "mlflow_model_run.png", size="1900,1400")
        _shot(browser, experiment_url(exp.experiment_id, base, run_id=job.info.run_id, tabs=("artifacts",))
              .replace("/artifacts?", "/artifacts/evaluation/comparison.html?"), args.out / "mlflow_comparison.png",
              size="1900,1000")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()

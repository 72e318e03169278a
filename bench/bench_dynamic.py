"""Dynamic prediction on a cohort: the landmark super-model vs the baseline-only model per landmark, and shuffled runs.

    PYTHONPATH=src python bench/bench_dynamic.py /tmp/adv300 --landmarks 0 90 180 270 --window 365 --shuffles 3

Runs ``train.py``'s pipeline (``task.prediction_time={at: landmarks, ...}``, tracking off, extraction cached) once on
the real outcomes and ``--shuffles`` times with ``task.shuffle_outcome=true`` (seeds 0, 1, ...), and prints one
markdown table: per landmark, patients at risk, events in the window, C and AUC of each model with 95% CIs (with
``task.longitudinal=...`` among the overrides, the time-varying Cox model too), the paired C difference of each model
from ``baseline_only``, and the mean C of each model over the shuffled runs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from omics_risk.evaluation.tables import format_p
from omics_risk.workflows import training as pipeline
from omics_risk.workflows.dynamic import LANDMARK, STATIC

ROOT = Path(__file__).resolve().parents[1]


def run(root: Path, out: Path, landmarks: list[float], window: float, overrides: list[str]) -> dict:
    marks = ", ".join(f"{s:g}" for s in landmarks)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.root_dir={out}", f"paths.output_dir={out / 'run'}", "tracking=none", "training.progress=false",
            "data=cohort", f"data.root={root}", f"task.prediction_time={{at: landmarks, landmarks: [{marks}]}}",
            f"task.horizon_window={window:g}", "training.final_model=false", *overrides])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline.train(cfg)
    return json.loads((out / "run" / "summary.json").read_text())["dynamic"]


def _ci(row: dict, key: str) -> str:
    return f"{row[key]:.3f} ({row[key + '_ci_low']:.3f}-{row[key + '_ci_high']:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cohort", type=Path)
    ap.add_argument("--landmarks", type=float, nargs="+", default=[0.0, 90.0, 180.0, 270.0])
    ap.add_argument("--window", type=float, default=365.0)
    ap.add_argument("--shuffles", type=int, default=3)
    ap.add_argument("overrides", nargs="*", help="more Hydra overrides (e.g. task=pfs training.cv.folds=5)")
    args = ap.parse_intermixed_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        real = run(args.cohort, Path(tmp) / "real", args.landmarks, args.window, args.overrides)
        seconds = time.perf_counter() - t0
        null = [run(args.cohort, Path(tmp) / f"null{i}", args.landmarks, args.window,
                    [*args.overrides, "task.shuffle_outcome=true", f"seed={i}"]) for i in range(args.shuffles)]
    print(f"\n{args.cohort}: landmarks {args.landmarks}, window {args.window:g} days, {args.overrides}; "
          f"real run {seconds:.0f} s\n")
    models = list(real["per_landmark"])  # landmark_cox, baseline_only and, with task.longitudinal, time_varying_cox
    vs = {c["a"]: c["per_landmark"] for c in real.get("comparisons", [real["comparison"]])}
    head = ["landmark", "at risk", "events", *(f"C {m}" for m in models), *(f"AUC {m}" for m in models),
            *(f"delta C {a} - {STATIC} (p)" for a in vs), *(f"shuffled C {m}" for m in models)]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for i, first in enumerate(real["per_landmark"][LANDMARK]):
        rows = {m: real["per_landmark"][m][i] for m in models}
        shuffled = {m: np.mean([n["per_landmark"][m][i]["harrell_c"] for n in null]) if null else np.nan
                    for m in models}
        cells = [f"{first['landmark']:g}", str(first["n_at_risk"]), str(first["n_events"]),
                 *(_ci(rows[m], "harrell_c") for m in models), *(_ci(rows[m], "auc") for m in models),
                 *(f"{_ci(c[i], 'c_difference')} (p {format_p(c[i]['p_value'])})" for c in vs.values()),
                 *(f"{shuffled[m]:.3f}" for m in models)]
        print("| " + " | ".join(cells) + " |")
    for m in models:
        per_run = [np.nanmean([r["harrell_c"] for r in n["per_landmark"][m]]) for n in null]
        if per_run:
            print(f"\nshuffled {m}: mean C over landmarks and {len(null)} shuffles {np.mean(per_run):.3f} "
                  f"(per shuffle {', '.join(f'{v:.3f}' for v in per_run)}; per landmark "
                  + "/".join(f"{np.mean([n['per_landmark'][m][k]['harrell_c'] for n in null]):.3f}"
                             for k in range(len(real["per_landmark"][m]))) + ")")


if __name__ == "__main__":
    main()

"""SCLC first-line response predicted before and on treatment (issue 16, item 5), each against the truth's ceiling.

    PYTHONPATH=src .venv/bin/python bench/bench_sclc_times.py                 # sclc, n=300, seed 7
    PYTHONPATH=src .venv/bin/python bench/bench_sclc_times.py --cohort DIR --out bench/results/sclc_times.json

Generates a synthetic SCLC cohort (``omics-risk synth --kind sclc``, once, under ``--work``) and runs ``train.py``'s
pipeline in-process with ``experiment=sclc_response`` (``task.prediction_times``: the index date, i.e. before
treatment, and the c3d1 draw, on treatment; tracking off, no final model; every ``--override`` appended). Then, for
each prediction time, on the patients that run was asked about (at risk at that time, with a response label):

- each model's cross-validated response AUC with its 95% CI, from the run's summary.json;
- the **ceiling at that prediction time**: the AUC of the truth's best linear predictor of the true response logit
  from the noise-free quantities measurable by then (``view_pre_treatment``: clinical, baseline CT and baseline
  plasma tumour fraction; ``view_on_treatment``: those plus the c3d1 CT and tumour fraction; truth/patients.csv);
- the oracle: the AUC of the true response probability (the whole latent biology, noise-free).

A model above its prediction time's ceiling by more than the noise of cross-validation would be using information from
after that time. Prints one markdown table for BENCHMARKS.md; ``--out`` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cohorts import synthetic_cohort  # bench/cohorts.py
from hydra import compose, initialize_config_dir
from sklearn.metrics import roc_auc_score

from omics_risk.data.multimodal import load_multimodal
from omics_risk.data.timing import PredictionTime
from omics_risk.workflows import training as pipeline

ROOT = Path(__file__).resolve().parents[1]
VIEWS = {"index": "view_pre_treatment", "c3d1": "view_on_treatment"}


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cohort", type=Path, help="an existing synthetic sclc cohort (default: generate one)")
    p.add_argument("--n", type=int, default=300, help="patients (default 300)")
    p.add_argument("--seed", type=int, default=7, help="synthetic cohort seed (default 7)")
    p.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "sclc_times",
                   help="cohort and run (default bench/results/sclc_times)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Hydra override for the run (repeatable), e.g. debug=fast")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    return p.parse_args(argv)


def cohort_dir(args: argparse.Namespace) -> Path:
    if args.cohort is not None:
        return args.cohort.resolve()
    root = (args.work / f"sclc_n{args.n}_seed{args.seed}").resolve()
    return synthetic_cohort(root, "sclc", args.n, args.seed)  # regenerated when left by an older generator


def run(root: Path, out: Path, overrides: list[str]) -> dict[str, Any]:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.root_dir={out}", f"paths.output_dir={out / 'run'}", "tracking=none", "training.progress=false",
            "experiment=sclc_response", f"data.root={root}", "training.final_model=false", *overrides])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline.train(cfg)
    return json.loads((out / "run" / "summary.json").read_text())


def _auc(label: pd.Series, score: pd.Series) -> float:
    ok = label.notna() & score.notna()
    return float(roc_auc_score(label[ok].astype(int), score[ok]))


def ceilings(root: Path, entry: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The truth's ceiling and oracle on the patients one prediction time's run was asked about."""
    data = load_multimodal(root, root / "features", endpoint="pfs", response="response",
                           prediction_time=PredictionTime.from_config(node))
    truth = pd.read_csv(root / "truth" / "patients.csv").set_index("patient_id").loc[list(data.patients)]
    label = pd.Series(data.extra_labels["response"], index=truth.index)
    return {"n_at_risk": len(data), "n_labelled": int(label.notna().sum()),
            "ceiling": _auc(label, truth[VIEWS[entry["slug"]]]),
            "oracle": _auc(label, truth["true_response_probability"])}


def _ci(vals: dict[str, Any], key: str) -> str:
    if key not in vals:
        return "-"
    return f"{vals[key]:.3f} [{vals[f'{key}_ci_low']:.3f}, {vals[f'{key}_ci_high']:.3f}]"


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| prediction time | patients at risk (with a response label) | model | response AUC [95% CI] | "
           "PFS C-index [95% CI] | ceiling at this time | oracle |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        for model, vals in r["models"].items():
            if "response_auc" not in vals:
                continue
            out.append(f"| {r['slug']}: {r['describe']} | {r['n_at_risk']} ({r['n_labelled']}) | {model} | "
                       f"{_ci(vals, 'response_auc')} | {_ci(vals, 'cindex')} | {r['ceiling']:.3f} | "
                       f"{r['oracle']:.3f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    root = cohort_dir(args)
    t0 = time.perf_counter()
    summary = run(root, args.work.resolve() / f"run_{root.name}", args.override)
    seconds = time.perf_counter() - t0
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        nodes = compose("train", overrides=["experiment=sclc_response", *args.override]).task.prediction_times
    rows = []
    for entry, node in zip(summary["prediction_times"], nodes, strict=True):
        limits = ceilings(root, entry, dict(node))
        assert limits["n_at_risk"] == entry["n_patients"], (limits, entry["n_patients"])
        rows.append({"slug": entry["slug"], "describe": entry["prediction_time"]["describe"], **limits,
                     "models": entry["models"], "models_left_out": entry.get("models_left_out", {})})
    table = markdown(rows)
    print(table)
    for r in rows:
        for model, why in r["models_left_out"].items():
            print(f"- @{r['slug']}: {model} left out: {why}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "cohort": str(root), "overrides": args.override, "seconds": round(seconds, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), python {platform.python_version()}",
            "rows": rows, "markdown": table}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())

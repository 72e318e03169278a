"""Acceptance numbers of the modelling issue, each produced by a real training run through ``train(cfg)``.

    .venv/bin/python bench/bench_training.py tcga            # real TCGA LUSC, PFI: every model vs stage-only 0.620
    .venv/bin/python bench/bench_training.py shuffled        # demo cohort with outcomes shuffled: every C ~ 0.50
    .venv/bin/python bench/bench_training.py external        # train on 300, validate on 1,000 (another seed)

Each part writes ``bench/results/training_<part>.json`` (git-ignored) and prints a markdown table for BENCHMARKS.md.
Tracking is switched off so benchmark runs do not clutter the MLflow store.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from omics_risk.cli import main as cli  # noqa: E402
from omics_risk.training.pipeline import train  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def _train(overrides: list[str], out: Path) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={ROOT}", f"paths.output_dir={out}",
                                          "tracking=none", "training.final_model=false", "training.progress=false",
                                          *overrides])
    t0 = time.perf_counter()
    metrics = train(cfg)
    summary = json.loads((out / "summary.json").read_text())
    summary["seconds"] = time.perf_counter() - t0
    summary["metrics"] = metrics
    return summary


def _print(summary: dict, title: str, extra: str = "") -> None:
    table = pd.DataFrame(summary["table"])
    cols = [c for c in ("model", "cindex", "ci_low", "ci_high", "external_cindex", "fit_seconds") if c in table]
    print(f"\n### {title}\n{extra}\n")
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for row in table[cols].itertuples(index=False):
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")


def tcga() -> None:
    cohort = RESULTS / "tcga_lusc"
    if not (cohort / "cohort.yaml").is_file():
        cli(["convert", "tcga-lusc", "--src", str(ROOT.parent / "shared" / "data" / "tcga_lusc"), "--out",
             str(cohort)])
    s = _train(["experiment=tcga_lusc", f"data.root={cohort}"], RESULTS / "run_tcga")
    (RESULTS / "training_tcga.json").write_text(json.dumps(s, indent=1, default=float))
    _print(s, "TCGA LUSC, progression-free interval (5-fold CV)", "Reference: stage-only Harrell C 0.620.")


def shuffled() -> None:
    src = ROOT / "data" / "demo"
    dst = RESULTS / "demo_shuffled"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("features", "truth"))
    clinical = pd.read_csv(dst / "clinical.csv", dtype=str, keep_default_na=False)
    perm = np.random.default_rng(0).permutation(len(clinical))
    for col in ("rfs_time", "rfs_event", "os_time", "os_event"):
        clinical[col] = clinical[col].to_numpy()[perm]
    clinical.to_csv(dst / "clinical.csv", index=False)
    s = _train(["data=cohort", f"data.root={dst}", "task=rfs"], RESULTS / "run_shuffled")
    (RESULTS / "training_shuffled.json").write_text(json.dumps(s, indent=1, default=float))
    _print(s, "Demo cohort with outcomes shuffled between patients", "Expected: every model 0.50 +/- 0.03.")


def external() -> None:
    val = RESULTS / "nsclc_postop_1000"
    if not (val / "cohort.yaml").is_file():
        cli(["synth", "--kind", "nsclc-postop", "--n", "1000", "--seed", "101", "--out", str(val), "--quiet"])
    s = _train(["experiment=demo", f"data.root={ROOT / 'data' / 'demo'}", f"data.validation_root={val}"],
               RESULTS / "run_external")
    oracle = json.loads((val / "truth" / "summary.json").read_text())["oracle_cindex"]["rfs"]
    s["oracle_cindex_validation"] = oracle
    (RESULTS / "training_external.json").write_text(json.dumps(s, indent=1, default=float))
    _print(s, "Trained on the 300-patient demo cohort, validated on 1,000 patients (seed 101)",
           f"Oracle C-index of the validation cohort: {oracle:.3f}.")


if __name__ == "__main__":
    parts = {"tcga": tcga, "shuffled": shuffled, "external": external}
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", choices=list(parts), default=list(parts))
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for p in args.parts:
        parts[p]()

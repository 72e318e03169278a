"""Look-ahead on serial samples (issue 16): each model's cross-validated C next to what the cohort's truth allows.

    .venv/bin/python bench/bench_time.py                          # nsclc-advanced, n=300, seed 7, task=pfs
    .venv/bin/python bench/bench_time.py --n 150 --out bench/results/time_before.json
    .venv/bin/python bench/bench_time.py --override "task.prediction_time={at: index}"

A synthetic cohort knows the best C any model can reach (``truth/summary.json``: ``oracle_cindex`` from the true
risk, ``modality_ceiling`` from each modality's noise-free quantities). A cross-validated C above the oracle (plus a
margin for the noise of 5-fold CV, default 0.02) means the inputs carry information from after the prediction
time: samples drawn up to and after the event. The script trains with ``train.py`` as a subprocess (the default
run: ``data.root=COHORT task=TASK tracking=none training.progress=false training.final_model=false``, the final
fit changes no cross-validated number) plus every ``--override``, prints a markdown table for BENCHMARKS.md and
writes JSON with ``--out``. ``--check`` exits 1 when a model is flagged. The cohort is generated once with
``omics-risk synth`` under ``--work`` and reused (its feature store too).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cohorts import synthetic_cohort  # bench/cohorts.py

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cohort", type=Path, help="an existing synthetic cohort (default: generate one under --work)")
    p.add_argument("--kind", default="nsclc-advanced", help="synthetic kind to generate (default nsclc-advanced)")
    p.add_argument("--n", type=int, default=300, help="patients (default 300)")
    p.add_argument("--seed", type=int, default=7, help="synthetic cohort seed (default 7, as the demo)")
    p.add_argument("--task", default="pfs", help="train.py task (default pfs)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Hydra override passed to train.py (repeatable), "
                   "e.g. \"task.prediction_time={at: index}\"")
    p.add_argument("--margin", type=float, default=0.02, help="flag a C above the oracle + this (default 0.02)")
    p.add_argument("--work", type=Path, default=RESULTS / "time", help="cohorts and runs (default bench/results/time)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--check", action="store_true", help="exit 1 when any model is above the oracle + margin")
    p.add_argument("--summary", type=Path, help="tabulate this finished train.py run's summary.json (no training); "
                   "--cohort names its cohort")
    return p.parse_args(argv)


def _python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.is_file() else sys.executable


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    return env


def cohort_dir(args: argparse.Namespace) -> Path:
    """The cohort to train on: ``--cohort``, else one generated with ``omics-risk synth`` (once per generator)."""
    if args.cohort is not None:
        return args.cohort.resolve()
    root = (args.work / f"{args.kind}_n{args.n}_seed{args.seed}").resolve()
    return synthetic_cohort(root, args.kind, args.n, args.seed)  # regenerated when left by an older generator


def train_run(cohort: Path, task: str, overrides: list[str], out: Path) -> tuple[dict[str, Any], list[str], float]:
    """Run ``train.py`` on the cohort; return its summary.json, the command and the wall time in seconds."""
    cmd = [_python(), "train.py", f"data.root={cohort}", f"task={task}", "tracking=none", "training.progress=false",
           "training.final_model=false", f"paths.root_dir={ROOT}", f"hydra.run.dir={out}", *overrides]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=_env(), cwd=ROOT)
    seconds = time.perf_counter() - t0
    return json.loads((out / "summary.json").read_text()), cmd, seconds


def _modality_of(model: str, ceilings: dict[str, float]) -> str:
    """The truth's modality behind a model name (``coxnet_ctdna`` -> ``ctdna``, ``clinical_cox`` -> ``clinical``;
    fused and stacked models: ``all``)."""
    words = model.split("_")
    return next((m for m in ceilings if m != "all" and m in words), "all")


def compare(summary: dict[str, Any], truth: dict[str, Any], endpoint: str, margin: float) -> list[dict[str, Any]]:
    """One row per model: its C (with CI), the oracle, the ceiling of its modality and whether it is flagged."""
    oracle = float(truth["oracle_cindex"][endpoint])
    ceilings = {k: float(v) for k, v in truth.get("modality_ceiling", {}).get(endpoint, {}).items()}
    rows = []
    for r in summary["table"]:
        c = r.get("cindex")
        modality = _modality_of(str(r["model"]), ceilings)
        ceiling = ceilings.get(modality)
        rows.append({"model": r["model"], "cindex": c, "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high"),
                     "modality": modality, "ceiling": ceiling, "oracle": oracle,
                     "above_ceiling": c is not None and ceiling is not None and float(c) > ceiling + margin,
                     "above_oracle": c is not None and float(c) > oracle + margin})
    return rows


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else "" if v is None else str(v)


def markdown(rows: list[dict[str, Any]], margin: float) -> str:
    cols = ["model", "cindex", "ci_low", "ci_high", "modality", "ceiling", "oracle"]
    flags = {"above_ceiling": f"> ceiling + {margin:g}", "above_oracle": f"> oracle + {margin:g}"}
    out = ["| " + " | ".join([*cols, *flags.values()]) + " |", "|" + "---|" * (len(cols) + len(flags))]
    for r in rows:
        marks = ["**yes**" if r[f] else "no" for f in flags]
        out.append("| " + " | ".join([*(_fmt(r[c]) for c in cols), *marks]) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    cohort = cohort_dir(args)
    truth = json.loads((cohort / "truth" / "summary.json").read_text())
    tag = "default" if not args.override else hashlib.sha1("\n".join(args.override).encode()).hexdigest()[:8]
    if args.summary is not None:
        summary, cmd, seconds = json.loads(args.summary.read_text()), [], None
    else:
        summary, cmd, seconds = train_run(cohort, args.task, args.override, args.work / f"run_{cohort.name}_{tag}")
    endpoint = str(summary.get("endpoint", args.task))
    rows = compare(summary, truth, endpoint, args.margin)
    result = {
        "cohort": str(cohort), "kind": truth.get("kind"), "n": truth.get("n"), "seed": truth.get("seed"),
        "task": args.task, "endpoint": endpoint, "overrides": args.override, "command": cmd,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), python {platform.python_version()}",
        "load_average": os.getloadavg(), "train_seconds": None if seconds is None else round(seconds, 1),
        "margin": args.margin,
        "oracle": rows[0]["oracle"] if rows else None, "n_patients": summary.get("n_patients"),
        "n_events": summary.get("n_events"), "modalities": summary.get("modalities"), "rows": rows,
        "n_above_oracle": sum(r["above_oracle"] for r in rows),
        "n_above_ceiling": sum(r["above_ceiling"] for r in rows),
    }
    print(f"\n{truth.get('kind')} n={truth.get('n')} seed={truth.get('seed')}, task={args.task}, overrides="
          f"{args.override or 'none'}: {result['n_above_oracle']} of {len(rows)} model(s) above the oracle "
          f"{result['oracle']:.3f} + {args.margin:g}, {result['n_above_ceiling']} above their modality's ceiling "
          f"(train.py {'not run' if seconds is None else f'{seconds:.0f} s'})\n")
    print(markdown(rows, args.margin))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=float))
    return 1 if args.check and result["n_above_oracle"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""The synthetic cohorts benchmarks train and validate on, (re)generated when missing or from another generator.

A cohort left on disk by an older ``omics-risk synth`` keeps its files, so a benchmark that only checked for
``cohort.yaml`` compared models trained on a stale cohort against a current validation cohort. Every bench script
resolves its default synthetic cohorts through :func:`synthetic_cohort`, which checks ``truth/summary.json``
against the current ``GENERATOR_VERSION`` (:func:`omics_risk.data.synthetic.is_current`).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from omics_risk.data.synthetic import GENERATOR_VERSION, is_current  # noqa: E402

#: make demo's cohort (the Makefile's DEMO_N, DEMO_SEED) and the external validation cohort of bench_training.
DEMO = ("nsclc-postop", 300, 7)
VALIDATION = ("nsclc-postop", 1000, 101)


def synthetic_cohort(path: Path, kind: str, n: int, seed: int) -> Path:
    """``path`` holding the cohort the current generator writes for (kind, n, seed): synthesised there with
    ``omics-risk synth --overwrite`` when it is missing or stale (one line says so), else left as it is."""
    path = Path(path)
    if is_current(path, kind=kind, n=n, seed=seed):
        return path
    why = "missing" if not (path / "truth" / "summary.json").is_file() else "from another generator version or size"
    print(f"synthetic cohort {path} ({kind}, n={n}, seed={seed}) is {why}: generating it with generator "
          f"{GENERATOR_VERSION}", flush=True)
    from omics_risk.cli import main as cli  # the CLI pulls in torch; only needed to synthesise

    if cli(["synth", "--kind", kind, "--n", str(n), "--seed", str(seed), "--out", str(path), "--overwrite",
            "--quiet"]) != 0:
        sys.exit(f"could not synthesise {path} (message above)")
    return path

"""The run's elastic-net Cox baselines (``coxnet_<m>``) against scikit-survival used directly, on the same folds.

    .venv/bin/python bench/bench_baselines.py                  # TCGA LUSC (rppa, cnv, mirna) and the demo cohort
    .venv/bin/python bench/bench_baselines.py tcga --modalities rppa --peer-l1 0.5 --jobs 2

For each modality, on the patients that have it (the run gives the others the training median risk, which says
nothing about the model), with the run's 5 outer folds (``repeated_stratified_folds``, the run's seed):

* **run**: ``make_baselines(...)["coxnet_<m>"]`` with ``configs/baselines/default.yaml`` -- what ``train.py`` fits;
* **peer**: scikit-survival as its user guide uses it: ``SimpleImputer(median) + StandardScaler +
  CoxnetSurvivalAnalysis(l1_ratio, alpha_min_ratio=0.01)`` fitted on the training fold for its alpha path, then
  ``GridSearchCV`` (``KFold(5, shuffle=True, random_state=0)``, ``error_score=0.5``) over those alphas, refitted at
  the best alpha (``fit_baseline_model=True``; if that refit fails numerically, at the next best).

The table gives the mean per-fold Harrell C of both, run - peer and run / peer, and whether run >= peer - 0.005.
Results go to ``bench/results/baselines.json`` (git-ignored). The peer is the slow part (single-alpha fits at the
small-alpha end of the path run to ``max_iter``): minutes per modality.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from sklearn.base import clone
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.linear_model import CoxnetSurvivalAnalysis
from sksurv.util import Surv
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cohorts import DEMO, synthetic_cohort  # noqa: E402

from omics_risk.cli import main as cli  # noqa: E402
from omics_risk.data.contract import load_cohort  # noqa: E402
from omics_risk.data.multimodal import MultimodalData  # noqa: E402
from omics_risk.evaluation.splits import repeated_stratified_folds  # noqa: E402
from omics_risk.evaluation.survival_metrics import harrell_c  # noqa: E402
from omics_risk.features.clinical import clinical_types  # noqa: E402
from omics_risk.models.baselines import make_baselines  # noqa: E402
from omics_risk.workflows import training as pl  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TOLERANCE = 0.005  # done when every coxnet_<m> >= the direct scikit-survival model - 0.005
DEFAULT_DEMO = ROOT / "data" / "demo"
PARTS = {"tcga": (["experiment=tcga_lusc"], ["rppa", "cnv", "mirna"]), "demo": (["experiment=demo"], None)}


def _config(part: str, root: Path):  # type: ignore[no-untyped-def]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=[f"paths.root_dir={ROOT}", f"paths.output_dir={RESULTS / 'run_baselines'}",
                                           "tracking=none", "training.final_model=false", "training.progress=false",
                                           *PARTS[part][0], f"data.root={root}"])


def _data(part: str, root: Path) -> tuple:
    """The run's data (features extracted, cached) and config, as ``train()`` builds them."""
    if part == "tcga" and not (root / "cohort.yaml").is_file():
        cli(["convert", "tcga-lusc", "--src", str(ROOT.parent / "shared" / "data" / "tcga_lusc"), "--out", str(root)])
    cfg = _config(part, root)
    cohort = load_cohort(root)
    inputs = pl._inputs(cfg, cohort, pl._store(root, cfg.data.features_dir))
    return cfg, inputs.data, clinical_types(cohort.spec), cohort.spec.name


def peer_risk(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, l1_ratio: float, jobs: int) -> tuple:
    """scikit-survival used directly (its user guide's recipe): the test risk and the chosen alpha."""
    path = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                         CoxnetSurvivalAnalysis(l1_ratio=l1_ratio, alpha_min_ratio=0.01, max_iter=100))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "all coefficients are zero", convergence of the 100-iteration path
        alphas = path.fit(X_train, y_train)[-1].alphas_
        est = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                            CoxnetSurvivalAnalysis(l1_ratio=l1_ratio, fit_baseline_model=True))
        gcv = GridSearchCV(est, {"coxnetsurvivalanalysis__alphas": [[float(a)] for a in alphas]},
                           cv=KFold(n_splits=5, shuffle=True, random_state=0), error_score=0.5, n_jobs=jobs,
                           refit=False).fit(X_train, y_train)
        for i in np.argsort(-gcv.cv_results_["mean_test_score"], kind="stable"):
            params = gcv.cv_results_["params"][i]
            try:
                model = clone(est).set_params(**params).fit(X_train, y_train)
            except ArithmeticError:  # the refit at this alpha blows up on the whole training fold: next best
                continue
            return model.predict(X_test), float(params["coxnetsurvivalanalysis__alphas"][0])
    raise RuntimeError("no alpha of the path could be refitted")


def compare(part: str, data: MultimodalData, cfg, types: dict, modality: str, peer_l1: list[float],  # type: ignore[no-untyped-def]
            jobs: int) -> dict:
    """Per-fold C of the run's coxnet_<modality> and of each peer, on the patients that have the modality."""
    has = data.present[modality].to_numpy(dtype=bool)
    sub = data.subset(np.flatnonzero(has))
    folds = repeated_stratified_folds(int(cfg.training.cv.folds), 1, int(cfg.seed), event=sub.event, time=sub.time)
    settings = {**(OmegaConf.to_container(cfg.baselines.settings, resolve=True) or {}), "clinical_types": types,
                "seed": int(cfg.seed), "include": [f"coxnet_{modality}"]}
    X = sub.modalities[modality].to_numpy(dtype=np.float64)
    out: dict = {"modality": modality, "n_patients": int(has.sum()), "n_events": int(sub.event.sum()),
                 "n_features": int(X.shape[1]), "run": {"c": [], "seconds": 0.0, "alpha": []}}
    out.update({f"peer_l1_{l1}": {"c": [], "seconds": 0.0, "alpha": []} for l1 in peer_l1})
    for fold in folds:
        train, test = sub.subset(fold.train), sub.subset(fold.test)
        t0 = time.perf_counter()
        model = make_baselines([modality], "survival", settings)[f"coxnet_{modality}"].fit(train)
        out["run"]["c"].append(harrell_c(test.time, test.event, model.predict_risk(test)))
        out["run"]["seconds"] += time.perf_counter() - t0
        out["run"]["alpha"].append(model.alpha_)
        y = Surv.from_arrays(train.event.astype(bool), train.time)
        for l1 in peer_l1:
            t0 = time.perf_counter()
            risk, alpha = peer_risk(X[fold.train], y, X[fold.test], l1, jobs)
            key = f"peer_l1_{l1}"
            out[key]["c"].append(harrell_c(test.time, test.event, risk))
            out[key]["seconds"] += time.perf_counter() - t0
            out[key]["alpha"].append(alpha)
    for key in ["run", *(f"peer_l1_{l1}" for l1 in peer_l1)]:
        out[key]["cindex"] = float(np.mean(out[key]["c"]))
    best_peer = max(out[f"peer_l1_{l1}"]["cindex"] for l1 in peer_l1)
    out["difference"] = out["run"]["cindex"] - best_peer
    out["ratio"] = out["run"]["cindex"] / best_peer
    out["ok"] = bool(out["difference"] >= -TOLERANCE)
    return out


def _table(rows: list[dict], peer_l1: list[float]) -> str:
    peers = [f"sksurv l1 {l1}" for l1 in peer_l1]
    head = ["cohort", "modality", "patients (events)", "features", "coxnet (run)", *peers, "run - best peer",
            "run / best peer", "ok"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["cohort"], r["modality"], f"{r['n_patients']} ({r['n_events']})", str(r["n_features"]),
                 f"{r['run']['cindex']:.3f}", *(f"{r[f'peer_l1_{l1}']['cindex']:.3f}" for l1 in peer_l1),
                 f"{r['difference']:+.3f}", f"{r['ratio']:.3f}", "yes" if r["ok"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # no argparse choices: with nargs="*" it checks the empty list against them and refuses a run naming no cohort
    parser.add_argument("parts", nargs="*", metavar="{" + ",".join(PARTS) + "}",
                        help="cohorts to compare (default: all of them)")
    parser.add_argument("--tcga", type=Path, default=RESULTS / "tcga_lusc", help="converted TCGA LUSC cohort")
    parser.add_argument("--demo", type=Path, default=DEFAULT_DEMO,
                        help="the demo cohort (default data/demo, regenerated when missing or stale)")
    parser.add_argument("--modalities", nargs="*", default=None, help="only these modalities")
    parser.add_argument("--peer-l1", nargs="*", type=float, default=[0.5, 0.9], help="l1_ratio of the direct model")
    parser.add_argument("--jobs", type=int, default=1, help="GridSearchCV n_jobs of the direct model")
    parser.add_argument("--out", type=Path, default=RESULTS / "baselines.json")
    args = parser.parse_args()
    if unknown := sorted(set(args.parts) - set(PARTS)):
        parser.error(f"unknown cohort(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    # the default demo cohort is (re)generated when stale; a cohort named with --demo is used as it is
    demo = args.demo
    if "demo" in (args.parts or list(PARTS)) and args.demo == DEFAULT_DEMO:
        demo = synthetic_cohort(args.demo, *DEMO)
    rows: list[dict] = []
    with threadpool_limits(1):
        for part in args.parts or list(PARTS):
            cfg, data, types, name = _data(part, args.tcga if part == "tcga" else demo)
            mods = [m for m in (PARTS[part][1] or data.modality_names) if m in data.modality_names]
            for m in [m for m in mods if args.modalities is None or m in args.modalities]:
                row = {"cohort": name, **compare(part, data, cfg, types, m, args.peer_l1, args.jobs)}
                rows.append(row)
                print(_table([row], args.peer_l1).splitlines()[-1], flush=True)
                args.out.write_text(json.dumps({"tolerance": TOLERANCE, "rows": rows}, indent=1, default=float))
    print("\n" + _table(rows, args.peer_l1))


if __name__ == "__main__":
    main()

"""Acceptance numbers of the modelling issue, each produced by a real training run through ``train(cfg)``.

    .venv/bin/python bench/bench_training.py tcga            # real TCGA LUSC, PFI: every model vs stage-only 0.620
    .venv/bin/python bench/bench_training.py tcga --cv-repeats 3   # the same, 3 x 5-fold, pooled over repeats
    .venv/bin/python bench/bench_training.py shuffled        # demo cohort, outcomes shuffled 10x: every mean C ~ 0.50
    .venv/bin/python bench/bench_training.py external        # train on 300, validate on 1,000 (another seed)
    .venv/bin/python bench/bench_training.py seeds           # the same without CV, on 3 training cohorts of 300
    .venv/bin/python bench/bench_training.py learning        # what perfect features allow, by training size;
                                                             # every model trained on 1,000 patients

Each part writes ``bench/results/training_<part>.json`` (git-ignored) and prints a markdown table for BENCHMARKS.md.
Tracking is switched off so benchmark runs do not clutter the MLflow store.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from hydra import compose, initialize_config_dir
from sklearn.model_selection import StratifiedKFold
from sksurv.linear_model import CoxPHSurvivalAnalysis
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cohorts import DEMO, VALIDATION, synthetic_cohort  # noqa: E402

from omics_risk.cli import main as cli  # noqa: E402
from omics_risk.data.contract import load_cohort  # noqa: E402
from omics_risk.data.synthetic import nsclc_postop  # noqa: E402
from omics_risk.data.synthetic.cohort import SynthOptions, modality_shares  # noqa: E402
from omics_risk.data.synthetic.genome import get_genome  # noqa: E402
from omics_risk.evaluation.metrics import harrell_c  # noqa: E402
from omics_risk.features.clinical import clinical_types  # noqa: E402
from omics_risk.features.extract import extract_cohort  # noqa: E402
from omics_risk.models.device import seed_everything  # noqa: E402
from omics_risk.workflows import training as pl  # noqa: E402
from omics_risk.workflows.training import train  # noqa: E402

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


def tcga(repeats: int = 1, models: list[str] | None = None) -> None:
    """Real TCGA LUSC, PFI: 5-fold CV (``repeats`` > 1: repeated with reshuffled folds; pooled C, CIs and paired
    tests over every repeat, p from the corrected resampled t-test). ``models``: only these baselines."""
    cohort = RESULTS / "tcga_lusc"
    if not (cohort / "cohort.yaml").is_file():
        cli(["convert", "tcga-lusc", "--src", str(ROOT.parent / "shared" / "data" / "tcga_lusc"), "--out",
             str(cohort)])
    tag = "" if repeats == 1 else f"_repeats{repeats}"
    only = [f"baselines.settings.include=[{','.join(models)}]"] if models else []
    s = _train(["experiment=tcga_lusc", f"data.root={cohort}", f"training.cv.repeats={repeats}", *only],
               RESULTS / f"run_tcga{tag}")
    (RESULTS / f"training_tcga{tag}.json").write_text(json.dumps(s, indent=1, default=float))
    _print(s, f"TCGA LUSC, progression-free interval ({f'{repeats} x ' if repeats > 1 else ''}5-fold CV)",
           "Reference: stage-only Harrell C 0.620.")


SHUFFLE_TOLERANCE = 0.03  # acceptance: the mean C over shuffles of every model within 0.50 +/- 0.03


def _shuffled_copy(src: Path, dst: Path, seed: int) -> None:
    """``src`` with its outcomes permuted between patients: a new clinical.csv, every data folder linked."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name in ("features", "truth", "clinical.csv"):
            continue
        if entry.is_dir():
            (dst / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
        else:
            shutil.copy2(entry, dst / entry.name)
    # the linked data folders lead outside the copy: declare the source cohort as a data root (the contract refuses a
    # link out of the cohort folder otherwise)
    spec = yaml.safe_load((dst / "cohort.yaml").read_text())
    spec["data_roots"] = [*spec.get("data_roots", []), str(src.resolve())]
    (dst / "cohort.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    clinical = pd.read_csv(src / "clinical.csv", dtype=str, keep_default_na=False)
    perm = np.random.default_rng(seed).permutation(len(clinical))
    for col in ("rfs_time", "rfs_event", "os_time", "os_event"):
        clinical[col] = clinical[col].to_numpy()[perm]
    clinical.to_csv(dst / "clinical.csv", index=False)


def _limit_threads() -> None:
    """One thread per worker process, so that two shuffles trained side by side share the cores evenly."""
    torch.set_num_threads(1)
    threadpool_limits(1)


def _shuffled_run(i: int, cohort: Path, features: Path, out: Path, repeats: int) -> dict:
    """One shuffle's ``train(cfg)`` with every baseline (its table goes to ``out/train.log``, not the console)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.log", "w") as log, contextlib.redirect_stdout(log):
        return _train(["experiment=demo", f"data.root={cohort}", f"data.features_dir={features}", "extract.run=false",
                       f"seed={42 + i}", f"training.cv.repeats={repeats}"], out)


def _features_vs(store: Path, reference: Path) -> dict[str, float]:
    """Largest absolute difference per modality between two feature stores (NaN where one lacks the table)."""
    diff = {}
    for ref in sorted(reference.glob("*.parquet")):
        a = pd.read_parquet(ref)
        b = pd.read_parquet(store / ref.name) if (store / ref.name).is_file() else None
        if b is None or not a.index.equals(b.index) or not a.columns.equals(b.columns):
            diff[ref.stem] = float("nan")
            continue
        text = [c for c in a.columns if not pd.api.types.is_numeric_dtype(a[c])]  # ids, timepoints of *.samples
        if not a[text].equals(b[text]):
            diff[ref.stem] = float("nan")
            continue
        x, y = a.drop(columns=text).to_numpy(dtype=float), b.drop(columns=text).to_numpy(dtype=float)
        same_nan = np.array_equal(np.isnan(x), np.isnan(y))
        diff[ref.stem] = float(np.nanmax(np.abs(x - y), initial=0.0)) if same_nan else float("nan")
    return diff


def shuffled(n_shuffles: int = 10, repeats: int = 1, jobs: int = 2) -> None:
    """Every model on ``n_shuffles`` independent outcome permutations of the demo cohort, ``repeats`` x 5-fold CV each.

    One shuffle's CV C-index of a null model scatters with SD ~0.035 on 300 patients (a single run misses
    0.50 +/- 0.03 about 40 % of the time), so the criterion is read on the mean over shuffles, with its standard
    error (SD over shuffles / sqrt(n)). Shuffle ``i`` permutes with ``default_rng(i)`` and trains with seed
    ``42 + i`` (folds, model seeds). Features are extracted from the first shuffled copy (extraction must not read
    outcomes: the json records how far they are from the demo's own store; the store and its cache stay between runs)
    and reused by every shuffle.
    """
    src = synthetic_cohort(ROOT / "data" / "demo", *DEMO)
    base = RESULTS / "demo_shuffled"
    if base.exists():  # the feature store stays: extraction's own cache knows when its input files changed
        for entry in base.iterdir():
            if entry.name == "features":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    t0 = time.perf_counter()
    cohorts = [base / f"cohort_{i}" for i in range(n_shuffles)]
    for i, dst in enumerate(cohorts):
        _shuffled_copy(src, dst, seed=i)
    features = base / "features"
    extract_cohort(cohorts[0], features, workers=jobs, progress=False)
    vs_demo = _features_vs(features, src / "features")
    runs = [(i, cohorts[i], features, base / f"run_{i}", repeats) for i in range(n_shuffles)]
    if jobs > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_limit_threads) as pool:
            summaries = list(pool.map(_shuffled_run, *zip(*runs, strict=True)))
    else:
        summaries = [_shuffled_run(*r) for r in runs]

    names = [row["model"] for row in summaries[0]["table"]]
    rows = []
    for name in names:
        c = np.array([s["metrics"][f"{name}/cindex"] for s in summaries])
        se = float(c.std(ddof=1) / np.sqrt(len(c))) if len(c) > 1 else float("nan")
        mean = float(c.mean())
        rows.append({"model": name, "mean_cindex": mean, "se": se, "min": float(c.min()), "max": float(c.max()),
                     "z": (mean - 0.5) / se if se > 0 else float("nan"),
                     "pass": bool(abs(mean - 0.5) <= SHUFFLE_TOLERANCE), "per_shuffle": c.tolist(),
                     "fit_seconds": float(np.mean([s["metrics"][f"{name}/fit_seconds"] for s in summaries]))})
    result = {"n_shuffles": n_shuffles, "cv": summaries[0]["cv"], "n_patients": summaries[0]["n_patients"],
              "n_events": summaries[0]["n_events"], "tolerance": SHUFFLE_TOLERANCE,
              "features_max_abs_diff_vs_demo": vs_demo, "seconds": time.perf_counter() - t0, "table": rows,
              "runs": [{"shuffle": i, "seed": 42 + i, "seconds": s["seconds"], "table": s["table"]}
                       for i, s in enumerate(summaries)]}
    (RESULTS / "training_shuffled.json").write_text(json.dumps(result, indent=1, default=float))

    cv = result["cv"]
    print(f"\n### Demo cohort with outcomes shuffled between patients ({n_shuffles} shuffles, each {cv['folds']}-fold "
          f"CV x {cv['repeats']})\nExpected: every model's mean C over shuffles 0.50 +/- {SHUFFLE_TOLERANCE:.2f}. "
          f"Total {result['seconds'] / 60:.1f} min; features re-extracted from the shuffled cohort differ from the "
          f"demo's by at most {max(vs_demo.values(), default=float('nan')):.2g}.\n")
    print("| model | mean C | SE | min | max | (mean - 0.5) / SE | within 0.50 +/- 0.03 | fit s / run |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['mean_cindex']:.3f} | {r['se']:.3f} | {r['min']:.3f} | {r['max']:.3f} | "
              f"{r['z']:+.1f} | {'yes' if r['pass'] else '**no**'} | {r['fit_seconds']:.1f} |")


def external() -> None:
    val = synthetic_cohort(RESULTS / "nsclc_postop_1000", *VALIDATION)
    demo = synthetic_cohort(ROOT / "data" / "demo", *DEMO)
    s = _train(["experiment=demo", f"data.root={demo}", f"data.validation_root={val}"],
               RESULTS / "run_external")
    oracle = json.loads((val / "truth" / "summary.json").read_text())["oracle_cindex"]["rfs"]
    s["oracle_cindex_validation"] = oracle
    (RESULTS / "training_external.json").write_text(json.dumps(s, indent=1, default=float))
    _print(s, "Trained on the 300-patient demo cohort, validated on 1,000 patients (seed 101)",
           f"Oracle C-index of the validation cohort: {oracle:.3f}.")


#: training cohorts of 300 for ``seeds`` (7 is the demo): models within 0.01 of each other change places between them
TRAINING_SEEDS = (7, 11, 12)


def seeds() -> None:
    """Every model of the demo experiment trained on each of ``TRAINING_SEEDS``' 300-patient cohorts (no CV) and
    scored on the same 1,000 validation patients: is the fused model first, or within 0.005 of the first, on each?"""
    val = synthetic_cohort(RESULTS / "nsclc_postop_1000", *VALIDATION)
    runs = {}
    for seed in TRAINING_SEEDS:
        root = (synthetic_cohort(ROOT / "data" / "demo", *DEMO) if seed == DEMO[2]
                else synthetic_cohort(RESULTS / f"nsclc_postop_300_seed{seed}", "nsclc-postop", 300, seed))
        runs[seed] = _external_only(root, val, RESULTS / "run_seeds")
        print(f"training seed {seed}: {runs[seed]['seconds']:.0f} s", flush=True)
    (RESULTS / "training_seeds.json").write_text(json.dumps(runs, indent=1, default=float))
    print("\n#### External C by training cohort (300 patients each; the same 1,000 validation patients)\n\n"
          "| training seed | fused | clinical Cox | late fusion | DeepProg-style | best single modality "
          "| best other model | fused - best other | within 0.005 |\n|---|---|---|---|---|---|---|---|---|")
    for seed, m in runs.items():
        c = {k.split("/")[1]: v for k, v in m.items() if k.startswith("external/") and k.endswith("/cindex")}
        others = {k: v for k, v in c.items() if k != "fused"}
        single = {k: v for k, v in others.items() if k.split("_", 1)[0] in ("coxnet", "rsf")
                  and not k.endswith("_clinical")}
        best, top = max(others.items(), key=lambda kv: kv[1])
        one, one_c = max(single.items(), key=lambda kv: kv[1])
        d = c["fused"] - top
        print(f"| {seed} | {c['fused']:.3f} | {c['clinical_cox']:.3f} | {c.get('late_fusion', float('nan')):.3f} "
              f"| {c.get('deepprog', float('nan')):.3f} | {one_c:.3f} ({one}) | {top:.3f} ({best}) | {d:+.3f} "
              f"| {'yes' if d >= -0.005 else 'no'} |")


def _planned(n: int, seed: int) -> dict:
    """A cohort's plan without rendering any file: outcome, noise-free quantities, what each patient has, truth.

    ``plan`` is what ``omics-risk synth`` writes (same seed, same numbers); skipping the images, fragments and
    methylation files makes 10,000 patients a matter of seconds. ``raw``: every noise-free quantity the modalities
    encode, for every patient; ``observed``: the same with a modality's quantities missing where the patient has no
    such sample (the tumour fraction from the most sensitive plasma assay the patient has, at its detection limit).
    """
    opts = SynthOptions()
    plan = nsclc_postop.plan(n, np.random.SeedSequence(seed), opts, get_genome(opts.genome_scale))
    eta = plan.truth_patients["true_risk_rfs"].to_numpy(float)
    pids = plan.clinical["patient_id"].to_numpy()
    smp = plan.samples

    def has(modality: str, timepoint: str | None = None) -> np.ndarray:
        rows = smp[(smp["modality"] == modality) & ((smp["timepoint"] == timepoint) if timepoint else True)]
        return np.isin(pids, rows["patient_id"].unique())

    groups = {"clinical": (plan.views["clinical"], np.ones(n, bool)),
              "ct_preop": (plan.views["ct_preop"], has("ct", "preop")),
              "ct_postop": (plan.views["ct_postop"], has("ct", "postop1")),
              "metabolomics": (plan.views["metabolomics"], has("metabolomics"))}
    raw = pd.concat([g.astype(float).add_prefix(f"{k}/") for k, (g, _) in groups.items()], axis=1)
    raw["plasma/logtf"] = plan.views["ctdna"]["logtf"].to_numpy(float)  # lowest detection limit
    observed = raw.copy()
    for k, (_, present) in groups.items():
        observed.loc[~present, [c for c in raw if c.startswith(f"{k}/")]] = np.nan
    logtf = np.full(n, np.nan)
    for mod in ("cfdna", "methylation", "ctdna"):  # least sensitive first: the most sensitive assay wins
        logtf = np.where(has(mod), plan.views[mod]["logtf"].to_numpy(float), logtf)
    observed["plasma/logtf"] = logtf
    views, _ = modality_shares(plan, eta)
    views = views[[f"view_{m}" for m in plan.views if m not in ("ct", "all")]]
    clin = plan.clinical
    return {"time": clin["rfs_time"].to_numpy(float), "event": clin["rfs_event"].to_numpy(bool), "raw": raw,
            "observed": observed, "views": views, "eta": eta}


RIDGE_GRID = (1.0, 10.0, 30.0, 100.0, 300.0, 1000.0)


def _design(x_tr: pd.DataFrame, x_va: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Standardise on the training rows; a missing block becomes the training mean plus a presence indicator."""
    mu, sd = x_tr.mean(), x_tr.std().replace(0, 1).fillna(1)
    parts_tr, parts_va = [((x_tr - mu) / sd).fillna(0.0)], [((x_va - mu) / sd).fillna(0.0)]
    blocks = sorted({c.split("/")[0] for c in x_tr.columns if "/" in c and x_tr[c].isna().any()})
    for b in blocks:
        col = next(c for c in x_tr.columns if c.startswith(f"{b}/"))
        parts_tr.append(x_tr[[col]].notna().astype(float).set_axis([f"has_{b}"], axis=1))
        parts_va.append(x_va[[col]].notna().astype(float).set_axis([f"has_{b}"], axis=1))
    return pd.concat(parts_tr, axis=1).to_numpy(), pd.concat(parts_va, axis=1).to_numpy()


def _cox_external(x_tr: pd.DataFrame, t: np.ndarray, e: np.ndarray, x_va: pd.DataFrame) -> tuple[np.ndarray, float]:
    """Ridge Cox (scikit-survival) fitted on the training cohort, its penalty chosen by 5-fold CV there."""
    y = np.array(list(zip(e, t, strict=True)), dtype=[("event", bool), ("time", float)])
    cv = list(StratifiedKFold(5, shuffle=True, random_state=0).split(x_tr, e))
    scores = []
    for alpha in RIDGE_GRID:
        cs = []
        for tr, te in cv:
            a, b = _design(x_tr.iloc[tr], x_tr.iloc[te])
            cs.append(harrell_c(t[te], e[te], CoxPHSurvivalAnalysis(alpha=alpha).fit(a, y[tr]).predict(b)))
        scores.append(np.mean(cs))
    alpha = RIDGE_GRID[int(np.argmax(scores))]
    a, b = _design(x_tr, x_va)
    return CoxPHSurvivalAnalysis(alpha=alpha).fit(a, y).predict(b), alpha


LEARNING_SIZES = {300: 10, 1000: 5, 3000: 3, 10000: 2}  # training-cohort size -> independent training seeds


def _external_only(train_root: Path, val_root: Path, out: Path) -> dict[str, float]:
    """Every model of the demo experiment fitted once on ``train_root`` and scored on ``val_root`` (no CV)."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={ROOT}", f"paths.output_dir={out}", "tracking=none",
                                          "experiment=demo", f"data.root={train_root}",
                                          f"data.validation_root={val_root}", "training.progress=false"])
    seed_everything(int(cfg.seed))
    cohort = load_cohort(train_root)
    data = pl._inputs(cfg, cohort, train_root / "features").data
    factories = pl._factories(cfg, data, clinical_types(cohort.spec), None)
    t0 = time.perf_counter()
    metrics = pl._external(cfg, factories, data)
    metrics["seconds"] = time.perf_counter() - t0
    metrics["n_train"] = float(len(data))
    metrics["n_train_events"] = float(data.event.sum())
    return metrics


def learning(models: bool = True) -> None:
    """How the reachable C-index on the 1,000 validation patients grows with the training cohort.

    Noise-free side (reads the truth, benchmark only): for each training size in ``LEARNING_SIZES`` and several
    independent training seeds, a ridge Cox model (penalty by inner CV) on every noise-free quantity the modalities
    encode, i.e. a perfect feature extractor with a correctly specified linear model that never sees the true risk:
    (a) with the cohort's missing modalities (mean-imputed plus presence indicators, as the models must cope),
    (b) with nothing missing, and (c) on the per-modality views fitted to the true risk (optimistic: the
    within-modality weights come from the truth).
    Measured side (``models``): every model of the demo experiment fitted on a 1,000-patient training cohort
    (seed 202) and scored on the same validation cohort, next to the 300-patient numbers of ``external``.
    """
    val = synthetic_cohort(RESULTS / "nsclc_postop_1000", *VALIDATION)
    oracle = json.loads((val / "truth" / "summary.json").read_text())["oracle_cindex"]["rfs"]
    va = _planned(1000, 101)
    clin_va = pd.read_csv(val / "clinical.csv")
    if not np.array_equal(clin_va["rfs_time"].to_numpy(float), va["time"]):
        raise RuntimeError("the planned validation cohort differs from the synthesised one: re-run synth")

    def c_va(risk: np.ndarray) -> float:
        return harrell_c(va["time"], va["event"], risk)

    rows = []
    for n, n_seeds in LEARNING_SIZES.items():
        seeds = [7, *range(1001, 1000 + n_seeds)] if n == 300 else list(range(1000, 1000 + n_seeds))  # 7: demo
        for seed in seeds:
            tr = _planned(n, seed)
            row: dict = {"n_train": n, "seed": seed}
            for kind in ("observed", "raw", "views"):
                risk, alpha = _cox_external(tr[kind], tr["time"], tr["event"], va[kind])
                row[kind], row[f"{kind}_alpha"] = c_va(risk), alpha
            rows.append(row)
    curve = pd.DataFrame(rows)
    target = oracle - 0.03
    result: dict = {"oracle_cindex_validation": oracle, "target": target, "ridge_grid": RIDGE_GRID,
                    "noise_free": rows, "population_views_sum": c_va(va["views"].sum(axis=1).to_numpy())}
    (RESULTS / "training_learning.json").write_text(json.dumps(result, indent=1, default=float))
    measured_file = RESULTS / "training_learning_models.json"  # the slow half, kept apart (--no-models reuses it)
    if models:
        train_root = synthetic_cohort(RESULTS / "nsclc_postop_train1000", "nsclc-postop", 1000, 202)
        measured = {"measured_1000": _external_only(train_root, val, RESULTS / "run_learning")}
        ext300 = RESULTS / "training_external.json"
        if ext300.is_file():
            measured["measured_300"] = {k: v for k, v in json.loads(ext300.read_text())["metrics"].items()
                                        if k.startswith("external/")}
        measured_file.write_text(json.dumps(measured, indent=1, default=float))

    print(f"\n### Reachable C-index by training-cohort size (validation cohort of 1,000, seed 101; oracle {oracle:.3f},"
          f" target >= {target:.3f})\n")
    print("| training patients | seeds | perfect features, the cohort's missing modalities | reach target | "
          "perfect features, nothing missing | reach target | truth-fitted views, nothing missing |\n"
          "|---|---|---|---|---|---|---|")

    def cell(g: pd.DataFrame, k: str) -> str:
        return f"{g[k].mean():.3f} [{g[k].min():.3f}-{g[k].max():.3f}]"

    for n, g in curve.groupby("n_train"):
        print(f"| {n:,} | {len(g)} | {cell(g, 'observed')} | {int((g['observed'] >= target).sum())}/{len(g)} | "
              f"{cell(g, 'raw')} | {int((g['raw'] >= target).sum())}/{len(g)} | {cell(g, 'views')} |")
    demo = curve[(curve["n_train"] == 300) & (curve["seed"] == 7)].iloc[0]
    print(f"\nDemo cohort (seed 7): perfect features with its missing modalities {demo['observed']:.3f}, nothing "
          f"missing {demo['raw']:.3f}. Mean C over the table: mean [min-max] over training seeds; ridge penalty "
          f"chosen by 5-fold CV on each training cohort from {list(RIDGE_GRID)}.")
    if measured_file.is_file():
        measured = json.loads(measured_file.read_text())
        m1000, m300 = measured["measured_1000"], measured.get("measured_300", {})
        names = sorted({k.split("/")[1] for k in m1000 if k.endswith("/cindex")},
                       key=lambda k: -m1000[f"external/{k}/cindex"])
        print("\n#### Measured features: trained on 300 (demo) vs 1,000 (seed 202) patients\n\n"
              "| model | external C, 300 | external C, 1,000 [95% CI] | gap to oracle, 1,000 |\n|---|---|---|---|")
        for k in names:
            c = m1000[f"external/{k}/cindex"]
            old = m300.get(f"external/{k}/cindex")
            lo, hi = m1000[f"external/{k}/cindex_ci_low"], m1000[f"external/{k}/cindex_ci_high"]
            print(f"| {k} | {'' if old is None else f'{old:.3f}'} | {c:.3f} [{lo:.3f}-{hi:.3f}] | {oracle - c:+.3f} |")


if __name__ == "__main__":
    parts = {"tcga": tcga, "shuffled": shuffled, "external": external, "seeds": seeds, "learning": learning}
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # no argparse choices: with nargs="*" it checks the default list against them and refuses a run naming no part
    parser.add_argument("parts", nargs="*", metavar="{" + ",".join(parts) + "}", help="default: every part")
    parser.add_argument("--shuffles", type=int, default=10, help="shuffled: independent outcome permutations")
    parser.add_argument("--cv-repeats", type=int, default=1,
                        help="shuffled: CV repeats per permutation; tcga: repeats of the 5-fold CV")
    parser.add_argument("--models", nargs="+", default=None,
                        help="tcga: only these baselines (e.g. clinical_cox reference_stage); default every one")
    parser.add_argument("--jobs", type=int, default=2, help="shuffled: permutations trained side by side")
    parser.add_argument("--no-models", action="store_true", help="learning: the noise-free curve only")
    args = parser.parse_args()
    if unknown := sorted(set(args.parts) - set(parts)):
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(parts)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for p in args.parts or list(parts):
        if p == "shuffled":
            shuffled(args.shuffles, args.cv_repeats, args.jobs)
        elif p == "tcga":
            tcga(args.cv_repeats, args.models)
        elif p == "learning":
            learning(models=not args.no_models)
        else:
            parts[p]()

"""Batch-scoring throughput of ``omics-risk score`` (patients per second), with and without feature extraction.

    .venv/bin/python bench/bench_scoring.py                  # models trained on data/demo, a fresh 200-patient cohort
    .venv/bin/python bench/bench_scoring.py --n 100 --workers 2 --root data/demo

Three fused models are trained on the demo cohort's feature store (``make demo``), logged with
``omics_risk.scoring.pyfunc.log_model`` and registered in a temporary SQLite MLflow store, then each scores a fresh
synthetic nsclc-postop cohort (the demo's generator and sizes, another seed) through ``score_cohort`` with the model
URI, exactly what ``omics-risk score --model models:/NAME@challenger`` runs:

- ``tabular``: clinical + cfDNA fragments + methylation + ctDNA + metabolomics (no CT);
- ``tabular + CT radiomics``: the demo model: the same plus the CT radiomics table (pyradiomics on every scan);
- ``CT images``: the tabular modalities plus the 3D CT encoder on the pre- and post-operative crops
  (``model=fused_ct``), whose tensors are preprocessed from the scans (configs/features/ct.yaml).

Each model scores the cohort twice with the same work directory: **cold** (a fresh feature store and CT tensor
cache: extraction of every sample the model needs is included) and **warm** (the extraction cache is complete, so
the run re-reads the store and scores: extraction excluded). The per-stage wall times come from
``ScoreResult.timings`` (load = model from the registry, prepare = cohort checks, extract = features and CT tensors,
score = chunks, write = the output file).

Writes ``bench/results_scoring.md`` and prints the same markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import mlflow  # noqa: E402
from cohorts import DEMO, synthetic_cohort  # noqa: E402

from omics_risk.data.contract import load_cohort  # noqa: E402
from omics_risk.data.multimodal import load_multimodal  # noqa: E402
from omics_risk.data.synthetic import generate_cohort  # noqa: E402
from omics_risk.features.clinical import clinical_types  # noqa: E402
from omics_risk.features.ct import CTConfig  # noqa: E402
from omics_risk.models.fused import CTImageStore, FusedSurvivalModel  # noqa: E402
from omics_risk.scoring.frames import to_frame  # noqa: E402
from omics_risk.scoring.pyfunc import log_model  # noqa: E402
from omics_risk.tracking.mlflow_utils import setup_experiment  # noqa: E402
from omics_risk.workflows.scoring import score_cohort  # noqa: E402

DEFAULT_DEMO = ROOT / "data" / "demo"
RESULTS = ROOT / "bench" / "results_scoring.md"
TABULAR = ["cfdna", "ctdna", "methylation", "metabolomics"]
NETWORK = {"embed_dim": 16, "hidden": (), "dropout": 0.2, "fusion": "gated_attention", "k": 16, "n_members": 1,
           "patience": None, "validation_fraction": 0.0, "device": "cpu", "seed": 0}


def _train(root: Path, store: Path, name: str, ct_cfg: CTConfig, tmp: Path) -> tuple[object, dict]:
    """Fit one model on the demo cohort; return it with the extra log_model arguments it needs."""
    cohort = load_cohort(root)
    types = clinical_types(cohort.spec)
    extra: dict = {"feature_store": store, "training_cohort": root}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "CT images":
            data = load_multimodal(root, store, endpoint="rfs", modalities=TABULAR)
            images = CTImageStore(cohort, cfg=ct_cfg, cache_dir=tmp / "train_ct")
            model = FusedSurvivalModel(**NETWORK, epochs=2, clinical_types=types, use_ct_images=True,
                                       ct_widths=(8, 16, 32, 64), ct_batch_size=32, ct_augment=False,
                                       ct_timepoints=("preop", "postop1")).fit(data, images=images)
            extra.update(ct_config=ct_cfg, training_risk=model.predict_risk(data, images=images))
        else:
            mods = TABULAR if name == "tabular" else [*TABULAR, "ct"]
            data = load_multimodal(root, store, endpoint="rfs", modalities=mods)
            model = FusedSurvivalModel(**NETWORK, epochs=60, num_threads=1, clinical_types=types).fit(data)
    return model, {"frame": to_frame(data), **extra}


def _run(uri: str, cohort: Path, out: Path, work: Path, workers: int) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return score_cohort(uri, cohort, out, work_dir=work, workers=workers, progress=False, resume=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_DEMO, help="training cohort with features/")
    parser.add_argument("--n", type=int, default=200, help="patients of the scored cohort")
    parser.add_argument("--seed", type=int, default=8, help="seed of the scored cohort")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="extraction processes")
    args = parser.parse_args()
    # the default demo cohort is (re)generated when missing or stale; a cohort named with --root is used as it is
    root = synthetic_cohort(args.root, *DEMO).resolve() if args.root == DEFAULT_DEMO else args.root.resolve()
    store = root / "features"
    if not (store / "manifest.json").is_file():
        sys.exit(f"no feature store in {store}: run `make demo` (or `omics-risk extract {root}`) first")
    load_start = os.getloadavg()[0]
    ct_cfg = CTConfig.from_yaml(ROOT / "configs" / "features" / "ct.yaml")

    with tempfile.TemporaryDirectory(prefix="bench_scoring_") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        cohort = generate_cohort("nsclc-postop", n=args.n, seed=args.seed, out=tmp / "cohort", workers=args.workers,
                                 progress=False)
        gen_s = time.perf_counter() - t0
        scored = load_cohort(cohort)
        n_scans = len(scored.samples_of("ct"))
        n_samples = len(scored.samples)
        db = tmp / "mlflow.db"
        setup_experiment("bench-scoring", f"sqlite:///{db}")
        rows = []
        for i, name in enumerate(("tabular", "tabular + CT radiomics", "CT images")):
            t0 = time.perf_counter()
            model, extra = _train(root, store, name, ct_cfg, tmp)
            fit_s = time.perf_counter() - t0
            frame = extra.pop("frame")
            registered = f"bench-scoring-{i}"
            with warnings.catch_warnings(), mlflow.start_run():
                warnings.simplefilter("ignore")
                log_model(model, input_example_frame=frame, registered_model_name=registered, alias="challenger",
                          **extra)
            uri = f"models:/{registered}@challenger"
            work = tmp / f"work_{i}"
            for run in ("cold", "warm"):
                res = _run(uri, cohort, tmp / f"scores_{i}.parquet", work, args.workers)
                t = res.timings
                rows.append({"model": name, "run": run, "total": res.seconds, **t,
                             "pps": res.n_patients / res.seconds, "score_pps": res.n_patients / max(t["score"], 1e-9),
                             "counts": res.counts, "fit": fit_s})
                print(f"{name:<24} {run}: {res.seconds:7.1f} s  {res.n_patients / res.seconds:8.1f} patients/s  "
                      f"{ {k: round(v, 2) for k, v in t.items()} }", flush=True)
            shutil.rmtree(work, ignore_errors=True)

    load_end = os.getloadavg()[0]
    n = args.n
    lines = [
        "# Batch scoring: throughput of `omics-risk score`",
        "",
        f"`.venv/bin/python bench/bench_scoring.py --n {n} --workers {args.workers}`: three fused models trained on "
        f"`{root.relative_to(ROOT) if root.is_relative_to(ROOT) else root}` (cohort "
        f"`{load_cohort(root).spec.name}`), registered in a temporary SQLite MLflow store and loaded by URI "
        f"(`models:/NAME@challenger`), score a fresh synthetic nsclc-postop cohort of {n} patients "
        f"({n_samples} samples, {n_scans} CT scans; generated in {gen_s:.0f} s, not counted).",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), {args.workers} extraction processes; 1-min load "
        f"average {load_start:.1f} at the start, {load_end:.1f} at the end (a shared machine: compare rows of one "
        "run).",
        "",
        "| model | run | total s | patients/s | load s | prepare s | extract s | score s | write s | "
        "scoring-stage patients/s | ok / partial / failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["counts"]
        lines.append(f"| {r['model']} | {r['run']} | {r['total']:.1f} | **{r['pps']:.1f}** | {r['load']:.2f} | "
                     f"{r['prepare']:.2f} | {r['extract']:.1f} | {r['score']:.2f} | {r['write']:.2f} | "
                     f"{r['score_pps']:.0f} | {c.get('ok', 0)} / {c.get('partial', 0)} / {c.get('failed', 0)} |")
    lines += [
        "",
        "**cold**: a fresh work directory, so every sample the model needs is extracted (cfDNA fragmentomics, "
        "methylation, ctDNA, metabolomics; pyradiomics on every scan for the radiomics model; the CT crops, "
        "preprocessed in parallel into the tensor cache, for the CT-image model): extraction included. **warm**: the "
        "same cohort again with the extraction cache complete (`--no-resume`, so every chunk is scored again): "
        "extraction excluded, what remains is checking the cached store and scoring. *scoring-stage patients/s* is "
        "the chunk loop alone (feature rows read from Parquet per chunk, the network, statuses, shift counts, "
        "checkpoints; for the CT-image model also loading each patient's cached crops).",
        "Chunks of 256 patients; the model is loaded without unpickling (JSON + `torch.load(weights_only=True)` + "
        "skops). Statuses: `partial` = scored with some modality missing, as the synthetic cohort's patients lack "
        "some modalities by design.",
        "The CT-image scoring stage is one forward pass of the 3D network over every patient's crops per chunk (risk "
        "and survival from the same pass, `FusedSurvivalModel.predict_outputs`), in batches of 32 with torch's "
        "default threads, which slow several-fold when other jobs share the cores (compare the load averages above).",
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

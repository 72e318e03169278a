"""Training time per epoch of the CT encoder (MONAI 3D ResNet-10 on the pre- and post-operative CT crops) on CPU.

    .venv/bin/python bench/bench_ct_encoder.py                 # data/demo, 6 epochs per CT model (~2-3 min)
    .venv/bin/python bench/bench_ct_encoder.py --epochs 4 --root DIR

The demo cohort (300 nsclc-postop patients) goes through the real pipeline path of ``train.py model=fused_ct``: the
configs are composed with Hydra, the CT tensors come from ``pipeline._ct_images`` (features/ct.yaml preprocessing into
a ``CTTensorCache``, here a fresh temporary one, so the cold-cache preprocessing time is measured, then the warm-cache
load), and the models come from ``pipeline._factories``. Each model trains on every patient
for ``--epochs`` epochs without early stopping; the time per epoch is the loop's own ``seconds`` (batch assembly,
forward, backward, optimiser step) of the epochs after the first (warm-up, reported apart): the fastest (the cost
without interference from other jobs) and the median.

Models timed in the same run: ``fused_ct`` (clinical + omics tables + CT encoder), ``ct_deep`` (the CT encoder
alone, the staged design's deep radiomic network) and ``fused`` (the tabular fused model, full batch), whose ratio to
the CT models is the price of the CT arm. Torch keeps its default CPU threads for the CT models (the fused model's
own default, ``num_threads=None``); the tabular model uses 1 thread (its default, faster on tiny matrices). Every
model trains one network (``n_members=1``): an ensemble of k members costs k times the time per epoch.

Writes ``bench/results_ct_encoder.md`` and prints the same markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cohorts import DEMO, synthetic_cohort  # noqa: E402

from omics_risk.data.contract import load_cohort  # noqa: E402
from omics_risk.features.clinical import clinical_types  # noqa: E402
from omics_risk.workflows import training as pipeline  # noqa: E402

DEFAULT_DEMO = ROOT / "data" / "demo"
RESULTS = ROOT / "bench" / "results_ct_encoder.md"


def _cfg(model: str, root: Path, epochs: int, cache_dir: Path | None = None) -> object:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=[
            f"paths.root_dir={ROOT}", f"paths.output_dir={ROOT / 'bench' / 'results' / 'ct_encoder'}",
            f"model={model}", "data=cohort", f"data.root={root}", "tracking=none", "training.progress=false",
            "extract.run=false",
            "training.device=cpu", f"model.estimator.epochs={epochs}", "model.estimator.patience=null",
            "model.estimator.validation_fraction=0", "+model.estimator.refit=false", "model.estimator.n_members=1",
            *([f"model.ct_cache_dir={cache_dir}", "model.deep_radiomic_score=true"] if model == "fused_ct" else [])])


def _time_fit(model: object, data: object, images: object) -> dict[str, float]:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline._fit(model, data, images)
    total = time.perf_counter() - t0
    secs = [h["seconds"] for h in model.history_]
    rest = secs[1:] or secs
    return {"first": secs[0], "epoch": statistics.median(rest), "min": min(rest), "epochs": len(secs), "fit": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_DEMO)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    # the default demo cohort is (re)generated when missing or stale; a cohort named with --root is used as it is
    root = synthetic_cohort(args.root, *DEMO).resolve() if args.root == DEFAULT_DEMO else args.root.resolve()
    if not (root / "features" / "manifest.json").is_file():
        sys.exit(f"no feature store in {root}/features: run `make demo` (or `omics-risk extract {root}`) first")
    load_start = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="bench_ct_cache_") as tmp:
        cfg_ct = _cfg("fused_ct", root, args.epochs, cache_dir=Path(tmp))
        cfg_tab = _cfg("fused", root, max(args.epochs, 10))
        cohort = load_cohort(root)
        store = root / "features"
        data = pipeline._inputs(cfg_ct, cohort, store, images=False).data  # the store as it is (extract.run=false)
        types = clinical_types(cohort.spec)
        tps = pipeline.ct_timepoints_of(cohort, "ct")
        n_scans = len(cohort.samples_of("ct"))
        workers = cfg_ct.extract.workers or os.cpu_count()

        # cold: every scan through the deterministic MONAI pipeline into an empty tensor cache; warm: cache -> memory
        t0 = time.perf_counter()
        pipeline._ct_images(cfg_ct, cohort, store)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        images = pipeline._ct_images(cfg_ct, cohort, store)
        warm = time.perf_counter() - t0
        n_ct = sum(1 for p in data.patients if images.get(str(p)))

        ct_models = pipeline._factories(cfg_ct, data, types, tps)
        rows = []
        for name in ("fused_ct", pipeline.CT_ONLY):
            model = ct_models[name]()
            r = _time_fit(model, data, images)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.predict_risk(data, images=images)
            r["score"] = time.perf_counter() - t0
            rows.append({"model": name, **r, "threads": torch.get_num_threads(), "batch": model.ct_batch_size,
                         "arch": f"{model.ct_arch} widths {list(model.ct_widths)}"})
            print(f"{name}: {r['epoch']:.2f} s/epoch", flush=True)
        tab = pipeline._factories(cfg_tab, data, types)["fused"]()
        r = _time_fit(tab, data, None)
        t0 = time.perf_counter()
        tab.predict_risk(data)
        r["score"] = time.perf_counter() - t0
        rows.append({"model": "fused", **r, "threads": 1, "batch": "full", "arch": "tabular (linear encoders)"})
        print(f"fused: {r['epoch']:.4f} s/epoch", flush=True)
        ct_cfg = pipeline._ct_config(cfg_ct)

    n = len(data)
    tab_epoch = rows[-1]["min"]
    shown = root.relative_to(ROOT) if root.is_relative_to(ROOT) else root
    lines = [
        "# CT encoder: training time per epoch on CPU",
        "",
        f"`.venv/bin/python bench/bench_ct_encoder.py --epochs {args.epochs}` on `{shown}` (cohort "
        f"`{cohort.spec.name}`: {n} patients, {n_ct} with CT, {n_scans} scans at timepoints {', '.join(tps)}; crops "
        f"{list(ct_cfg.roi_size)} voxels at {list(ct_cfg.pixdim)} mm, 1 channel).",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} (default "
        f"{torch.get_num_threads()} threads); 1-min load average {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end. Times are wall-clock and grow several-fold when other jobs share "
        "the cores (torch's threads then wait on each other): compare rows of one run, not runs.",
        "",
        "CT tensors through `pipeline._ct_images` (what `train.py model=fused_ct` does before the folds): "
        f"cold cache {cold:.1f} s for {n_scans} scans ({n_scans / cold:.1f} scans/s, {workers} worker processes: "
        f"read, RAS, resample, crop, window, save), warm cache {warm:.1f} s (load every patient's tensors).",
        "",
        "| model | encoder | batch | threads | s/epoch (fastest) | s/epoch (median) | patients/s (training) | "
        "x tabular | first epoch s | scoring s (all patients) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['arch']} | {r['batch']} | {r['threads']} | {r['min']:.3f} | "
                     f"{r['epoch']:.3f} | {n / r['min']:.0f} | {r['min'] / tab_epoch:.0f} | {r['first']:.3f} | "
                     f"{r['score']:.2f} |")
    lines += [
        "",
        f"s/epoch: fastest and median of epochs 2-{rows[0]['epochs']} ({rows[-1]['epochs']} for the tabular model), "
        "one pass over every patient (no validation split, one network: an ensemble of k members costs k times as "
        "much). The fastest epoch is the cost without interference from other jobs; patients/s and the ratio to the "
        "tabular model use it. `fused_ct` = clinical + omics tables + 3D ResNet on both CT timepoints, "
        "`ct_deep` = the CT network alone (the deep radiomic risk score), `fused` = the tabular fused model (full "
        "batch).",
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()

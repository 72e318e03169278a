"""Benchmark of ``omics-risk monitor`` (issue 15): truth agreement at realistic sizes, and throughput.

(a) Truth agreement: generator plans (no files) of nsclc-advanced with a draw before every 21-day cycle and with a
    draw every day, and nsclc-postop with its serial post-operative draws; the rule's share of progressions
    preceded by an alert and its median lead time (bootstrap CIs over patients) against the truth at the draws
    actually taken (:mod:`omics_risk.monitoring.truth`), plus false alerts per patient-year among non-progressors.
(b) Throughput: a 10,000-patient x 20-draw cohort (6 tracked variants per draw: 1.2 M variant rows) written
    directly by numpy (kinetics like nsclc-advanced's, not the full generator), monitored end to end
    (``monitor_cohort``: read, states, tables, grid out of fold, report), against a peer in the same run: reading
    the same table and running ``features.ctdna.ctdna_dynamics``, the per-patient summary that existed before.

Usage: ``PYTHONPATH=src python bench/bench_monitor.py [--n 500] [--n-daily 300] [--patients 10000]
[--skip-truth] [--skip-throughput]``; writes bench/results_monitor.md. Run it on 2 cores
(``taskset -c 0,1``) for the issue's budget (< 60 s for the 10,000 x 20 cohort).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from omics_risk.data.readers import read_variant_table
from omics_risk.features.ctdna import ctdna_dynamics
from omics_risk.monitoring import truth as truth_mod
from omics_risk.monitoring.lucagen import lucagen_table
from omics_risk.monitoring.rules import RiseRule
from omics_risk.monitoring.truth import compare_with_truth
from omics_risk.workflows.monitor import monitor_cohort

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------ (a) truth agreement
def monitor_plan(kind: str, n: int, seed: int, rule: RiseRule, **opts: int) -> tuple[dict, dict, float]:
    t0 = time.perf_counter()
    patients, draws, truth = truth_mod.monitor_plan(kind, n, seed, rule, **opts)
    seconds = time.perf_counter() - t0
    cmp = compare_with_truth(patients, draws, truth, n_boot=1000, seed=0)
    table = lucagen_table(patients, draws, n_boot=1000, seed=0).to_dict()
    return cmp, table, seconds


def _ci(d: dict, who: str, pct: bool) -> str:
    f = (lambda x: f"{100 * x:.0f}%") if pct else (lambda x: f"{x:.0f}")
    return f"{f(d[f'{who}_value'])} ({f(d[f'{who}_ci_low'])}-{f(d[f'{who}_ci_high'])})"


def truth_section(n: int, n_daily: int) -> list[str]:
    cases = [
        ("nsclc-advanced, draw every 21-day cycle", "nsclc-advanced", n, RiseRule(name="lucagen"), {}),
        ("nsclc-advanced, draw every 21-day cycle", "nsclc-advanced", n,
         RiseRule(name="lucagen_confirmed", confirm=True), {}),
        ("nsclc-advanced, draw every day", "nsclc-advanced", n_daily, RiseRule(name="lucagen"), {"draw_every": 1}),
        ("nsclc-advanced, draw every day", "nsclc-advanced", n_daily,
         RiseRule(name="lucagen_confirmed", confirm=True), {"draw_every": 1}),
        ("nsclc-postop, serial post-operative draws", "nsclc-postop", n,
         RiseRule(name="redetection", redetection=True), {}),
    ]
    lines = ["## (a) Agreement with the generator's truth at the draws taken", "",
             "Seed 0. Share of progressions preceded by an alert and median lead time (days), the rule's and the "
             "truth's (first draw on or after the true onset of molecular progression vs the observed progression "
             "day), each with its 95% bootstrap CI over patients (1,000 resamples, the same for both); agree = the "
             "truth's value inside the rule's CI. Onset lead: progression day - true onset (no sampling delay). "
             "False alerts: per patient-year among non-progressors (follow-up to the last draw).", "",
             "| cohort | n | rule | preceded: rule | truth | agree | median lead: rule | truth | agree | onset lead "
             "| false alerts / pt-yr |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, kind, size, rule, opts in cases:
        cmp, table, plan_s = monitor_plan(kind, size, 0, rule, **opts)
        a, b = cmp["preceded_share"], cmp["median_lead_days"]
        fa = (f"{table['false_alerts_per_patient_year']:.3f} ({table['false_alerts_per_patient_year_ci_low']:.3f}-"
              f"{table['false_alerts_per_patient_year_ci_high']:.3f})")
        lines.append(f"| {label} | {size} | {rule.name} | {_ci(a, 'rule', True)} | {_ci(a, 'truth', True)} | "
                     f"{'yes' if a['agrees'] else 'no'} | {_ci(b, 'rule', False)} | {_ci(b, 'truth', False)} | "
                     f"{'yes' if b['agrees'] else 'no'} | {cmp['median_onset_lead_days']['truth_value']:.0f} | "
                     f"{fa} |")
        print(lines[-1], f"(plan and monitor {plan_s:.0f} s)", flush=True)
    return lines


# ------------------------------------------------------------------------------------------ (b) throughput
def write_big_cohort(root: Path, n: int, draws: int, variants: int, seed: int = 0) -> int:
    """A cohort of ``n`` patients x ``draws`` draws on irregular days, ``variants`` tracked variants each."""
    rng = np.random.default_rng(seed)
    pids = np.array([f"M{i:06d}" for i in range(n)])
    gaps = np.where(rng.random((n, draws - 1)) < 0.1, 28, 21) + rng.integers(-2, 3, (n, draws - 1))
    days = np.concatenate([np.zeros((n, 1), int), np.cumsum(gaps, axis=1)], axis=1)
    tf0 = 10 ** rng.uniform(-4.5, -1.0, n)
    nadir = np.exp(-rng.uniform(0, 5, n))
    prog = rng.random(n) < 0.6
    t_res = rng.uniform(60, 500, n)
    growth = np.log(2) / rng.uniform(15, 60, n)
    level = nadir[:, None] + (1 - nadir[:, None]) * np.exp(-days / 30)
    level = level + np.where(prog[:, None], np.exp(growth[:, None] * (days - t_res[:, None])), 0)
    tf = np.minimum(tf0[:, None] * level, 0.5)
    depth = rng.integers(2000, 8000, (n, draws, variants))
    vaf_true = tf[:, :, None] / 2 * rng.uniform(0.3, 1.0, (n, 1, variants))
    alt = rng.binomial(depth, vaf_true + 8e-5)
    sid = np.char.add(np.char.add(pids[:, None], "_c"), np.arange(1, draws + 1).astype(str)[None, :])
    rows = pd.DataFrame({
        "patient_id": np.repeat(pids, draws * variants), "sample_id": np.repeat(sid.ravel(), variants),
        "day": np.repeat(days.ravel(), variants), "gene": np.tile([f"G{k}" for k in range(variants)], n * draws),
        "variant": "p.X1Y", "vaf": np.round(alt / depth, 6).ravel(), "depth": depth.ravel(), "alt_count": alt.ravel()})
    (root / "ctdna").mkdir(parents=True)
    rows.to_csv(root / "ctdna" / "variants.csv", index=False)
    samples = pd.DataFrame({"patient_id": np.repeat(pids, draws), "sample_id": sid.ravel(), "modality": "ctdna",
                            "timepoint": np.tile([f"c{k}" for k in range(1, draws + 1)], n),
                            "day": days.ravel(), "path": "ctdna/variants.csv"})
    samples.to_csv(root / "samples.csv", index=False)
    pfs = np.where(prog, t_res + rng.uniform(20, 90, n), days[:, -1] + rng.uniform(0, 60, n)).round()
    pd.DataFrame({"patient_id": pids, "age": rng.integers(40, 85, n), "pfs_time": pfs,
                  "pfs_event": prog.astype(int)}).to_csv(root / "clinical.csv", index=False)
    (root / "cohort.yaml").write_text("contract_version: 1\nname: bench-monitor\ntime_unit: days\nendpoints:\n"
                                      "  pfs: {type: survival, time: pfs_time, event: pfs_event}\nclinical:\n"
                                      "  age: numeric\nmodalities:\n  ctdna: {format: variant_table}\n")
    return len(rows)


def throughput_section(n: int, draws: int, variants: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cohort"
        t0 = time.perf_counter()
        n_rows = write_big_cohort(root, n, draws, variants)
        gen_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        table = read_variant_table(root / "ctdna" / "variants.csv")
        peer_dyn = ctdna_dynamics(table, level="pooled_vaf")
        peer_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = monitor_cohort(root, Path(tmp) / "out", progress=False)
        full_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        monitor_cohort(root, Path(tmp) / "out2", progress=False, grid=False, report=False)
        core_s = time.perf_counter() - t0
    assert len(result.patients) == n and len(peer_dyn) == n
    cpu = f"{os.cpu_count()} CPUs visible, {len(os.sched_getaffinity(0))} usable" if hasattr(os, "sched_getaffinity") \
        else f"{os.cpu_count()} CPUs"
    return ["## (b) Throughput", "",
            f"{n:,} patients x {draws} draws x {variants} variants = {n_rows:,} variant rows (written in "
            f"{gen_s:.1f} s); {platform.processor() or platform.machine()}, {cpu}, Python "
            f"{sys.version.split()[0]}.", "",
            "| what | wall time | rows / s |", "|---|---|---|",
            f"| peer: read_variant_table + ctdna_dynamics (per-patient summary only) | {peer_s:.1f} s | "
            f"{n_rows / peer_s:,.0f} |",
            f"| omics-risk monitor, no grid, no report (samples/patients/summary) | {core_s:.1f} s | "
            f"{n_rows / core_s:,.0f} |",
            f"| omics-risk monitor, full (grid of 10 rule settings out of fold, report with figures) | "
            f"{full_s:.1f} s | {n_rows / full_s:,.0f} |",
            "", f"Budget: < 60 s for the full run: {'met' if full_s < 60 else 'NOT met'}."]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--n-daily", type=int, default=300)
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--variants", type=int, default=6)
    ap.add_argument("--skip-truth", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results_monitor.md")
    args = ap.parse_args()
    lines = ["# Monitoring benchmark (bench/bench_monitor.py)", ""]
    if not args.skip_truth:
        lines += [*truth_section(args.n, args.n_daily), ""]
    if not args.skip_throughput:
        lines += [*throughput_section(args.patients, args.draws, args.variants), ""]
        print("\n".join(lines[-8:]))
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Simulated follow-up on a synthetic nsclc-postop cohort with its true onsets: informative vs uninformative risk.

    .venv/bin/python bench/bench_surveillance.py                                  # 1,000 patients, seed 7
    .venv/bin/python bench/bench_surveillance.py --cohort DIR --model models:/omics-risk-rfs@challenger \\
        --tracking-uri sqlite:///mlflow.db                                         # and a trained model's curves

The same cohort (generated with ``omics-risk synth --kind nsclc-postop`` when ``--cohort`` does not exist) is run
through ``run_surveillance`` with each source of predicted curves:

* **truth**: a Weibull PH fit of the true onsets on the generator's own risk score (an informative model, the best
  one could do with that score);
* **marginal**: the cohort's Kaplan-Meier curve for everyone (a model with no individual information);
* **model** (with ``--model``): a registered model's curves, scored with ``omics-risk score``'s code.

For each it reports every schedule's scans per patient, median delay and share found within 90 days (95% bootstrap
CIs), the risk-adapted curve read at the 6-monthly schedule's scan count, the lowest risk group's recurrence and the
trial. Writes ``bench/results_surveillance.md`` and the run folders under ``bench/results/surveillance/``
(git-ignored).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from omics_risk.cli import main as cli  # noqa: E402
from omics_risk.surveillance.settings import SurveillanceSettings  # noqa: E402
from omics_risk.workflows.surveil import SurveilResult, run_surveillance  # noqa: E402

LABELS = {"truth": "informative (the generator's true risk)", "marginal": "uninformative (cohort KM for everyone)",
          "model": "trained model"}


def _ci(v: float, lo: float, hi: float, d: int) -> str:
    return f"{v:.{d}f} ({lo:.{d}f}–{hi:.{d}f})"


def _section(name: str, r: SurveilResult, seconds: float, model: str | None) -> list[str]:
    lines = [f"### Predicted curves: {LABELS[name]}" + (f" `{model}`" if model else ""), "",
             f"{r.n_usable} patients simulated, {r.n_recurrences} recurrences within 5 years; {seconds:.0f} s.", "",
             "| schedule | CT scans / patient | ctDNA draws / patient | median delay (days) | mean delay (days) | "
             "found ≤ 90 days | interval recurrences |",
             "|---|---|---|---|---|---|---|"]
    for x in r.schedules.itertuples():
        lines.append(f"| {x.schedule} | {_ci(x.scans_per_patient, x.scans_per_patient_ci_low, x.scans_per_patient_ci_high, 2)} | "  # noqa: E501
                     f"{x.draws_per_patient:.1f} | "
                     f"{_ci(x.median_delay_days, x.median_delay_days_ci_low, x.median_delay_days_ci_high, 0)} | "
                     f"{_ci(x.mean_delay_days, x.mean_delay_days_ci_low, x.mean_delay_days_ci_high, 0)} | "
                     f"{_ci(x.within_window, x.within_window_ci_low, x.within_window_ci_high, 2)} | "
                     f"{_ci(x.interval_share, x.interval_share_ci_low, x.interval_share_ci_high, 2)} |")
    m = r.matched
    if m is not None:
        lines += ["", f"Risk-adapted curve at ct_6m's {m.scans:.2f} scans per patient: median delay "
                      f"{_ci(m.delay.value, m.delay.low, m.delay.high, 0)} days vs "
                      f"{_ci(m.reference_delay.value, m.reference_delay.low, m.reference_delay.high, 0)}, difference "
                      f"**{_ci(m.difference.value, m.difference.low, m.difference.high, 0)}** days; at ct_6m's median "
                      f"delay it needs **{_ci(m.scans_saved_at_equal_delay.value, m.scans_saved_at_equal_delay.low, m.scans_saved_at_equal_delay.high, 2)}** "  # noqa: E501
                      "fewer scans per patient (NaN: the curve does not reach that delay)."]
    t = r.trial
    if t:
        s = t["scans_saved_per_patient"]
        lines += ["", f"Trial {t['experimental']} vs {t['standard']} (share found ≤ 90 days "
                      f"{t['p_window_experimental']:.3f} vs {t['p_window_standard']:.3f}; {t['p_recurrence']:.3f} "
                      f"recur), margin {t['margin']:g}, one-sided alpha {t['alpha']:g}, power {t['power']:g}: "
                      f"{t['patients_per_arm_closed_form']} patients per arm (closed form), "
                      f"{t['patients_per_arm_simulated']} (simulated); CT scans saved per patient "
                      f"{_ci(s.value, s.low, s.high, 2)}."]
    return [*lines, ""]


def _ctdna_scenarios(a: argparse.Namespace) -> list[str]:
    """The trial when ctDNA is less sensitive (and without the yearly CT backbone): what the pilot must measure."""
    lines = ["### The trial under other ctDNA assumptions", "",
             "ctDNA-triggered follow-up (draws every 3 months) against CT every 6 months; share of recurrences found "
             "≤ 90 days, CT scans saved per patient (paired bootstrap CI) and patients per arm for non-inferiority "
             "at margins 0.05 and 0.10 (closed form / simulated).", "",
             "| ctDNA sensitivity | CT backbone | found ≤ 90 d: ctDNA | found ≤ 90 d: CT 6-monthly "
             "| CT saved / patient | n per arm, margin 0.05 | n per arm, margin 0.10 |",
             "|---|---|---|---|---|---|---|"]
    base = SurveillanceSettings().schedules
    for sens in (0.5, 0.7, 0.9):
        for backbone in ([{"every_months": 12}], []):
            sched = {"ct_6m": base["ct_6m"], "ctdna_triggered": {**base["ctdna_triggered"], "sensitivity": sens,
                                                                 "backbone": backbone}}
            s = SurveillanceSettings.from_mapping({"schedules": sched, "trial": {"margins": [0.05, 0.10]}},
                                                  risk_from="marginal", bootstrap=200)
            r = run_surveillance(a.cohort, a.out / f"ctdna_{sens}_{len(backbone)}", settings=s, progress=False)
            t = r.trial
            tab = r.paths.get("trial")
            sizes = {}
            if tab is not None:
                # lazy: pandas only here (the trial table)
                import pandas as pd

                for row in pd.read_csv(tab).itertuples():
                    sizes[round(row.margin, 2)] = (f"{row.patients_per_arm_closed_form} / "
                                                   f"{row.patients_per_arm_simulated}")
            sv = t["scans_saved_per_patient"]
            lines.append(f"| {sens:g} | {'yearly' if backbone else 'none'} | {t['p_window_experimental']:.3f} | "
                         f"{t['p_window_standard']:.3f} | {_ci(sv.value, sv.low, sv.high, 2)} | "
                         f"{sizes.get(0.05, '–')} | {sizes.get(0.1, '–')} |")
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cohort", type=Path, default=ROOT / "bench" / "results" / "surveillance" / "cohort")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--model", default=None)
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "surveillance")
    ap.add_argument("--md", type=Path, default=ROOT / "bench" / "results_surveillance.md")
    ap.add_argument("--note", default="", help="a sentence on the model (how it was trained), put under the title")
    a = ap.parse_args()
    if not a.cohort.is_dir():
        cli(["synth", "--kind", "nsclc-postop", "--n", str(a.n), "--seed", str(a.seed), "--out", str(a.cohort),
             "--fragments", "2000", "--ct-shape", "24", "24", "12", "--quiet"])
    sources = ["truth", "marginal"] + (["model"] if a.model else [])
    body = ["# Surveillance schedules on a synthetic nsclc-postop cohort", "",
            f"`bench/bench_surveillance.py` on `{a.cohort.name}` ({a.n} patients, seed {a.seed}; true onsets from "
            f"truth/patients.csv), {a.bootstrap} bootstrap resamples, default settings "
            "(configs/surveillance/default.yaml: 5-year horizon, 90-day window, symptoms exponential with mean 270 "
            "days, ctDNA every 3 months with sensitivity 0.9 and specificity 0.98 plus a yearly CT).", "",
            *([a.note, ""] if a.note else [])]
    for src in sources:
        s = SurveillanceSettings(risk_from=src, bootstrap=a.bootstrap)
        t0 = time.perf_counter()
        r = run_surveillance(a.cohort, a.out / src, settings=s, model=a.model if src == "model" else None,
                             tracking_uri=a.tracking_uri, progress=False)
        sec = time.perf_counter() - t0
        print(r.to_text())
        body += _section(src, r, sec, a.model if src == "model" else None)
    body += _ctdna_scenarios(a)
    a.md.write_text("\n".join(body))
    print(f"wrote {a.md}")


if __name__ == "__main__":
    main()

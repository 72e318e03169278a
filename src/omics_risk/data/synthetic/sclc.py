"""sclc: treatment-naive limited / extensive-stage SCLC on first-line chemo-immunotherapy (NCT07026669).

Latent biology: burden B, aggressiveness A, immune response I and chemosensitivity S. The realised
sensitivity ``S_eff`` (S, I and an unobserved part) sets the log cell kill by day 42, which drives tumour
shrinkage on the c3d1 CT, the on-treatment fall of the (high) tumour fraction in plasma and, through RECIST
measurement, the response endpoint; progression-free survival has log-hazard
``-1.05 S_eff + 0.6 A + 0.45 B + clinical``. Tumour assessments every 6 weeks (9 after a year) make PFS
interval-censored; ``best_response`` is the RECIST category (not declared under ``clinical:`` since it is
the outcome). Day 0 is cycle 1 day 1; baseline samples at day -14..0, on-treatment at c3d1 (~day 42).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from omics_risk.data.synthetic import ctdna as ctdna_mod
from omics_risk.data.synthetic import fragments as frag
from omics_risk.data.synthetic.biology import (
    DAYS_PER_YEAR,
    administrative_censoring,
    assessment_schedule,
    correlated_latents,
    ordinal_from_score,
    radiological_pfs,
    set_missing,
    standardize,
    weibull_ph_time,
)
from omics_risk.data.synthetic.cohort import (
    DETECTION_LIMIT,
    CohortPlan,
    PatientJob,
    SynthOptions,
    sample_row,
    streams,
)
from omics_risk.data.synthetic.genome import Genome
from omics_risk.data.synthetic.serial import ctdna_draw, molecular_progression, onset_columns

KIND = "sclc"
STAGES = ["limited", "extensive"]
PFS_SHAPE, PFS_MEDIAN = 1.8, 175.0  # Weibull PFS: median ~5.5 months at eta = 0
TF_DETECT = 1e-3  # tumour fraction a tracked panel reliably detects
LEAD_MEDIAN = 35.0  # days from the resistant clone's doubling over the nadir to radiological progression
CYCLE, INDUCTION_CYCLES = 21, 4


def ctdna_level(day: np.ndarray, kill: np.ndarray, extra: np.ndarray, f_mol: np.ndarray, t_mol: np.ndarray,
                growth: np.ndarray) -> np.ndarray:
    """Viable tumour relative to baseline: the sensitive bulk (log cell kill ``kill`` by day 42, ``extra`` more
    by day 84) plus a resistant clone at ``f_mol`` on day ``t_mol``, growing at ``growth`` per day."""
    d = np.maximum(day, 0)
    v_s = np.exp(-kill * np.minimum(d, 42) / 42 - extra * np.clip((d - 42) / 42, 0, 1))
    return v_s + f_mol * np.exp(growth * (d - t_mol))


def shrink_ratio(v: np.ndarray, scar: np.ndarray) -> np.ndarray:
    """Diameter relative to baseline for viable-volume fraction ``v``; non-viable scar does not shrink."""
    return scar + (1 - scar) * np.cbrt(v)


def _median(x: pd.Series) -> float | None:
    return float(x.median()) if len(x) else None


def plan(n: int, seed: np.random.SeedSequence, opts: SynthOptions, genome: Genome) -> CohortPlan:
    cohort_ss, patient_ss = seed.spawn(2)
    r = streams(cohort_ss, ["latent", "clinical", "outcome", "missing", "ct", "cfdna", "ctdna"])
    pids = [f"SC{i + 1:04d}" for i in range(n)]
    lat = correlated_latents(r["latent"], n, ["burden", "aggressiveness", "immune", "sensitivity"],
                             {("burden", "aggressiveness"): 0.3, ("sensitivity", "aggressiveness"): 0.2})
    B, A, imm, S = (lat[c].to_numpy() for c in lat.columns)

    rc = r["clinical"]
    age = np.clip(np.round(rc.normal(66, 8, n)), 40, 88)
    male = rc.random(n) < 0.58
    su = rc.random(n)
    smoking = np.where(su < 0.02, "never", np.where(su < 0.38, "former", "current"))
    pack_years = np.where(smoking == "never", 0, np.round(np.exp(rc.normal(np.log(45), 0.4, n))))
    stage = ordinal_from_score(0.9 * B + 0.45 * rc.normal(0, 1, n), STAGES, [0.3, 0.7])
    extensive = stage == "extensive"
    ecog = ordinal_from_score(0.5 * B + 0.3 * A + 0.03 * (age - 66) + 0.8 * rc.normal(0, 1, n), ["0", "1", "2"],
                              [0.3, 0.58, 0.12]).astype(int)
    ldh = np.round(210 * np.exp(0.35 * B + 0.2 * A + 0.25 * rc.normal(0, 1, n)))
    nse = np.round(25 * np.exp(0.6 * B + 0.5 * rc.normal(0, 1, n)), 1)
    liver = (extensive & (rc.random(n) < expit(-1.2 + 0.8 * B))).astype(int)
    brain = (extensive & (rc.random(n) < 0.18)).astype(int)
    s_eff = standardize(0.75 * S + 0.3 * imm + 0.6 * rc.normal(0, 1, n))

    # Plasma tumour fraction: high at baseline, falls with the log cell kill by day 42.
    tf0 = np.clip(10 ** (np.log10(0.12) + 0.45 * B + 0.15 * A + rc.normal(0, 0.3, n)), 5e-4, 0.85)
    kill = 1.5 + 1.3 * s_eff + rc.normal(0, 0.25, n)
    v42 = np.exp(-kill)
    tf42 = tf0 * v42 / (1 - tf0 + tf0 * v42)
    scar = rc.uniform(0.08, 0.3, n)

    # ---- outcomes
    ro = r["outcome"]
    contrib = {"risk_sensitivity": -1.05 * s_eff, "risk_aggressiveness": 0.6 * A, "risk_burden": 0.45 * B,
               "risk_clinical": 0.2 * ecog + 0.3 * liver + 0.2 * brain}
    eta = sum(contrib.values())
    eta = eta - eta.mean()
    t_prog = weibull_ph_time(ro, eta, shape=PFS_SHAPE, median_days=PFS_MEDIAN)
    t_death_pre = ro.exponential(DAYS_PER_YEAR / (0.06 * np.exp(0.5 * ecog)), n)
    t_pps = weibull_ph_time(ro, 0.5 * eta, shape=1.2, median_days=230)
    cens = administrative_censoring(ro, n, 0.6, 2.5, 0.05)
    t_death = np.minimum(t_death_pre, t_prog + t_pps)
    pfs_time = np.zeros(n)
    pfs_event = np.zeros(n, dtype=int)
    first_assess = np.zeros(n)
    scheds = []
    for i in range(n):
        sched = assessment_schedule(ro, cens[i] + 400)
        scheds.append(sched)
        first_assess[i] = sched[0]
        pfs_time[i], pfs_event[i], _ = radiological_pfs(sched, t_prog[i], t_death[i], cens[i])
    prog_seen = np.array([bool(e) and t_prog[i] <= pfs_time[i] and pfs_time[i] in scheds[i]
                          for i, e in enumerate(pfs_event)])
    os_time = np.maximum(np.ceil(np.minimum(t_death, cens)), pfs_time)
    os_event = (t_death <= cens).astype(int)

    # RECIST best response: continued shrinkage after day 42 with noise, measurement error, new lesions.
    v_best = v42 * np.exp(-0.4 * np.maximum(kill, 0) + ro.normal(0, 0.45, n))
    ratio_obs = shrink_ratio(v_best, scar) * np.exp(ro.normal(0, 0.1, n))
    new_lesion = ro.random(n) < expit(-3.0 - 1.2 * s_eff)
    prog_at_first = (pfs_event == 1) & (pfs_time <= first_assess) & (t_prog <= pfs_time)
    not_evaluable = (np.minimum(t_death, cens) < first_assess) & ~prog_at_first
    best = np.where(ratio_obs <= 0.7, "PR", "SD")
    best = np.where((v_best < 0.004) & (scar < 0.12), "CR", best)
    best = np.where(prog_at_first | new_lesion | (ratio_obs >= 1.2), "PD", best)
    best = np.where(not_evaluable, "NE", best)
    response = np.where(best == "NE", np.nan, np.isin(best, ["CR", "PR"]).astype(float))
    # True probability of response given the latent biology (Monte Carlo over the unobserved noise).
    mc = 400
    vb = (v42 * np.exp(-0.4 * np.maximum(kill, 0)))[:, None] * np.exp(ro.normal(0, 0.45, (n, mc)))
    ro_mc = shrink_ratio(vb, scar[:, None]) * np.exp(ro.normal(0, 0.1, (n, mc)))
    p_prog_first = 1 - np.exp(-(first_assess / (PFS_MEDIAN / np.log(2) ** (1 / PFS_SHAPE))) ** PFS_SHAPE * np.exp(eta))
    p_resp = np.mean(ro_mc <= 0.7, axis=1) * (1 - expit(-3.0 - 1.2 * s_eff)) * (1 - p_prog_first)
    true_logit_resp = logit(np.clip(p_resp, 1e-4, 1 - 1e-4))

    clinical = pd.DataFrame({
        "patient_id": pids, "age": age.astype(int), "sex": np.where(male, "male", "female"), "smoking": smoking,
        "pack_years": pack_years.astype(int), "stage": stage, "ecog": ecog, "ldh": ldh.astype(int), "nse": nse,
        "liver_mets": liver, "brain_mets": brain, "best_response": best,
        "response": pd.array(np.where(np.isnan(response), pd.NA, response), dtype="Int64"),
        "pfs_time": pfs_time.astype(int), "pfs_event": pfs_event, "os_time": os_time.astype(int),
        "os_event": os_event,
    })
    set_missing(r["missing"], clinical, {"pack_years": 0.05, "smoking": 0.02, "ldh": 0.05, "nse": 0.12,
                                         "ecog": 0.02})

    # ---- samples
    rm = r["missing"]
    on_treatment_42 = np.minimum(np.minimum(t_death, cens), np.where(pfs_event == 1, pfs_time, np.inf)) >= 40
    no_samples = rm.random(n) < 0.02
    has_ct0 = ~no_samples & (rm.random(n) > 0.03)
    has_ct1 = ~no_samples & ~not_evaluable & (rm.random(n) > 0.08)
    has_bl = ~no_samples & (rm.random(n) > 0.05)
    has_c3 = ~no_samples & on_treatment_42 & (rm.random(n) > 0.10)
    meth_ok = rm.random((n, 2)) > 0.04
    rct = r["ct"]
    diam = np.clip(np.exp(np.log(48) + 0.35 * B + 0.15 * rct.normal(0, 1, n)), 15, 90)
    r0 = np.clip(diam / 2, 6, 32)
    ratio42 = shrink_ratio(v42, scar)
    r1 = np.clip(r0 * ratio42, 2.5, 34)
    het = expit(0.6 * A + 0.7 * rct.normal(0, 1, n))
    nec = expit(0.8 * A + 0.6 * B - 1.0 + 0.5 * rct.normal(0, 1, n))
    irr = expit(0.5 * A + 0.8 * rct.normal(0, 1, n) - 0.5)
    spic = expit(0.4 * A + 0.8 * rct.normal(0, 1, n) - 2.0)
    central = rct.random(n) < 0.85
    emph = np.where(smoking == "never", 0.0, np.clip(pack_years / 120 * rct.uniform(0.3, 1.2, n), 0, 0.3))
    day_ct0 = -rct.integers(3, 15, n)
    day_ct1 = first_assess - rct.integers(0, 4, n)
    day_bl = -rct.integers(0, 8, n)
    day_c3 = 42 + rct.integers(-2, 3, n)
    has_ct1 &= day_ct1 <= os_time  # no sample after death or last follow-up
    has_c3 &= day_c3 <= os_time
    rcf = r["cfdna"]
    instability = 1.2 * np.exp(0.3 * A + 0.2 * rcf.normal(0, 1, n))

    # ---- serial ctDNA kinetics: the resistant clone doubles over the nadir ``lead`` days before progression
    rcd = r["ctdna"]
    lead = np.exp(np.log(LEAD_MEDIAN) + 0.5 * rcd.normal(0, 1, n))
    doubling = np.clip(np.exp(np.log(25) - 0.25 * A + 0.25 * rcd.normal(0, 1, n)), 8, 80)
    growth = np.log(2) / doubling
    extra = 0.4 * np.maximum(kill, 0)
    t_mol = np.maximum(t_prog - lead, CYCLE)
    nadir_days = np.arange(0, 85)[None, :]  # the bulk's nadir up to t_mol (a growing bulk's nadir is day 0)
    bulk = ctdna_level(np.where(nadir_days <= t_mol[:, None], nadir_days, 0), kill[:, None], extra[:, None], 0.0,
                       0.0, 0.0)
    f_mol = 3 * bulk.min(axis=1)

    def tf_of(day: np.ndarray, idx: int | tuple) -> np.ndarray:
        level = ctdna_level(day, kill[idx], extra[idx], f_mol[idx], t_mol[idx], growth[idx])
        return np.minimum(tf0[idx] * level / (1 - tf0[idx] + tf0[idx] * level), 0.9)

    grid = np.arange(0, 1200)
    mol_day = molecular_progression(grid, tf_of(grid[None, :], (slice(None), None)), TF_DETECT, CYCLE)
    ctdna_rows: list[pd.DataFrame] = []

    rows, jobs, tsamp, cna_rows = [], [], [], []
    child = patient_ss.spawn(n)
    for i, pid in enumerate(pids):
        job = PatientJob(pid, child[i], "sclc")
        scan = {"noise_hu": float(rct.uniform(12, 28)), "blur_vox": float(rct.uniform(0.5, 0.9)),
                "reference_radius_mm": float(r0[i]), "emphysema": float(emph[i]),
                "site": "central" if central[i] else "peripheral", "irregularity": float(irr[i]),
                "spiculation": float(spic[i])}
        for has, tp, day, rad, necro, hh in ((has_ct0, "baseline", day_ct0, r0, nec, het),
                                             (has_ct1, "c3d1", day_ct1, r1,
                                              np.clip(nec + 0.25 * (1 - ratio42), 0, 0.9), np.clip(het + 0.1, 0, 1))):
            if has[i]:
                row = sample_row(pid, "ct", tp, day[i], f"ct/{pid}_{tp}.nii.gz", f"ct/{pid}_{tp}_mask.nii.gz")
                job.ct.append({"sample_id": row["sample_id"], "path": row["path"], "mask_path": row["mask_path"],
                               "params": {**scan, "radius_mm": float(rad[i]), "necrosis": float(necro[i]),
                                          "heterogeneity": float(hh[i])}})
                rows.append(row)
                tsamp.append({"sample_id": row["sample_id"], "true_radius_mm": round(float(rad[i]), 3)})
        arm_cn, focal, seg = frag.tumour_copy_number(rcf, genome, float(instability[i]), frag.SCLC_ARM_PRIORS,
                                                     1.0, pid)
        cna_rows.append(seg)
        job.arm_cn, job.focal = arm_cn, focal
        for k, (has, tp, day, tf) in enumerate(((has_bl, "baseline", day_bl, tf0), (has_c3, "c3d1", day_c3, tf42))):
            if not has[i]:
                continue
            row = sample_row(pid, "cfdna", tp, day[i], f"cfdna/{pid}_{tp}.frag.gz")
            job.fragments.append({"sample_id": row["sample_id"], "path": row["path"], "tumour_fraction": float(tf[i])})
            rows.append(row)
            tsamp.append({"sample_id": row["sample_id"], "tumour_fraction": float(tf[i])})
            if meth_ok[i, k]:
                row = sample_row(pid, "methylation", tp, day[i], f"methylation/{pid}_{tp}.cov.gz")
                job.methylation.append({"sample_id": row["sample_id"], "path": row["path"],
                                        "tumour_fraction": float(tf[i])})
                rows.append(row)
                tsamp.append({"sample_id": row["sample_id"], "tumour_fraction": float(tf[i])})
        # Serial ctDNA before every induction cycle, then at each tumour assessment, until pfs_time.
        panel = ctdna_mod.variant_panel(rcd, int(rcd.integers(4, 11)), ctdna_mod.SCLC_GENES)
        draws = [(f"c{k + 1}", k * CYCLE) for k in range(INDUCTION_CYCLES)]
        draws += [(f"a{k + 1:02d}", d) for k, d in enumerate(scheds[i]) if d > (INDUCTION_CYCLES - 1) * CYCLE]
        for k, (tp, day) in enumerate(draws):
            if day > pfs_time[i] or no_samples[i] or rcd.random() < (0.05 if k == 0 else 0.08):
                continue
            tf = float(tf_of(np.array([day]), i)[0])
            row, obs, truth = ctdna_draw(rcd, pid, tp, day, panel, tf, (2000, 8000))
            ctdna_rows.append(obs)
            rows.append(row)
            tsamp.append(truth)
        if job.ct or job.fragments or job.methylation:
            jobs.append(job)

    truth_patients = pd.DataFrame({
        "patient_id": pids, "true_risk_response": np.round(true_logit_resp, 5), "true_risk_pfs": np.round(eta, 5),
        "true_risk_os": np.round(eta, 5), "true_response_probability": np.round(p_resp, 5),
        "latent_burden": B.round(5), "latent_aggressiveness": A.round(5), "latent_immune": imm.round(5),
        "latent_sensitivity": S.round(5), "latent_realised_sensitivity": s_eff.round(5),
        "log_cell_kill_day42": kill.round(5), "tf_baseline": tf0, "tf_c3d1": tf42,
        **{k: np.round(v, 5) for k, v in contrib.items()},
        "progression_day_true": np.round(t_prog, 1), "death_day_true": np.round(t_death, 1),
        "censoring_day": np.round(cens, 1), "molecular_progression_day": mol_day,
        "resistant_doubling_days": np.round(doubling, 2), "radiological_progression_seen": prog_seen.astype(int),
        **onset_columns(mol_day, t_prog, np.where(prog_seen, pfs_time, np.nan), os_time),
    })
    tp_lead = (truth_patients["radiological_onset_day"] - truth_patients["molecular_onset_day"]).dropna()
    views = {
        "clinical": pd.DataFrame({"ext": extensive, "ecog": ecog, "ldh": np.log(ldh), "nse": np.log(nse),
                                  "liver": liver, "brain": brain, "age": age}),
        "ct_baseline": pd.DataFrame({"logr": np.log(r0), "het": het, "nec": nec, "irr": irr}),
        "ct_c3d1": pd.DataFrame({"logr": np.log(r1), "shrink": np.log(ratio42)}),
    }
    for mod in ("cfdna", "methylation"):
        lod = DETECTION_LIMIT[mod]
        views[f"{mod}_baseline"] = pd.DataFrame({"logtf": np.log(np.maximum(tf0, lod))})
        views[f"{mod}_c3d1"] = pd.DataFrame({"logtf": np.log(np.maximum(tf42, lod)),
                                             "drop": np.log(np.maximum(tf42, lod) / np.maximum(tf0, lod))})
        views[mod] = pd.concat([views[f"{mod}_baseline"], views[f"{mod}_c3d1"]], axis=1)
    views["ct"] = pd.concat([views["ct_baseline"], views["ct_c3d1"]], axis=1)
    views["all"] = pd.concat([views["clinical"], views["ct"], views["cfdna"]], axis=1)
    # What is measurable before treatment (index date) and by the c3d1 draw: the ceilings of the two questions of
    # task=sclc_response (bench/bench_sclc_times.py).
    views["pre_treatment"] = pd.concat([views["clinical"], views["ct_baseline"], views["cfdna_baseline"],
                                        views["methylation_baseline"]], axis=1)
    views["on_treatment"] = pd.concat([views["pre_treatment"], views["ct_c3d1"], views["cfdna_c3d1"],
                                       views["methylation_c3d1"]], axis=1)
    return CohortPlan(
        kind=KIND, name=f"{KIND}-synthetic-n{n}", tumour_type="sclc", clinical=clinical,
        clinical_types={"age": "numeric", "sex": "categorical", "smoking": "categorical", "pack_years": "numeric",
                        "stage": {"type": "ordinal", "levels": STAGES}, "ecog": "numeric", "ldh": "numeric",
                        "nse": "numeric", "liver_mets": "binary", "brain_mets": "binary"},
        endpoints={"response": {"type": "binary", "column": "response"},
                   "pfs": {"type": "survival", "time": "pfs_time", "event": "pfs_event"},
                   "os": {"type": "survival", "time": "os_time", "event": "os_event"}},
        modalities={"ct": {"format": "image"}, "cfdna": {"format": "fragments"},
                    "methylation": {"format": "bismark_cov"}, "ctdna": {"format": "variant_table"}},
        samples=pd.DataFrame(rows), tables={"ctdna/variants.csv": ctdna_mod.variant_table(ctdna_rows)}, jobs=jobs,
        truth_patients=truth_patients,
        truth_samples=pd.DataFrame(tsamp), main_endpoint="response", views=views,
        truth_tables={"cna_segments.csv": pd.concat(cna_rows, ignore_index=True)},
        summary_extra={"objective_response_rate": float(np.nanmean(response)),
                       "best_response_counts": {k: int(v) for k, v in
                                                pd.Series(best).value_counts().sort_index().items()},
                       "tf_baseline_median": float(np.median(tf0)),
                       "median_ctdna_lead_time_days": _median(tp_lead),
                       "fraction_lead_time_positive": float(np.mean(tp_lead > 0)) if len(tp_lead) else None,
                       "tf_c3d1_median_responders": float(np.median(tf42[response == 1])),
                       "tf_c3d1_median_nonresponders": float(np.median(tf42[response == 0]))},
    )

"""nsclc-advanced: first-line advanced NSCLC without targetable alterations, serial ctDNA (LUCAGEN, NCT03512847).

Latent biology: burden B, aggressiveness A, immune response I, chemosensitivity S and ctDNA shedding H.
Treatment (chemo / io / chemo_io, chosen from PD-L1 and ECOG) sets which sensitivity counts; the realised
sensitivity ``S_eff`` sets the depth of response. PFS log-hazard: ``-0.95 S_eff + 0.55 A + 0.45 B + clinical``.

Tumour kinetics per patient: the sensitive tumour shrinks to a viable nadir ``v_n`` (non-viable scar keeps part
of the diameters) while a resistant clone grows exponentially (doubling time from A) and causes progression,
by target-lesion growth (sum of longest diameters +20% and +5 mm over the nadir) or by a new lesion, at the
true progression day drawn from the PH model. Progression is seen at the first RECIST assessment after it
(every 6 weeks, 9 after a year): PFS is interval-censored, as in trials. Plasma ctDNA is drawn before every
21-day cycle (``c1`` = day 0, ``c2`` = day 21, ...; ``SynthOptions.draw_every`` instead draws every that many days,
``d1``, ``d2``, ...); its tumour fraction follows the viable tumour, with the
proliferating resistant clone shedding more per volume (patient-specific ratio), so molecular progression
(a doubling over the ctDNA nadir, above detection) precedes radiological progression by ~1.5 months (median).
~30% of patients shed no detectable ctDNA. RECIST assessments are the ``recist`` table modality (``baseline``,
``a01``, ``a02``, ...).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from omics_risk.data.synthetic import ctdna as ctdna_mod
from omics_risk.data.synthetic import fragments as frag
from omics_risk.data.synthetic.biology import (
    DAYS_PER_YEAR,
    administrative_censoring,
    assessment_schedule,
    correlated_latents,
    ordinal_from_score,
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
from omics_risk.data.synthetic.nsclc_postop import pdl1_from_score
from omics_risk.data.synthetic.serial import onset_columns

KIND = "nsclc-advanced"
STAGES = ["IVA", "IVB"]
TREATMENTS = ["chemo", "io", "chemo_io"]
TF_DETECT = 1e-3  # tumour fraction a tracked panel reliably detects (VAF ~0.05%)
LEAD_MEDIAN = 38.0  # days from molecular to true radiological progression (+ assessment delay: ~1.5 months)
CYCLE = 21


def kinetics(day: np.ndarray, v_nadir: np.ndarray, tau: np.ndarray, f_at_prog: np.ndarray, growth: np.ndarray,
             t_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Viable sensitive fraction and resistant-clone fraction (of baseline volume) at ``day`` (broadcast)."""
    v_sens = v_nadir + (1 - v_nadir) * np.exp(-np.maximum(day, 0) / tau)
    f_res = f_at_prog * np.exp(growth * (day - t_rad))
    return v_sens, f_res


def plan(n: int, seed: np.random.SeedSequence, opts: SynthOptions, genome: Genome) -> CohortPlan:
    cohort_ss, patient_ss = seed.spawn(2)
    r = streams(cohort_ss, ["latent", "clinical", "outcome", "missing", "ct", "cfdna", "ctdna", "recist"])
    pids = [f"AD{i + 1:04d}" for i in range(n)]
    lat = correlated_latents(r["latent"], n, ["burden", "aggressiveness", "immune", "sensitivity", "shedding"],
                             {("burden", "aggressiveness"): 0.3, ("shedding", "aggressiveness"): 0.3,
                              ("shedding", "burden"): 0.3})
    B, A, I0, S, H = (lat[c].to_numpy() for c in lat.columns)

    rc = r["clinical"]
    age = np.clip(np.round(rc.normal(66, 9, n)), 35, 88)
    male = rc.random(n) < 0.6
    su = rc.random(n)
    smoking = np.where(su < 0.10, "never", np.where(su < 0.60, "former", "current"))
    pack_years = np.where(smoking == "never", 0, np.round(np.exp(rc.normal(np.log(38), 0.45, n))))
    squam = rc.random(n) < expit(-0.8 + 0.9 * (smoking == "current") + 0.5 * (smoking == "former"))
    histology = np.where(rc.random(n) < 0.07, "other", np.where(squam, "squamous", "adenocarcinoma"))
    immune = standardize(I0 + 0.25 * (smoking != "never"))
    pdl1 = pdl1_from_score(rc, 0.75 * immune + 0.66 * rc.normal(0, 1, n))
    ecog = ordinal_from_score(0.5 * B + 0.3 * A + 0.8 * rc.normal(0, 1, n), ["0", "1", "2"],
                              [0.35, 0.55, 0.10]).astype(int)
    stage = ordinal_from_score(0.8 * B + 0.6 * rc.normal(0, 1, n), STAGES, [0.45, 0.55])
    ivb = stage == "IVB"
    liver = (ivb & (rc.random(n) < expit(-1.6 + 0.6 * B))).astype(int)
    brain = (rc.random(n) < 0.2).astype(int)
    bone = (ivb & (rc.random(n) < 0.55)).astype(int)
    ldh = np.round(200 * np.exp(0.25 * B + 0.15 * A + 0.25 * rc.normal(0, 1, n)))
    u = rc.random(n)
    treatment = np.where(pdl1 >= 50, np.where(u < 0.55 + 0.2 * (ecog == 2), "io", "chemo_io"),
                         np.where(u < 0.15 + 0.3 * (ecog == 2), "chemo", "chemo_io"))
    s_t = np.select([treatment == "io", treatment == "chemo"], [0.9 * immune + 0.2 * S, 0.2 * immune + 0.9 * S],
                    0.6 * immune + 0.7 * S)
    s_eff = standardize(s_t + 0.6 * rc.normal(0, 1, n))
    kras = ((histology == "adenocarcinoma") & (smoking != "never") & (rc.random(n) < 0.28)).astype(int)

    # ---- outcome: true radiological progression, deaths, censoring
    ro = r["outcome"]
    contrib = {"risk_sensitivity": -0.95 * s_eff, "risk_aggressiveness": 0.55 * A, "risk_burden": 0.45 * B,
               "risk_clinical": 0.35 * liver + 0.2 * brain + 0.2 * ecog + 0.35 * (treatment == "chemo")}
    eta = sum(contrib.values())
    eta = eta - eta.mean()
    t_rad = np.maximum(weibull_ph_time(ro, eta, shape=1.3, median_days=230), 14.0)
    t_death_pre = ro.exponential(DAYS_PER_YEAR / (0.07 * np.exp(0.5 * ecog)), n)
    t_pps = weibull_ph_time(ro, 0.5 * eta, shape=1.1, median_days=300)
    cens = administrative_censoring(ro, n, 0.5, 3.0, 0.04)

    # ---- tumour kinetics
    rk = r["recist"]
    n_target = np.clip(np.round(1.5 + 0.8 * B + rk.normal(0, 0.8, n)), 1, 5).astype(int)
    sld0 = np.clip(np.exp(np.log(30) + np.log(n_target) * 0.8 + 0.25 * B + 0.2 * rk.normal(0, 1, n)), 12, 250)
    diam = [sld0[i] * rk.dirichlet(np.full(n_target[i], 3.0)) for i in range(n)]
    vol0 = np.array([np.sum(np.pi / 6 * d**3) for d in diam])  # mm^3
    scar = rk.uniform(0.25, 0.55, n)  # fibrotic, non-viable part of the lesions that never shrinks
    depth = 2.6 + 2.2 * s_eff + 0.3 * rk.normal(0, 1, n)
    v_nadir = np.exp(-np.clip(depth, 0, 7))
    tau = rk.uniform(18, 40, n)
    doubling = np.clip(np.exp(np.log(32) - 0.25 * A + 0.25 * rk.normal(0, 1, n)), 10, 120)
    growth = np.log(2) / doubling
    new_type = rk.random(n) < 0.3
    v_at_prog = v_nadir + (1 - v_nadir) * np.exp(-t_rad / tau)
    nadir_sld = sld0 * (scar + (1 - scar) * np.cbrt(v_at_prog))
    d_star = np.where(new_type, rk.uniform(6, 10, n), np.maximum(0.2 * nadir_sld, 5.0) + 0.5)
    f_at_prog = np.pi / 6 * d_star**3 / vol0
    shedder = (0.7 * H + 0.3 * B + 0.4 * rk.normal(0, 1, n)) > np.quantile(0.7 * H + 0.3 * B, 0.3)
    tf0 = np.where(shedder, np.clip(10 ** (-1.8 + 0.4 * B + 0.2 * A + 0.3 * rk.normal(0, 1, n)), 2e-3, 0.6),
                   10 ** rk.uniform(-4.7, -3.6, n))

    # The proliferating resistant clone sheds more ctDNA per volume than the (partly necrotic, fibrotic) bulk;
    # its patient-specific shedding ratio makes ctDNA double over its nadir ``lead`` days before the true
    # radiological progression (non-shedders get the median ratio and mostly stay undetectable).
    lead_true = np.exp(np.log(LEAD_MEDIAN) + 0.6 * rk.normal(0, 1, n))
    t_mol = np.maximum(t_rad - lead_true, 7.0)
    v_mol = v_nadir + (1 - v_nadir) * np.exp(-t_mol / tau)
    c_mol = np.maximum(v_mol, 1.5 * TF_DETECT / tf0)
    rho = np.clip(c_mol * np.exp(growth * (t_rad - t_mol)) / f_at_prog, 1.0, 1e4)
    rho = np.where(shedder, rho, np.median(rho[shedder]))

    def state(day: np.ndarray, idx: np.ndarray | slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        vs, fr = kinetics(day, v_nadir[idx], tau[idx], f_at_prog[idx], growth[idx], t_rad[idx])
        level = vs + rho[idx] * fr
        tf = np.minimum(tf0[idx] * level / (1 - tf0[idx] + tf0[idx] * level), 0.9)
        d_res = np.cbrt(6 * fr * vol0[idx] / np.pi)
        return tf, vs, d_res

    # Molecular progression: ctDNA doubles over its running nadir while above detection (daily grid).
    grid = np.arange(0, 1600)
    tf_grid, _, _ = state(grid[None, :], (slice(None), None))
    level = tf_grid / tf0[:, None]
    running_min = np.minimum.accumulate(level, axis=1)
    hit = (grid[None, :] >= CYCLE) & (level >= 2 * running_min) & (tf_grid >= TF_DETECT)
    mol_day = np.where(hit.any(axis=1), hit.argmax(axis=1), np.nan).astype(float)

    # ---- RECIST assessments (the table drives the observed PFS)
    recist_rows, rec_samples = [], []
    pfs_time = np.zeros(n)
    pfs_event = np.zeros(n, dtype=int)
    prog_seen = np.zeros(n, dtype=bool)
    sld_ratio_6w = np.ones(n)
    day_base = -rk.integers(0, 22, n)
    t_death = np.minimum(t_death_pre, t_rad + t_pps)
    for i in range(n):
        t_end = min(t_death[i], cens[i])
        sched = assessment_schedule(rk, t_end)
        _, vs, d_res = state(sched, i)
        measured_res = np.where(new_type[i], 0.0, np.where(d_res >= 4.0, d_res, 0.0))
        sld_true = sld0[i] * (scar[i] + (1 - scar[i]) * np.cbrt(vs)) + measured_res
        new_les = (d_res >= d_star[i]) & new_type[i]
        new_les |= (sched >= t_rad[i]) & (rk.random(len(sched)) < 0.15)
        sld_obs = np.round(sld_true * np.exp(rk.normal(0, 0.03, len(sched))))
        base_obs = float(np.round(sld0[i] * np.exp(rk.normal(0, 0.03))))
        sld_ratio_6w[i] = float(scar[i] + (1 - scar[i]) * np.cbrt(kinetics(42.0, v_nadir[i], tau[i], 0.0, 0.0,
                                                                            0.0)[0]))
        rows_i = [(f"{pids[i]}_recist_baseline", "baseline", day_base[i], base_obs, 0.0, 0.0, 0, n_target[i])]
        nadir = base_obs
        end_day, event = None, 0
        for k, (d, s_o, nl) in enumerate(zip(sched, sld_obs, new_les, strict=True), start=1):
            pd_flag = (s_o >= 1.2 * nadir and s_o - nadir >= 5) or bool(nl)
            rows_i.append((f"{pids[i]}_recist_a{k:02d}", f"a{k:02d}", d, s_o, 100 * (s_o / base_obs - 1),
                           100 * (s_o / nadir - 1), int(nl), n_target[i]))
            nadir = min(nadir, s_o)
            if pd_flag:
                end_day, event = d, 1
                prog_seen[i] = True
                break
        if end_day is None:
            if t_death[i] <= cens[i]:
                end_day, event = float(np.ceil(t_death[i])), 1
            else:
                end_day = float(sched[-1]) if len(sched) else float(max(np.floor(cens[i]), 1.0))
        pfs_time[i], pfs_event[i] = end_day, event
        recist_rows += rows_i
        rec_samples.append(rows_i)
    os_time = np.maximum(np.ceil(np.minimum(t_death, cens)), pfs_time)
    os_event = (t_death <= cens).astype(int)
    lead = np.where(prog_seen & shedder & np.isfinite(mol_day), pfs_time - mol_day, np.nan)

    clinical = pd.DataFrame({
        "patient_id": pids, "age": age.astype(int), "sex": np.where(male, "male", "female"), "smoking": smoking,
        "pack_years": pack_years.astype(int), "histology": histology, "stage": stage, "ecog": ecog,
        "pdl1_tps": pdl1.astype(int), "treatment": treatment, "liver_mets": liver, "brain_mets": brain,
        "bone_mets": bone, "ldh": ldh.astype(int),
        "pfs_time": pfs_time.astype(int), "pfs_event": pfs_event, "os_time": os_time.astype(int),
        "os_event": os_event,
    })
    set_missing(r["missing"], clinical, {"pack_years": 0.05, "smoking": 0.02, "pdl1_tps": 0.04, "ldh": 0.08,
                                         "ecog": 0.02})

    # ---- samples
    rm = r["missing"]
    rows: list[dict] = []
    recist = pd.DataFrame(recist_rows, columns=["sample_id", "timepoint", "day", "sld_mm", "pct_change_baseline",
                                                "pct_change_nadir", "new_lesion", "n_target_lesions"])
    recist[["pct_change_baseline", "pct_change_nadir"]] = recist[["pct_change_baseline", "pct_change_nadir"]].round(1)
    no_samples = rm.random(n) < 0.02
    has_ct = ~no_samples & (rm.random(n) > 0.05)
    has_cf = ~no_samples & (rm.random(n) > 0.15)
    rct, rcf, rcd = r["ct"], r["cfdna"], r["ctdna"]
    radius = np.clip(np.array([d.max() for d in diam]) / 2, 4, 30)
    het = expit(0.6 * A + 0.3 * B + 0.8 * rct.normal(0, 1, n))
    irr = expit(0.7 * A + 0.8 * rct.normal(0, 1, n) - 0.4)
    spic = expit(0.8 * A + 0.9 * rct.normal(0, 1, n) - 1.0)
    nec = np.where(radius > 10, expit(0.9 * A + 0.6 * B - 1.4 + 0.5 * rct.normal(0, 1, n)), 0.0)
    central = rct.random(n) < np.where(histology == "squamous", 0.45, 0.15)
    emph = np.where(smoking == "never", 0.0, np.clip(pack_years / 120 * rct.uniform(0.3, 1.2, n), 0, 0.3))
    instability = np.exp(0.4 * A + 0.2 * rcf.normal(0, 1, n))
    jobs, tsamp, cna_rows, ctdna_rows = [], [], [], []
    child = patient_ss.spawn(n)
    for i, pid in enumerate(pids):
        job = PatientJob(pid, child[i], "nsclc")
        if not no_samples[i]:
            rows += [{"patient_id": pid, "sample_id": sid, "modality": "recist", "timepoint": tp, "day": int(d),
                      "path": "recist/recist.csv", "mask_path": ""} for sid, tp, d, *_ in rec_samples[i]]
        if has_ct[i]:
            row = sample_row(pid, "ct", "baseline", -rct.integers(3, 22), f"ct/{pid}_baseline.nii.gz",
                             f"ct/{pid}_baseline_mask.nii.gz")
            params = {"noise_hu": float(rct.uniform(12, 28)), "blur_vox": float(rct.uniform(0.5, 0.9)),
                      "emphysema": float(emph[i]), "site": "central" if central[i] else "peripheral",
                      "radius_mm": float(radius[i]), "irregularity": float(irr[i]), "spiculation": float(spic[i]),
                      "heterogeneity": float(het[i]), "necrosis": float(nec[i]),
                      "ggo": float(rct.uniform(0.05, 0.3)) if histology[i] == "adenocarcinoma" and rct.random() < 0.2
                      else 0.0}
            job.ct.append({"sample_id": row["sample_id"], "path": row["path"], "mask_path": row["mask_path"],
                           "params": params})
            rows.append(row)
            tsamp.append({"sample_id": row["sample_id"], "true_radius_mm": round(float(radius[i]), 3)})
        arm_cn, focal, seg = frag.tumour_copy_number(rcf, genome, float(instability[i]), frag.NSCLC_ARM_PRIORS,
                                                     0.8 * float(instability[i]), pid)
        cna_rows.append(seg)
        if has_cf[i]:
            row = sample_row(pid, "cfdna", "c1", -rcf.integers(0, 8), f"cfdna/{pid}_c1.frag.gz")
            job.fragments.append({"sample_id": row["sample_id"], "path": row["path"], "tumour_fraction": float(tf0[i])})
            job.arm_cn, job.focal = arm_cn, focal
            rows.append(row)
            tsamp.append({"sample_id": row["sample_id"], "tumour_fraction": float(tf0[i])})
        # Serial ctDNA before every cycle until progression (plus sometimes one draw after), death or censoring.
        drivers = [("KRAS", ctdna_mod.KRAS_VARIANTS[1 + rcd.integers(len(ctdna_mod.KRAS_VARIANTS) - 1)])] \
            if kras[i] else []
        panel = ctdna_mod.variant_panel(rcd, int(rcd.integers(4, 11)), ctdna_mod.NSCLC_GENES, drivers)
        stop = pfs_time[i] if pfs_event[i] else min(cens[i], t_death[i])
        if pfs_event[i] and prog_seen[i] and rcd.random() < 0.5:
            stop = min(stop + CYCLE, cens[i], t_death[i])
        day, k = 0.0, 1
        while day <= stop and not no_samples[i]:
            if rcd.random() > (0.05 if k == 1 else 0.08):
                tp = f"c{k}" if opts.draw_every is None else f"d{k}"
                tf_k = float(state(np.array([day]), i)[0][0])
                row = sample_row(pid, "ctdna", tp, day, "ctdna/variants.csv")
                obs = ctdna_mod.observe_variants(rcd, panel, tf_k, (2000, 8000))
                obs.insert(0, "day", row["day"])
                obs.insert(0, "sample_id", row["sample_id"])
                obs.insert(0, "patient_id", pid)
                ctdna_rows.append(obs)
                rows.append(row)
                tsamp.append({"sample_id": row["sample_id"], "tumour_fraction": tf_k,
                              "mean_vaf": float(obs["true_vaf"].mean())})
            day += CYCLE + (7 if rcd.random() < 0.08 else 0) if opts.draw_every is None else opts.draw_every
            k += 1
        if job.ct or job.fragments:
            jobs.append(job)

    samples = pd.DataFrame(rows)
    ctdna_table = ctdna_mod.variant_table(ctdna_rows)
    recist_table = recist.drop(columns=["timepoint", "day"])
    recist_table = recist_table[recist_table["sample_id"].isin(samples["sample_id"])]

    tf42 = state(np.full(n, 42.0))[0]
    tf21 = state(np.full(n, 21.0))[0]
    truth_patients = pd.DataFrame({
        "patient_id": pids, "true_risk_pfs": np.round(eta, 5), "true_risk_os": np.round(eta, 5),
        "latent_burden": B.round(5), "latent_aggressiveness": A.round(5), "latent_immune": immune.round(5),
        "latent_sensitivity": S.round(5), "latent_shedding": H.round(5),
        "latent_realised_sensitivity": s_eff.round(5), **{k: np.round(v, 5) for k, v in contrib.items()},
        "ctdna_shedder": shedder.astype(int), "tf_baseline": tf0, "viable_nadir_fraction": v_nadir,
        "resistant_doubling_days": np.round(doubling, 2), "resistant_shedding_ratio": np.round(rho, 3),
        "progression_type": np.where(new_type, "new_lesion", "target"),
        "radiological_progression_day_true": np.round(t_rad, 1), "molecular_progression_day": mol_day,
        "radiological_progression_seen": prog_seen.astype(int), "lead_time_days": lead,
        "death_day_true": np.round(t_death, 1), "censoring_day": np.round(cens, 1),
        **onset_columns(mol_day, t_rad, np.where(prog_seen, pfs_time, np.nan), os_time),
    })
    views = {
        "clinical": pd.DataFrame({"ecog": ecog, "liver": liver, "brain": brain, "bone": bone, "ivb": ivb,
                                  "pdl1": pdl1, "chemo": treatment == "chemo", "io": treatment == "io",
                                  "squam": histology == "squamous", "age": age, "ldh": np.log(ldh)}),
        "ct": pd.DataFrame({"logr": np.log(radius), "het": het, "irr": irr, "spic": spic, "nec": nec}),
        "cfdna": pd.DataFrame({"logtf": np.log(np.maximum(tf0, DETECTION_LIMIT["cfdna"]))}),
        "ctdna": pd.DataFrame({f"logtf{d}": np.log(np.maximum(x, TF_DETECT))
                               for d, x in ((0, tf0), (21, tf21), (42, tf42))}),
        "recist": pd.DataFrame({"logsld0": np.log(sld0), "ratio6w": np.log(sld_ratio_6w)}),
    }
    views["all"] = pd.concat(list(views.values()), axis=1)
    shed_lead = lead[np.isfinite(lead)]
    return CohortPlan(
        kind=KIND, name=f"{KIND}-synthetic-n{n}", tumour_type="nsclc", clinical=clinical,
        clinical_types={"age": "numeric", "sex": "categorical", "smoking": "categorical", "pack_years": "numeric",
                        "histology": "categorical", "stage": {"type": "ordinal", "levels": STAGES},
                        "ecog": "numeric", "pdl1_tps": "numeric", "treatment": "categorical",
                        "liver_mets": "binary", "brain_mets": "binary", "bone_mets": "binary", "ldh": "numeric"},
        endpoints={"pfs": {"type": "survival", "time": "pfs_time", "event": "pfs_event"},
                   "os": {"type": "survival", "time": "os_time", "event": "os_event"}},
        modalities={"ct": {"format": "image"}, "cfdna": {"format": "fragments"},
                    "ctdna": {"format": "variant_table"}, "recist": {"format": "table"}},
        samples=samples, tables={"ctdna/variants.csv": ctdna_table, "recist/recist.csv": recist_table},
        jobs=jobs, truth_patients=truth_patients, truth_samples=pd.DataFrame(tsamp), main_endpoint="pfs",
        views=views, truth_tables={"cna_segments.csv": pd.concat(cna_rows, ignore_index=True)},
        summary_extra={
            "median_ctdna_lead_time_days": float(np.median(shed_lead)) if len(shed_lead) else None,
            "ctdna_lead_time_iqr_days": np.quantile(shed_lead, [0.25, 0.75]).tolist() if len(shed_lead) else None,
            "fraction_lead_time_positive": float(np.mean(shed_lead > 0)) if len(shed_lead) else None,
            "n_progressions_with_molecular_progression": len(shed_lead),
            "ctdna_shedder_fraction": float(np.mean(shedder)),
            "treatment_counts": {k: int(v) for k, v in pd.Series(treatment).value_counts().sort_index().items()},
            **({"ctdna_draw_every_days": opts.draw_every} if opts.draw_every is not None else {}),
        },
    )

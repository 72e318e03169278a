"""nsclc-postop: resectable stage IB-IIIA NSCLC, neoadjuvant chemo-immunotherapy then surgery (NCT07291921).

Latent biology per patient: tumour burden B, aggressiveness A (proliferation, genomic instability), immune
response I (TMB, PD-L1, IO sensitivity) and metabolic phenotype M; residual disease R after neoadjuvant
therapy and surgery follows pathological response (I, -A, -B) plus an unobserved part. The recurrence
log-hazard is ``0.75 R + 0.55 A + 0.55 M + 0.3 B + clinical``. What each modality sees:

* clinical: stage (B), path_response (R, I), PD-L1 (I), age, smoking;
* CT preop (after neoadjuvant therapy, day -60..-20): size (B and shrinkage), shape and texture (A);
* CT postop1 (day 60-120): surgical bed and residual nodule (R);
* plasma draw at postop1 (day 28-75) -> cfDNA fragments, methylation, tumour-informed ctDNA: the MRD tumour
  fraction (R, A), mostly near zero;
* metabolomics at the preop visit (day -30..-5): M, and weakly A, I, B;
* after surgery (:mod:`.postop_monitoring`): serial ctDNA (preop, postop2, fu<k> at each surveillance CT) that
  follows the residual disease and the relapsing clone, metabolomics at postop1 and postop2, and the surveillance
  CT visits (``truth/surveillance_visits.csv``) that find the recurrence on day ``rfs_time``.

No sample is dated after the patient's death or last follow-up (``os_time``).

Index date (day 0) is surgery; rfs/os in days from surgery. ``path_response`` levels run pCR < MPR <
non-MPR (lowest risk first, as the contract orders ordinal levels).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from omics_risk.data.synthetic import ctdna as ctdna_mod
from omics_risk.data.synthetic import fragments as frag
from omics_risk.data.synthetic.biology import (
    administrative_censoring,
    correlated_latents,
    gompertz_other_cause,
    ordinal_from_score,
    set_missing,
    standardize,
    surveillance_detection_details,
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
from omics_risk.data.synthetic.metabolomics import LINKED, linked_signals_from_noise, simulate_metabolomics
from omics_risk.data.synthetic.postop_monitoring import (
    DRAW_MISSING,
    METAB_MISSING,
    draw_schedule,
    postop_metabolite_signals,
    relapse_kinetics,
    surveillance_visits,
)
from omics_risk.data.synthetic.serial import ctdna_draw, onset_columns

KIND = "nsclc-postop"
STAGES = ["IB", "IIA", "IIB", "IIIA"]
RESPONSES = ["pCR", "MPR", "non-MPR"]


def pdl1_from_score(rng: np.random.Generator, score: np.ndarray) -> np.ndarray:
    """TPS 0-100 with the clinical mix (~30% <1%, ~35% 1-49%, ~35% >=50%), monotone in ``score``."""
    q = pd.Series(score).rank(pct=True).to_numpy()
    tps = np.where(q < 0.30, 0.0, np.where(q < 0.65, 1 + (q - 0.30) / 0.35 * 48, 50 + (q - 0.65) / 0.35 * 50))
    tps = np.where((tps > 0) & (tps < 50), tps + rng.normal(0, 3, len(tps)), tps)
    tps = np.clip(np.round(np.where(tps >= 10, np.round(tps / 5) * 5, tps)), 0, 100)
    return np.where((q >= 0.30) & (tps < 1), 1, tps)


def plan(n: int, seed: np.random.SeedSequence, opts: SynthOptions, genome: Genome) -> CohortPlan:
    cohort_ss, patient_ss = seed.spawn(2)
    r = streams(cohort_ss, ["latent", "clinical", "outcome", "missing", "ct", "cfdna", "ctdna", "metab",
                                 "onset", "serial_ctdna", "serial_metab", "surveillance"])
    pids = [f"PO{i + 1:04d}" for i in range(n)]
    lat = correlated_latents(r["latent"], n, ["burden", "aggressiveness", "immune", "metabolic"],
                             {("burden", "aggressiveness"): 0.3, ("aggressiveness", "immune"): -0.2,
                              ("metabolic", "aggressiveness"): 0.3, ("metabolic", "burden"): 0.2})
    B, A, I0, M = (lat[c].to_numpy() for c in lat.columns)

    # ---- clinical
    rc = r["clinical"]
    age = np.clip(np.round(rc.normal(65, 8.5, n)), 38, 86)
    male = rc.random(n) < 0.64
    smoke_u = rc.random(n) + 0.08 * male
    smoking = np.where(smoke_u < 0.14, "never", np.where(smoke_u < 0.64, "former", "current"))
    pack_years = np.where(smoking == "never", 0,
                          np.round(np.exp(rc.normal(np.where(smoking == "current", np.log(42), np.log(32)), 0.45))))
    squam_logit = -0.7 + 1.1 * (smoking == "current") + 0.7 * (smoking == "former") - 1.6 * (smoking == "never") \
        + 0.3 * A
    u = rc.random(n)
    histology = np.where(u < 0.07, "other", np.where(rc.random(n) < expit(squam_logit), "squamous", "adenocarcinoma"))
    adeno = histology == "adenocarcinoma"
    egfr = (adeno & (rc.random(n) < np.where(smoking == "never", 0.40, 0.05))).astype(int)
    kras = ((egfr == 0) & (rc.random(n) < np.where(adeno, np.where(smoking == "never", 0.06, 0.32), 0.03))).astype(int)
    stage = ordinal_from_score(0.85 * B + 0.5 * rc.normal(0, 1, n), STAGES, [0.12, 0.18, 0.25, 0.45])
    # Immune response: smoking-related TMB raises it; EGFR-mutant tumours are immune-cold.
    immune = standardize(I0 + 0.25 * (smoking != "never") - 0.9 * egfr)
    pdl1 = pdl1_from_score(rc, 0.75 * immune + 0.66 * rc.normal(0, 1, n))
    quality = 0.7 * immune - 0.3 * A - 0.3 * B + 0.55 * rc.normal(0, 1, n)  # pathological response
    path_response = ordinal_from_score(-quality, RESPONSES, [0.25, 0.15, 0.60])
    ecog = (rc.random(n) < expit(-1.0 + 0.3 * B + 0.03 * (age - 65))).astype(int)
    bmi_z = rc.normal(0, 1, n)
    residual = standardize(-0.55 * standardize(quality) + 0.3 * B + 0.25 * A + 0.7 * rc.normal(0, 1, n))
    mrd_tf = np.clip(10 ** (-3.3 + 0.95 * residual + 0.15 * A + rc.normal(0, 0.35, n)), 1e-6, 0.4)

    # ---- outcome
    ro = r["outcome"]
    age_z = (age - 65) / 8.5
    contrib = {
        "risk_residual": 0.75 * residual,
        "risk_aggressiveness": 0.55 * A,
        "risk_metabolic": 0.55 * M,
        "risk_burden": 0.3 * B,
        "risk_clinical": 0.15 * age_z + 0.15 * (smoking == "current") + 0.1 * ecog,
    }
    eta = sum(contrib.values())
    eta = eta - eta.mean()
    t_onset = weibull_ph_time(ro, eta, shape=0.95, median_days=2900)  # visible on CT (radiological onset)
    t_rec, symptomatic = surveillance_detection_details(ro, t_onset)
    t_other = gompertz_other_cause(ro, age)
    t_prs = weibull_ph_time(ro, 0.5 * eta, shape=1.1, median_days=650)
    cens = administrative_censoring(ro, n, 1.5, 5.0, 0.03)
    t_rfs = np.minimum(t_rec, t_other)
    t_death = np.minimum(t_other, t_rec + t_prs)
    rfs_time = np.maximum(np.ceil(np.minimum(t_rfs, cens)), 1)
    rfs_event = (t_rfs <= cens).astype(int)
    os_time = np.maximum(np.ceil(np.minimum(t_death, cens)), rfs_time)
    os_event = (t_death <= cens).astype(int)
    detected = (rfs_event == 1) & (t_rec <= t_other)  # the rfs event is a recurrence, not a death

    clinical = pd.DataFrame({
        "patient_id": pids, "age": age.astype(int), "sex": np.where(male, "male", "female"), "smoking": smoking,
        "pack_years": pack_years.astype(int), "histology": histology, "stage": stage, "ecog": ecog,
        "pdl1_tps": pdl1.astype(int), "egfr_mutant": egfr, "kras_mutant": kras, "path_response": path_response,
        "rfs_time": rfs_time.astype(int), "rfs_event": rfs_event, "os_time": os_time.astype(int),
        "os_event": os_event,
    })
    true_egfr, true_kras = egfr.copy(), kras.copy()
    set_missing(r["missing"], clinical, {"pack_years": 0.04, "smoking": 0.02, "pdl1_tps": 0.06, "egfr_mutant": 0.05,
                                         "kras_mutant": 0.05, "histology": 0.01, "path_response": 0.01,
                                         "ecog": 0.02})

    # ---- samples
    rm = r["missing"]
    no_samples = rm.random(n) < 0.02
    has_ct_pre = ~no_samples & (rm.random(n) > 0.03)
    has_ct_post = ~no_samples & (rm.random(n) > 0.10 + 0.12 * expit(eta - 1.0))
    has_draw = ~no_samples & (rm.random(n) > 0.10)
    has_cfdna = has_draw & (rm.random(n) > 0.02)
    has_meth = has_draw & (rm.random(n) > 0.04)
    has_ctdna = has_draw & (rm.random(n) > 0.06)
    has_metab = ~no_samples & (rm.random(n) > 0.15)
    rct = r["ct"]
    end = os_time  # death or last follow-up: no sample after it
    day_pre = -rct.integers(20, 61, n)
    day_post = rct.integers(60, 121, n)
    day_draw = rct.integers(28, 76, n)
    day_metab = -rct.integers(5, 31, n)

    # CT parameters (noise-free quantities each scan encodes).
    base_diam = np.clip(np.exp(np.log(34) + 0.33 * B + 0.12 * rct.normal(0, 1, n)), 12, 70)
    # Radiological response to neoadjuvant therapy agrees only moderately with pathological response.
    shrink = 0.35 + 0.65 * expit(-0.8 * standardize(quality) - 1.0 * rct.normal(0, 1, n) - 0.3)
    radius_pre = np.clip(base_diam / 2 * shrink, 4, 30)
    irregularity = expit(0.7 * A + 0.8 * rct.normal(0, 1, n) - 0.4)
    spiculation = expit(0.8 * A + 0.9 * rct.normal(0, 1, n) - 1.0)
    heterogeneity = expit(0.6 * A + 0.3 * B + 0.8 * rct.normal(0, 1, n))
    necrosis = np.where(radius_pre > 10, expit(0.9 * A + 0.6 * B - 1.6 + 0.5 * rct.normal(0, 1, n)), 0.0)
    ggo = np.where(adeno & (rct.random(n) < 0.45), rct.uniform(0.1, 0.5, n) * expit(-A), 0.0)
    central = rct.random(n) < np.where(histology == "squamous", 0.45, 0.15)
    emphysema = np.where(smoking == "never", 0.0, np.clip(pack_years / 120 * rct.uniform(0.3, 1.2, n), 0, 0.3))
    bed_mm = rct.uniform(14, 22, n) + 3 * np.maximum(residual, 0)
    bed_het = expit(0.7 * residual + 0.5 * rct.normal(0, 1, n))
    residual_mm = np.where(residual + 0.35 * rct.normal(0, 1, n) > 0.95,
                           np.clip(3 + 3.5 * (residual - 0.6), 2.5, 14), 0.0)
    effusion = np.where(rct.random(n) < 0.3, rct.uniform(2, 10, n), 0.0)

    # ---- after surgery: relapse kinetics, surveillance CTs and the serial draws (streams of their own)
    kin = relapse_kinetics(r["onset"], t_onset, B, A, mrd_tf, day_draw)
    visits = surveillance_visits(r["surveillance"], pids, t_onset, rfs_time, detected, symptomatic)
    sched = draw_schedule(r["serial_ctdna"], pids, day_metab, day_draw, visits, rfs_time)
    serial = {i: list(zip(g["timepoint"], g["day"], strict=True)) for i, g in sched.groupby("i", sort=False)}
    rser, rsm = r["serial_ctdna"], r["serial_metab"]
    metab_load: dict[str, float] = {}

    rows, jobs, tsamp = [], [], []
    child = patient_ss.spawn(n)
    rcf = r["cfdna"]
    instability = np.exp(0.4 * A + 0.2 * rcf.normal(0, 1, n))
    cna_rows = []
    rcd = r["ctdna"]
    ctdna_rows = []
    for i, pid in enumerate(pids):
        job = PatientJob(pid, child[i], "nsclc")
        scan = {"noise_hu": float(rct.uniform(12, 28)), "blur_vox": float(rct.uniform(0.5, 0.9)),
                "reference_radius_mm": float(base_diam[i] / 2 * 0.8), "emphysema": float(emphysema[i]),
                "site": "central" if central[i] else "peripheral"}
        if has_ct_pre[i]:
            row = sample_row(pid, "ct", "preop", day_pre[i], f"ct/{pid}_preop.nii.gz", f"ct/{pid}_preop_mask.nii.gz")
            params = {**scan, "radius_mm": float(radius_pre[i]), "irregularity": float(irregularity[i]),
                      "spiculation": float(spiculation[i]), "heterogeneity": float(heterogeneity[i]),
                      "necrosis": float(necrosis[i]), "ggo": float(ggo[i]),
                      "cavitation": bool(histology[i] == "squamous" and necrosis[i] > 0.4 and rct.random() < 0.4)}
            job.ct.append({"sample_id": row["sample_id"], "path": row["path"], "mask_path": row["mask_path"],
                           "params": params})
            rows.append(row)
            tsamp.append({"sample_id": row["sample_id"], "true_radius_mm": round(float(radius_pre[i]), 3)})
        if has_ct_post[i] and day_post[i] <= end[i]:
            row = sample_row(pid, "ct", "postop1", day_post[i], f"ct/{pid}_postop1.nii.gz",
                             f"ct/{pid}_postop1_mask.nii.gz")
            params = {**scan, "postop": True, "bed_mm": float(bed_mm[i]), "bed_heterogeneity": float(bed_het[i]),
                      "residual_mm": float(residual_mm[i]), "residual_heterogeneity": float(heterogeneity[i]),
                      "residual_spiculation": float(spiculation[i]), "effusion_mm": float(effusion[i])}
            job.ct.append({"sample_id": row["sample_id"], "path": row["path"], "mask_path": row["mask_path"],
                           "params": params})
            rows.append(row)
            tsamp.append({"sample_id": row["sample_id"], "true_radius_mm": round(float(residual_mm[i]), 3)})
        arm_cn, focal, seg = frag.tumour_copy_number(rcf, genome, float(instability[i]), frag.NSCLC_ARM_PRIORS,
                                                     0.8 * float(instability[i]), pid)
        cna_rows.append(seg)
        if has_cfdna[i] and day_draw[i] <= end[i]:
            row = sample_row(pid, "cfdna", "postop1", day_draw[i], f"cfdna/{pid}_postop1.frag.gz")
            job.fragments.append({"sample_id": row["sample_id"], "path": row["path"],
                                  "tumour_fraction": float(mrd_tf[i])})
            job.arm_cn, job.focal = arm_cn, focal
            rows.append(row)
            tsamp.append({"sample_id": row["sample_id"], "tumour_fraction": float(mrd_tf[i])})
        if has_meth[i] and day_draw[i] <= end[i]:
            row = sample_row(pid, "methylation", "postop1", day_draw[i], f"methylation/{pid}_postop1.cov.gz")
            job.methylation.append({"sample_id": row["sample_id"], "path": row["path"],
                                    "tumour_fraction": float(mrd_tf[i])})
            rows.append(row)
            tsamp.append({"sample_id": row["sample_id"], "tumour_fraction": float(mrd_tf[i])})
        # The tumour-informed panel is designed from the tumour exome for every patient (drivers included).
        drivers = []
        if true_egfr[i]:
            drivers.append(("EGFR", ctdna_mod.EGFR_VARIANTS[rcd.integers(len(ctdna_mod.EGFR_VARIANTS))]))
        if true_kras[i]:
            drivers.append(("KRAS", ctdna_mod.KRAS_VARIANTS[rcd.integers(len(ctdna_mod.KRAS_VARIANTS))]))
        panel = ctdna_mod.variant_panel(rcd, int(rcd.integers(8, 17)), ctdna_mod.NSCLC_GENES, drivers)
        row, obs, truth = ctdna_draw(rcd, pid, "postop1", day_draw[i], panel, float(mrd_tf[i]), (3000, 10000)) \
            if has_ctdna[i] else (None, None, None)
        if has_ctdna[i] and day_draw[i] <= end[i]:
            ctdna_rows.append(obs)
            rows.append(row)
            tsamp.append(truth)
        for tp, day in serial.get(i, []):  # the pre-op, postop2 and follow-up draws (postop1 is above)
            if tp == "postop1" or no_samples[i] or rser.random() < DRAW_MISSING:
                continue
            tf = float(kin.tf_preop[i]) if tp == "preop" else kin.tf(day, i)
            row, obs, truth = ctdna_draw(rser, pid, tp, day, panel, tf, (3000, 10000))
            ctdna_rows.append(obs)
            rows.append(row)
            tsamp.append(truth)
        if has_metab[i]:
            rows.append(sample_row(pid, "metabolomics", "preop", day_metab[i], "metabolomics/matrix.csv"))
            for tp, day in serial.get(i, []):
                if tp in ("postop1", "postop2") and rsm.random() >= METAB_MISSING:
                    rows.append(sample_row(pid, "metabolomics", tp, day, "metabolomics/matrix.csv"))
                    load = min(kin.tf(day, i) / kin.tf_preop[i], 1.0)
                    metab_load[rows[-1]["sample_id"]] = load
                    tsamp.append({"sample_id": rows[-1]["sample_id"], "tumour_fraction": kin.tf(day, i),
                                  "metabolomics_tumour_load": round(load, 5)})
        if job.ct or job.fragments or job.methylation:
            jobs.append(job)

    samples = pd.DataFrame(rows)
    tables = {"ctdna/variants.csv": ctdna_mod.variant_table(ctdna_rows)}

    metab_samples = samples.loc[samples["modality"] == "metabolomics"]
    idx = pd.Index(pids).get_indexer(metab_samples["patient_id"])
    drivers = pd.DataFrame({"metabolic": M, "aggressiveness": A, "immune": immune, "burden": B})
    noise_preop = r["metab"].normal(0, 1, (len(LINKED), n))  # what linked_signals(r["metab"], ...) draws
    linked = linked_signals_from_noise(drivers, noise_preop)
    post = (metab_samples["timepoint"] != "preop").to_numpy()
    sample_linked = linked.iloc[idx].reset_index(drop=True)
    if post.any():
        load = metab_samples.loc[post, "sample_id"].map(metab_load).to_numpy(float)
        sample_linked.loc[post] = postop_metabolite_signals(rsm, drivers, noise_preop, idx[post], load).to_numpy()
    confounders = pd.DataFrame({"age_z": age_z, "sex_male": male.astype(float), "bmi_z": bmi_z})
    met = simulate_metabolomics(r["metab"], metab_samples["sample_id"].tolist(), sample_linked,
                                confounders.iloc[idx], opts.n_metabolites)
    tables["metabolomics/matrix.csv"] = met.matrix
    tables["metabolomics/sample_sheet.csv"] = met.sheet
    tables["metabolomics/features.csv"] = met.features

    truth_patients = pd.DataFrame({
        "patient_id": pids, "true_risk_rfs": np.round(eta, 5), "true_risk_os": np.round(eta, 5),
        "latent_burden": B.round(5), "latent_aggressiveness": A.round(5), "latent_immune": immune.round(5),
        "latent_metabolic": M.round(5), "latent_residual": residual.round(5),
        "latent_path_response_score": np.round(quality, 5), "mrd_tumour_fraction": mrd_tf,
        **{k: np.round(v, 5) for k, v in contrib.items()},
        "egfr_mutant_true": true_egfr, "kras_mutant_true": true_kras,
        "recurrence_day_uncensored": np.round(t_rec, 1), "other_cause_death_day": np.round(t_other, 1),
        "censoring_day": np.round(cens, 1),
        "radiological_onset_day_uncensored": np.round(t_onset, 1),
        "molecular_relapse_day": np.round(kin.molecular_relapse_day, 1),
        "molecular_lead_days": np.round(kin.lead, 1), "relapse_doubling_days": np.round(np.log(2) / kin.growth, 1),
        "tf_preop": kin.tf_preop, "detected_symptomatic": np.where(detected, symptomatic.astype(float), np.nan),
        **onset_columns(kin.molecular_relapse_day, t_onset, np.where(detected, rfs_time, np.nan), end),
    })
    tp_lead = truth_patients["detection_day"] - truth_patients["molecular_onset_day"]
    views = {
        "clinical": pd.DataFrame({"stage": pd.Categorical(stage, STAGES).codes,
                                  "resp": pd.Categorical(path_response, RESPONSES).codes, "pdl1": pdl1,
                                  "age": age, "current": smoking == "current", "ecog": ecog,
                                  "squam": histology == "squamous"}),
        "ct_preop": pd.DataFrame({"logr": np.log(radius_pre), "irr": irregularity, "spic": spiculation,
                                  "het": heterogeneity, "nec": necrosis}),
        "ct_postop": pd.DataFrame({"bed": bed_mm, "bed_het": bed_het, "res": residual_mm}),
        **{mod: pd.DataFrame({"logtf": np.log10(np.maximum(mrd_tf, lod))}) for mod, lod in DETECTION_LIMIT.items()},
        "metabolomics": linked,
    }
    views["ct"] = pd.concat([views["ct_preop"], views["ct_postop"]], axis=1)
    views["all"] = pd.concat([views[k] for k in ("clinical", "ct", "ctdna", "metabolomics")], axis=1)
    return CohortPlan(
        kind=KIND, name=f"{KIND}-synthetic-n{n}", tumour_type="nsclc", clinical=clinical,
        clinical_types={"age": "numeric", "sex": "categorical", "smoking": "categorical", "pack_years": "numeric",
                        "histology": "categorical", "stage": {"type": "ordinal", "levels": STAGES},
                        "ecog": "numeric", "pdl1_tps": "numeric", "egfr_mutant": "binary", "kras_mutant": "binary",
                        "path_response": {"type": "ordinal", "levels": RESPONSES}},
        endpoints={"rfs": {"type": "survival", "time": "rfs_time", "event": "rfs_event"},
                   "os": {"type": "survival", "time": "os_time", "event": "os_event"}},
        modalities={"ct": {"format": "image"}, "cfdna": {"format": "fragments"},
                    "methylation": {"format": "bismark_cov"}, "ctdna": {"format": "variant_table"},
                    "metabolomics": {"format": "metabolomics_matrix", "sample_sheet": "metabolomics/sample_sheet.csv",
                                     "features": "metabolomics/features.csv"}},
        samples=samples, tables=tables, jobs=jobs, truth_patients=truth_patients,
        truth_samples=pd.DataFrame(tsamp), main_endpoint="rfs", views=views,
        truth_tables={"cna_segments.csv": pd.concat(cna_rows, ignore_index=True),
                      "metabolomics_linked_features.csv": met.linked, "surveillance_visits.csv": visits},
        summary_extra={"mrd_tf_quantiles": dict(zip(["q10", "q50", "q90", "q99"],
                                                    np.quantile(mrd_tf, [0.1, 0.5, 0.9, 0.99]).tolist(),
                                                    strict=True)),
                       "fraction_tf_ge_1pct": float(np.mean(mrd_tf >= 0.01)),
                       "n_recurrences_detected": int(detected.sum()),
                       "median_molecular_lead_to_detection_days": float(tp_lead.median()) if detected.any() else None,
                       "surveillance_ct_per_patient": float(len(visits) / n)},
    )


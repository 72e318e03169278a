"""Untargeted LC-MS plasma metabolomics with the artefacts a real pipeline must handle.

A handful of annotated features follow the latent biology (tumour metabolism, aggressiveness, immune
tone, burden); the rest are noise organised in correlated pathway blocks, some tied to confounders (age,
sex, BMI). Injections run in batches with per-feature batch offsets and within-batch signal drift, pooled QC
injections every ~8 samples, blanks, per-sample dilution, and values below a per-feature detection limit left
empty (missing not at random).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Annotated features linked to tumour biology: name -> loadings on driver columns (log-intensity SD units).
LINKED: dict[str, dict[str, float]] = {
    "lactate": {"metabolic": 0.55, "burden": 0.15},
    "glutamine": {"metabolic": -0.45},
    "creatine riboside": {"metabolic": 0.45, "burden": 0.25},
    "N-acetylputrescine": {"aggressiveness": 0.45, "burden": 0.2},
    "phosphocholine": {"aggressiveness": 0.4, "metabolic": 0.2},
    "kynurenine": {"immune": -0.4, "burden": 0.15},
    "tryptophan": {"immune": 0.3, "burden": -0.15},
    "2-hydroxyglutarate": {"metabolic": 0.4},
    "succinate": {"metabolic": 0.3, "aggressiveness": 0.2},
}
OTHER_NAMES = ("alanine", "citrate", "hippurate", "urea", "glycine", "serine", "proline", "valine", "leucine",
               "isoleucine", "taurine", "betaine", "carnitine", "acetylcarnitine", "hypoxanthine", "xanthine",
               "uric acid", "glucose", "pyruvate", "malate", "fumarate", "aspartate", "glutamate", "ornithine",
               "citrulline", "arginine", "methionine", "cysteine", "histidine", "tyrosine", "phenylalanine",
               "indole-3-propionate", "trimethylamine N-oxide", "cholesterol sulfate", "cortisol", "LPC 16:0",
               "LPC 18:1", "PC 34:1", "SM d18:1/16:0", "palmitate")
#: Confounder-linked annotated features.
CONFOUNDED = {"creatinine": {"sex_male": 0.6, "age_z": 0.2}, "cortisol": {"age_z": 0.25},
              "LPC 16:0": {"bmi_z": -0.3}, "uric acid": {"sex_male": 0.4, "bmi_z": 0.3}}


@dataclass
class MetabolomicsData:
    matrix: pd.DataFrame  # feature_id + one column per injection
    sheet: pd.DataFrame  # sample_id, sample_type, batch, injection_order
    features: pd.DataFrame  # feature_id, mz, rt, name
    linked: pd.DataFrame  # truth: feature_id, name, loadings


def linked_signals(rng: np.random.Generator, drivers: pd.DataFrame) -> pd.DataFrame:
    """Biological log-abundance signal (SD 1) of each tumour-linked metabolite per patient.

    Includes the metabolite's own biological variation, so it is the most any measurement could reveal.
    """
    return linked_signals_from_noise(drivers, rng.normal(0, 1, (len(LINKED), len(drivers))))


def linked_signals_from_noise(drivers: pd.DataFrame, noise: np.ndarray) -> pd.DataFrame:
    """:func:`linked_signals` with its standard-normal biological variation given (one row per metabolite of
    :data:`LINKED`, one column per sample), so that serial samples of a patient can share part of it."""
    out = {}
    for k, (name, spec) in enumerate(LINKED.items()):
        effect = sum(w * drivers[col].to_numpy() for col, w in spec.items())
        resid = np.sqrt(max(1 - sum(w**2 for w in spec.values()), 0.2))
        out[name] = effect + resid * noise[k]
    return pd.DataFrame(out)


#: Seed of the measurement platform (the assay's feature list): fixed, so every synthetic cohort is measured
#: on the same platform and a model trained on one cohort can score another, as with a validation cohort run on
#: the trial's own LC-MS method. Cohort seeds only drive the patients and the run (batches, drift, dilution).
PLATFORM_SEED = 20_240_611


@dataclass(frozen=True)
class Platform:
    """One untargeted LC-MS method: its features and their fixed properties."""

    fid: list[str]
    fname: np.ndarray  # annotation ("" = unannotated)
    block: np.ndarray  # correlated pathway block of each feature
    load: np.ndarray  # loading on its block factor
    mu: np.ndarray  # mean log intensity
    sd: np.ndarray  # biological SD of the log intensity
    lod: np.ndarray  # log detection limit
    contaminant: np.ndarray  # also seen in blanks
    mz: np.ndarray
    rt: np.ndarray
    n_blocks: int


def platform(n_features: int) -> Platform:
    """The feature panel of an ``n_features`` method, identical in every cohort (see :data:`PLATFORM_SEED`)."""
    rng = np.random.default_rng([PLATFORM_SEED, n_features])
    names = list(LINKED) + [nm for nm in OTHER_NAMES if nm not in LINKED] + ["creatinine"]
    n_named = min(len(names), n_features)
    fname = np.full(n_features, "", dtype=object)
    fname[rng.permutation(n_features)[:n_named]] = names[:n_named]  # named features are scattered over the list
    n_blocks = max(n_features // 12, 1)
    mu = rng.normal(np.log(2e5), 1.3, n_features)
    sd = rng.uniform(0.25, 0.7, n_features)
    lod = mu - sd * np.where(rng.random(n_features) < 0.12, rng.uniform(-0.3, 0.8, n_features),
                             rng.uniform(1.5, 3.2, n_features))
    return Platform(fid=[f"FT{i + 1:04d}" for i in range(n_features)], fname=fname,
                    block=rng.integers(0, n_blocks, n_features), load=rng.uniform(0.4, 0.85, n_features),
                    mu=mu, sd=sd, lod=lod, contaminant=rng.random(n_features) < 0.05,
                    mz=np.round(rng.uniform(70, 1000, n_features), 4),
                    rt=np.round(rng.uniform(0.5, 16.0, n_features), 2), n_blocks=n_blocks)


def simulate_metabolomics(rng: np.random.Generator, sample_ids: list[str], linked: pd.DataFrame,
                          confounders: pd.DataFrame, n_features: int) -> MetabolomicsData:
    """Simulate one study run on the fixed :func:`platform`; ``linked`` (from :func:`linked_signals`) and
    ``confounders`` (age_z, sex_male, bmi_z) have one row per sample."""
    n_s = len(sample_ids)
    n_features = max(n_features, len(LINKED) + 5)
    pf = platform(n_features)
    fid, fname, mu, sd = pf.fid, pf.fname, pf.mu, pf.sd

    # Biological signal per sample x feature (log scale, SD ~1 before scaling).
    sig = rng.normal(0, 1, (n_s, n_features))
    factors = rng.normal(0, 1, (n_s, pf.n_blocks))
    sig = np.sqrt(1 - pf.load**2) * sig + pf.load * factors[:, pf.block]
    linked_rows = []
    for j in range(n_features):
        if fname[j] in LINKED:
            sig[:, j] = linked[fname[j]].to_numpy()
            linked_rows.append({"feature_id": fid[j], "name": fname[j], **LINKED[fname[j]]})
        elif fname[j] in CONFOUNDED:
            spec = CONFOUNDED[fname[j]]
            effect = sum(w * confounders[col].to_numpy() for col, w in spec.items())
            sig[:, j] = effect + np.sqrt(1 - sum(w**2 for w in spec.values())) * rng.normal(0, 1, n_s)
    log_bio = mu + sd * sig
    log_pool = mu + sd * sig.mean(axis=0)

    # Run list: randomised samples in batches, QCs every 8 injections, blanks at batch start/end.
    order = rng.permutation(n_s)
    n_batches = max(1, round(n_s / 48))
    runs: list[tuple[str, str, int, int]] = []  # (sample_id, type, batch, sample index or -1)
    qc_k = blank_k = 0
    for b, chunk in enumerate(np.array_split(order, n_batches), start=1):
        blank_k += 1
        runs.append((f"BLANK{blank_k:03d}", "blank", b, -1))
        for _ in range(2):
            qc_k += 1
            runs.append((f"QC{qc_k:03d}", "qc", b, -1))
        for i, s in enumerate(chunk, start=1):
            runs.append((sample_ids[s], "sample", b, int(s)))
            if i % 8 == 0:
                qc_k += 1
                runs.append((f"QC{qc_k:03d}", "qc", b, -1))
        qc_k += 1
        runs.append((f"QC{qc_k:03d}", "qc", b, -1))
        blank_k += 1
        runs.append((f"BLANK{blank_k:03d}", "blank", b, -1))
    sheet = pd.DataFrame(runs, columns=["sample_id", "sample_type", "batch", "idx"])
    sheet["injection_order"] = np.arange(1, len(sheet) + 1)

    n_inj = len(sheet)
    batch = sheet["batch"].to_numpy()
    pos_in_batch = sheet.groupby("batch").cumcount().to_numpy() / np.maximum(
        sheet.groupby("batch")["batch"].transform("size").to_numpy() - 1, 1)
    b_off = rng.normal(0, 0.18, (n_batches, n_features)) + rng.normal(0, 0.1, (n_batches, 1))
    slope = rng.normal(-0.25, 0.15, (n_batches, n_features))
    curve = rng.normal(0, 0.08, (n_batches, n_features))
    drift = slope[batch - 1] * pos_in_batch[:, None] + curve[batch - 1] * (pos_in_batch[:, None] - 0.5) ** 2
    logv = np.empty((n_inj, n_features))
    types = sheet["sample_type"].to_numpy()
    idx = sheet["idx"].to_numpy()
    is_s = types == "sample"
    dilution = rng.normal(0, 0.18, n_s)
    logv[is_s] = log_bio[idx[is_s]] + dilution[idx[is_s], None]
    logv[types == "qc"] = log_pool
    logv[types == "blank"] = np.where(pf.contaminant, mu - 0.5, mu - 5.0)
    logv = logv + b_off[batch - 1] + drift + rng.normal(0, 0.07, (n_inj, n_features))
    values = np.exp(logv)
    values[logv < pf.lod] = np.nan
    matrix = pd.DataFrame(values.T, columns=sheet["sample_id"].tolist())
    matrix.insert(0, "feature_id", fid)
    features = pd.DataFrame({"feature_id": fid, "mz": pf.mz, "rt": pf.rt, "name": fname})
    linked = pd.DataFrame(linked_rows).fillna(0.0)
    return MetabolomicsData(matrix, sheet.drop(columns="idx"), features, linked)

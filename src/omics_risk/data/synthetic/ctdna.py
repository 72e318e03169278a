"""Tracked ctDNA variants: per-patient variant panels and sequencing-realistic VAF observations.

The expected VAF of a heterozygous variant is ``TF / 2 x clonal fraction`` (times a local copy-number
factor); the observed alt count is binomial at the sample's depth with a background error rate, so that
very low tumour fractions are indistinguishable from sequencing noise, as in real MRD assays.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

AA = "ACDEFGHIKLMNPQRSTVWY"
#: (gene, protein length, hotspot protein changes). Frequencies follow lung-cancer mutation prevalence.
NSCLC_GENES: list[tuple[str, int, tuple[str, ...], float]] = [
    ("TP53", 393, ("p.R175H", "p.R248Q", "p.R248W", "p.R273H", "p.R273C", "p.R249S", "p.G245S", "p.Y220C",
                   "p.R282W", "p.V157F", "p.R158L", "p.C176F", "p.H179R", "p.E285K"), 0.55),
    ("STK11", 433, ("p.Q37*", "p.D194Y", "p.F354L", "p.P281L"), 0.15),
    ("KEAP1", 624, ("p.G333C", "p.R470C", "p.D236H", "p.G480W"), 0.15),
    ("NF1", 2839, (), 0.10), ("SMARCA4", 1647, ("p.R1192C", "p.T910M"), 0.08),
    ("CDKN2A", 156, ("p.R80*", "p.H83Y", "p.D84Y"), 0.08), ("PIK3CA", 1068, ("p.E545K", "p.H1047R", "p.E542K"), 0.06),
    ("ARID1A", 2285, (), 0.08), ("KMT2D", 5537, (), 0.12), ("LRP1B", 4599, (), 0.25), ("FAT1", 4588, (), 0.10),
    ("PTPRD", 1912, (), 0.10), ("NOTCH1", 2555, (), 0.05), ("NFE2L2", 605, ("p.E79Q", "p.R34G", "p.D29H"), 0.06),
    ("RB1", 928, ("p.R320*", "p.R552*"), 0.05), ("PTEN", 403, ("p.R130*", "p.R233*"), 0.04),
    ("ATM", 3056, (), 0.08), ("COL11A1", 1806, (), 0.12), ("CSMD3", 3707, (), 0.30), ("ZFHX4", 3567, (), 0.20),
    ("SPTA1", 2419, (), 0.15), ("USH2A", 5202, (), 0.18), ("RYR2", 4967, (), 0.25), ("XIRP2", 3374, (), 0.12),
]
SCLC_GENES: list[tuple[str, int, tuple[str, ...], float]] = [
    ("TP53", 393, ("p.R273H", "p.R248Q", "p.C242F", "p.R158H", "p.V272M", "p.G245V"), 0.9),
    ("RB1", 928, ("p.R320*", "p.R552*", "p.R579*", "p.E748*"), 0.7), ("KMT2D", 5537, (), 0.12),
    ("CREBBP", 2442, ("p.R1446C",), 0.12), ("EP300", 2414, (), 0.08), ("NOTCH1", 2555, (), 0.10),
    ("PTEN", 403, ("p.R130*",), 0.05), ("FAT1", 4588, (), 0.10), ("CSMD3", 3707, (), 0.30),
    ("LRP1B", 4599, (), 0.25), ("RYR2", 4967, (), 0.25), ("COL22A1", 1626, (), 0.15),
]
EGFR_VARIANTS = ("p.L858R", "p.E746_A750del", "p.L861Q", "p.G719A")
KRAS_VARIANTS = ("p.G12C", "p.G12V", "p.G12D", "p.G12A", "p.G13C", "p.Q61H")


def random_protein_change(rng: np.random.Generator, length: int) -> str:
    pos = int(rng.integers(2, length))
    ref = AA[rng.integers(len(AA))]
    u = rng.random()
    if u < 0.7:
        return f"p.{ref}{pos}{AA[rng.integers(len(AA))]}"
    if u < 0.85:
        return f"p.{ref}{pos}*"
    return f"p.{ref}{pos}fs"


def variant_panel(rng: np.random.Generator, n_variants: int, genes: list[tuple[str, int, tuple[str, ...], float]],
                  drivers: list[tuple[str, str]] = ()) -> pd.DataFrame:
    """A patient's tracked variants: clonal drivers first, then passengers; clonal fraction and CN factor."""
    rows = [(g, v, 1.0) for g, v in drivers]
    probs = np.array([p for *_, p in genes])
    order = rng.choice(len(genes), size=len(genes), replace=False, p=probs / probs.sum())
    for j in order:
        if len(rows) >= n_variants:
            break
        gene, length, hotspots, _ = genes[j]
        if any(r[0] == gene for r in rows):
            continue
        var = hotspots[rng.integers(len(hotspots))] if hotspots and rng.random() < 0.7 else \
            random_protein_change(rng, length)
        clonal = 1.0 if rng.random() < 0.65 else float(rng.uniform(0.15, 0.85))
        rows.append((gene, var, clonal))
    while len(rows) < n_variants:  # passenger mutations in other genes (tumour-informed panels use them)
        gene = f"C{rng.integers(1, 23)}orf{rng.integers(10, 200)}"
        rows.append((gene, random_protein_change(rng, 600), 1.0 if rng.random() < 0.65 else
                     float(rng.uniform(0.15, 0.85))))
    df = pd.DataFrame(rows, columns=["gene", "variant", "clonal_fraction"])
    df["cn_factor"] = np.exp(rng.normal(0, 0.25, len(df)))
    return df


VARIANT_COLUMNS = ["patient_id", "sample_id", "day", "gene", "variant", "vaf", "depth", "alt_count"]


def variant_table(rows: list[pd.DataFrame]) -> pd.DataFrame:
    """The long ctDNA table of all samples (empty with its header when no sample was drawn)."""
    if not rows:
        return pd.DataFrame(columns=VARIANT_COLUMNS)
    return pd.concat(rows, ignore_index=True)[VARIANT_COLUMNS]


def observe_variants(rng: np.random.Generator, panel: pd.DataFrame, tumour_fraction: float,
                     depth_range: tuple[int, int], error_rate: float = 8e-5) -> pd.DataFrame:
    """One plasma sample: depth, alt count and VAF per tracked variant; returns rows with true VAF too."""
    true_vaf = np.clip(tumour_fraction / 2 * panel["clonal_fraction"].to_numpy() * panel["cn_factor"].to_numpy(),
                       0, 0.99)
    base = rng.integers(depth_range[0], depth_range[1] + 1)
    depth = np.maximum(rng.poisson(base * np.exp(rng.normal(0, 0.25, len(panel)))), 50)
    p = true_vaf * (1 - error_rate) + error_rate
    alt = rng.binomial(depth, p)
    return pd.DataFrame({"gene": panel["gene"], "variant": panel["variant"], "vaf": np.round(alt / depth, 6),
                         "depth": depth, "alt_count": alt, "true_vaf": true_vaf})

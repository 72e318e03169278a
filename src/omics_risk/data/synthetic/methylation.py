"""Targeted cfDNA methylation libraries (Bismark coverage files) from the plasma / tumour mixture.

Each CpG of the panel (``reference/methylation_regions.bed``) is read at Poisson depth; its methylated
fraction is ``(1 - TF) * beta_plasma + TF * beta_tumour(patient)`` with beta-binomial library noise. The
patient's tumour differs from the reference tumour profile (some markers are not methylated in every tumour),
which is why NNLS deconvolution against ``reference/methylation_profiles.csv`` is informative but not exact.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from omics_risk.data.synthetic.genome import Genome

CAPTURE_SEED = 7


@functools.lru_cache(maxsize=2)
def capture_efficiency(genome: Genome) -> np.ndarray:
    """Fixed per-CpG capture efficiency (region effect x CpG effect), shared by all libraries."""
    rng = np.random.default_rng(CAPTURE_SEED)
    regions = genome.cpgs["region_id"].to_numpy()
    _, inv = np.unique(regions, return_inverse=True)
    region_eff = np.exp(rng.normal(0, 0.3, inv.max() + 1))
    return region_eff[inv] * np.exp(rng.normal(0, 0.15, len(regions)))


def patient_tumour_betas(rng: np.random.Generator, genome: Genome, tumour_type: str) -> np.ndarray:
    """Per-CpG tumour methylation of one patient's tumour.

    Marker regions are methylated in most, not all, tumours (region-level dropout, ~15%), and every region
    varies around the reference on the logit scale.
    """
    cpgs = genome.cpgs
    ref = cpgs[tumour_type].to_numpy()
    plasma = cpgs["plasma"].to_numpy()
    regions, inv = np.unique(cpgs["region_id"].to_numpy(), return_inverse=True)
    region_shift = rng.normal(0, 0.5, len(regions))[inv]
    beta = expit(logit(np.clip(ref, 1e-3, 1 - 1e-3)) + region_shift + rng.normal(0, 0.3, len(ref)))
    is_marker = np.char.startswith(regions.astype(str), "marker")[inv]
    dropout = (rng.random(len(regions)) < 0.15)[inv] & is_marker
    beta[dropout] = plasma[dropout] + 0.5 * (beta[dropout] - plasma[dropout]) * rng.random(int(dropout.sum()))
    return beta


def simulate_methylation(rng: np.random.Generator, genome: Genome, tumour_fraction: float,
                         tumour_beta: np.ndarray, mean_depth: float) -> pd.DataFrame:
    """One library: CpGs with depth > 0 as Bismark coverage rows (1-based C position, start == end)."""
    cpgs = genome.cpgs
    plasma = cpgs["plasma"].to_numpy()
    # Library-level deviation of the plasma background (leukocyte composition, bisulfite conversion).
    plasma = expit(logit(np.clip(plasma, 1e-3, 1 - 1e-3)) + rng.normal(0, 0.15, len(plasma)))
    p = (1 - tumour_fraction) * plasma + tumour_fraction * tumour_beta
    depth = rng.poisson(mean_depth * capture_efficiency(genome))
    phi = 80.0
    p_lib = rng.beta(np.maximum(p * phi, 1e-3), np.maximum((1 - p) * phi, 1e-3))
    meth = rng.binomial(depth, p_lib)
    keep = depth > 0
    df = pd.DataFrame({
        "chrom": cpgs["chrom"].to_numpy()[keep], "start": cpgs["pos"].to_numpy()[keep],
        "end": cpgs["pos"].to_numpy()[keep], "meth": meth[keep], "unmeth": (depth - meth)[keep],
    })
    df.insert(3, "percent", np.round(100.0 * df["meth"] / (df["meth"] + df["unmeth"]), 4))
    return df


def write_cov(df: pd.DataFrame, path: Path) -> None:
    """Gzip-compressed Bismark ``.cov`` (no header), with a zero gzip timestamp for byte-identical reruns."""
    text = df.to_csv(sep="\t", header=False, index=False, float_format="%.4g").encode()
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(text)

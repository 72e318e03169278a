"""Realistic synthetic lung-cancer cohorts in the omics-risk data contract (``omics-risk synth``).

One latent tumour biology per patient (burden, aggressiveness, immune response, metabolism, residual disease
or treatment sensitivity) drives the clinical table, every modality (CT, cfDNA fragments, methylation, ctDNA
variants, metabolomics, RECIST) and the outcomes, each modality seeing a noisy view of a subset, so that
multi-modal models have something real to find. ``truth/`` holds what no model may read: the true risk, the
latent variables, per-sample tumour fractions and an oracle summary.

Kinds:

* ``nsclc-postop`` (NCT07291921): neoadjuvant chemo-IO then surgery, stage IB-IIIA; endpoints rfs, os.
* ``sclc`` (NCT07026669): treatment-naive SCLC on chemo-IO; endpoints response (binary), pfs, os.
* ``nsclc-advanced`` (LUCAGEN, NCT03512847): first-line advanced NSCLC with serial ctDNA; endpoints pfs, os.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np

from omics_risk.data.synthetic import fragments, methylation
from omics_risk.data.synthetic.cohort import GENERATOR_VERSION, CohortPlan, SynthOptions, prepare_out, write_cohort
from omics_risk.data.synthetic.genome import get_genome
from omics_risk.data.synthetic.imaging import DEFAULT_SHAPE, DEFAULT_SPACING

__all__ = ["GENERATOR_VERSION", "KINDS", "SynthOptions", "generate_cohort", "is_current", "plan_cohort"]

KINDS = ("nsclc-postop", "sclc", "nsclc-advanced")
MIN_PATIENTS = 10


def plan_cohort(kind: str, n: int, seed: int, opts: SynthOptions | None = None) -> CohortPlan:
    """The plan of a synthetic cohort (tables, truth) without writing any file: the numbers ``omics-risk synth``
    writes for the same (kind, n, seed, options); for tests and benchmarks where rendering images and fragment files
    would dominate."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    opts = opts or SynthOptions()
    planner = importlib.import_module(f"omics_risk.data.synthetic.{kind.replace('-', '_')}").plan
    return planner(int(n), np.random.SeedSequence(int(seed)), opts, get_genome(opts.genome_scale))


def is_current(root: str | Path, *, kind: str, n: int, seed: int) -> bool:
    """Whether ``root`` holds the cohort this generator writes for (kind, n, seed): its ``truth/summary.json`` names
    them and the current ``GENERATOR_VERSION``. A cohort synthesised by an older generator keeps its files, so a
    benchmark or ``make demo`` that reused it would compare models across two different generators."""
    try:
        summary = json.loads((Path(root) / "truth" / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(summary, dict):
        return False
    return (summary.get("kind"), summary.get("n"), summary.get("seed"), summary.get("generator_version")) == (
        kind, int(n), int(seed), GENERATOR_VERSION)


def generate_cohort(kind: str, n: int, seed: int, out: str | Path, *,
                    ct_shape: tuple[int, int, int] = DEFAULT_SHAPE,
                    ct_spacing: tuple[float, float, float] = DEFAULT_SPACING,
                    fragments_per_sample: int = 80_000,
                    n_metabolites: int = 250,
                    workers: int | None = None,
                    progress: bool = True,
                    overwrite: bool = False,
                    draw_every: int | None = None) -> Path:
    """Write a synthetic cohort of ``n`` patients to ``out`` and return its path.

    The same (kind, n, seed, sizes) always gives byte-identical tables and identical image, fragment and
    methylation content, whatever ``workers`` is (default: all cores). ``out`` must be absent or empty;
    ``overwrite=True`` replaces a previous synthetic cohort there (and refuses any other non-empty folder).
    ``draw_every`` (nsclc-advanced only): a ctDNA draw every this many days instead of before every cycle.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    if n < MIN_PATIENTS:
        raise ValueError(f"n must be at least {MIN_PATIENTS}: prevalences, stage mix and latent scales are "
                         "calibrated over the cohort")
    if len(ct_shape) != 3 or min(ct_shape) < 8:
        raise ValueError(f"ct_shape must be three sizes >= 8 voxels, got {ct_shape}")
    if fragments_per_sample < 100:
        raise ValueError("fragments_per_sample must be at least 100")
    if n_metabolites < 20:
        raise ValueError("n_metabolites must be at least 20")
    if draw_every is not None and (kind != "nsclc-advanced" or int(draw_every) < 1):
        raise ValueError("draw_every (--draw-every) is a whole number of days >= 1, for --kind nsclc-advanced only")
    planner = importlib.import_module(f"omics_risk.data.synthetic.{kind.replace('-', '_')}").plan
    out = Path(out)
    prepare_out(out, overwrite)
    opts = SynthOptions(tuple(int(x) for x in ct_shape), tuple(float(x) for x in ct_spacing),
                        int(fragments_per_sample), int(n_metabolites),
                        draw_every=None if draw_every is None else int(draw_every))
    genome = get_genome(opts.genome_scale)
    fragments.fragment_model(genome)  # build shared tables before workers fork
    methylation.capture_efficiency(genome)
    plan = planner(int(n), np.random.SeedSequence(int(seed)), opts, genome)
    return write_cohort(plan, out, opts, int(n), int(seed), workers, progress, genome)

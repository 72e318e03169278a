"""cfDNA fragmentomics: fragment-length profile, binned coverage, DELFI short/long ratios, 5' end motifs and an
ichorCNA-style copy-number profile with a tumour-fraction estimate, from a fragment file or a paired-end BAM.

Every function works on the columnar :class:`~omics_risk.data.readers.Fragments` (numpy arrays) with ``bincount``
and ``searchsorted``, so a library of a few million fragments costs well under a second per feature group, where
FinaleToolkit streams fragments one at a time through pysam (``bench/bench_fragments.py`` measures both).
Conventions follow FinaleToolkit 1.1.0 so that results can be checked against it:

- a fragment is ``[start, end)``, 0-based; its midpoint is ``(start + end) // 2``. Policy ``midpoint`` counts a
  fragment in the interval that holds its midpoint, ``any`` in every interval it overlaps;
- the length histogram (``frag-length-bins``) and coverage (``coverage``) are equal to FinaleToolkit's for the same
  MAPQ / length filters (tested in ``tests/features/test_fragmentomics.py``). FinaleToolkit's median is off by one
  rank for an odd number of fragments; :func:`length_features` reports the usual median;
- end motifs (``end-motifs``): both 5' ends of every fragment, the k-mer at ``start`` on the forward strand and the
  reverse complement of the k bases ending at ``end``; k-mers touching a non-ACGT base are skipped. FinaleToolkit
  1.1.0 additionally counts a fragment once per 1-Mb window it overlaps (so a few in 10^4 twice) and does not apply
  ``--min-length``; we count each fragment once and apply the length filter.

Feature defaults suit the synthetic genome (~24 Mb, ``omics_risk.data.synthetic``): 100-kb bins merged to 1 Mb for
coverage and DELFI, 100-kb bins for the copy-number fit. For hg38 use the published resolutions:
``bin_size=100_000, coarse_bin_size=5_000_000, cna_bin_size=1_000_000`` (DELFI 100 kb -> 5 Mb, ichorCNA 1 Mb).

Each computation has its own module: ``fragment_bins`` (bin grid, counting), ``fragment_reference`` (FASTA, bin GC,
GC correction), ``fragment_lengths``, ``fragment_delfi``, ``fragment_motifs`` and ``fragment_copy_number`` (panel of
normals, tumour fraction). This module assembles them in :class:`FragmentomicsExtractor` and re-exports their public
names, so ``omics_risk.features.fragmentomics.X`` keeps working.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd

from omics_risk.data.contract import Cohort
from omics_risk.data.readers import AUTOSOME_RE, DataFileError, Fragments, read_chrom_sizes, read_fragments
from omics_risk.features.base import Extractor, SampleFailure
from omics_risk.features.fragment_bins import BinGrid, IntersectPolicy, bin_counts, interval_counts
from omics_risk.features.fragment_copy_number import (
    CopyNumberFit,
    PanelOfNormals,
    _load_panel,
    cna_features,
    copy_number_log2,
    fit_tumour_fraction,
)
from omics_risk.features.fragment_delfi import delfi_merge, delfi_profile
from omics_risk.features.fragment_lengths import length_features, length_histogram
from omics_risk.features.fragment_motifs import (
    end_motif_counts,
    finaletoolkit_motif_multiplicity,
    motif_diversity_score,
    motif_names,
)
from omics_risk.features.fragment_reference import (
    ReferenceGenome,
    _bin_composition,  # noqa: F401 - bench/bench_fragments.py clears this cache through this module
    _stamp,
    _whole_genome_codes,  # noqa: F401 - as _bin_composition
    gc_lowess_fit,
)

__all__ = [
    "FEATURE_GROUPS",
    "BinGrid",
    "CopyNumberFit",
    "FragmentomicsExtractor",
    "PanelOfNormals",
    "ReferenceGenome",
    "bin_counts",
    "cna_features",
    "copy_number_log2",
    "delfi_merge",
    "delfi_profile",
    "end_motif_counts",
    "finaletoolkit_motif_multiplicity",
    "fit_tumour_fraction",
    "gc_lowess_fit",
    "interval_counts",
    "length_features",
    "length_histogram",
    "motif_diversity_score",
    "motif_names",
]

FEATURE_GROUPS = ("length", "coverage", "delfi", "motif", "cna")


class FragmentomicsExtractor(Extractor):
    """cfDNA fragmentomics features of one fragment file or BAM per sample (see the module docstring).

    Feature groups (``groups``) and their names:

    - ``length``: ``len_mean, len_median, len_sd, len_mode, len_s150, len_short_100_150, len_short_long_ratio,
      len_period10_amp, len_bin_{lo}_{hi}`` (fragments with MAPQ >= ``min_mapq``, ``min_length`` - ``max_length``);
    - ``coverage``: ``cov_{chrom}_{k}``, fragments per million by ``intersect_policy`` in ``coarse_bin_size`` bins
      (a chromosome's last coarse bin, when shorter than ``coarse_merge_tail`` x ``coarse_bin_size``, is merged into
      the one before);
    - ``delfi``: ``delfi_ratio_{chrom}_{k}``, GC-corrected short/long ratio in ``bin_size`` bins merged to
      ``coarse_bin_size`` (GC correction, and masking bins less than ``min_acgt`` A/C/G/T, need
      ``references: genome_fasta``);
    - ``motif`` (only with ``genome_fasta``): ``motif_{KMER}`` frequencies and ``mds``;
    - ``cna``: ``tf_estimate, cna_ploidy, cna_fga, cna_n_segments, cna_noise, cna_llr, cna_log2_{chrom}`` from
      ``cna_bin_size`` bins, normalised by ``panel_of_normals`` when given (a path, absolute or relative to the
      cohort, or the name of a cohort ``references:`` entry).

    Bins tile the chromosomes of ``references: chrom_sizes`` (else the FASTA index, else each sample's furthest
    fragment end, which makes the last bins sample-dependent); ``chroms`` selects them: ``"autosomes"`` (chr1-22,
    with or without ``chr``), ``"all"``, or a list of names.
    """

    name: ClassVar[str] = "fragmentomics"
    formats: ClassVar[tuple[str, ...]] = ("fragments",)
    version: ClassVar[str] = "1"
    per_sample: ClassVar[bool] = True

    def __init__(
        self,
        groups: Sequence[str] = FEATURE_GROUPS,
        *,
        min_mapq: int = 30,
        min_length: int = 50,
        max_length: int = 350,
        length_bin_width: int = 10,
        intersect_policy: IntersectPolicy = "midpoint",
        bin_size: int = 100_000,
        coarse_bin_size: int = 1_000_000,
        coarse_merge_tail: float = 0.5,
        cna_bin_size: int = 100_000,
        min_acgt: float = 0.95,
        delfi_short: Sequence[int] = (100, 150),
        delfi_long: Sequence[int] = (151, 220),
        delfi_trim_percentile: float = 10.0,
        kmer: int = 4,
        motif_min_mapq: int = 20,
        motif_min_length: int | None = 50,
        motif_max_length: int | None = None,
        motif_ends: Literal["both", "strand"] = "both",
        chroms: str | Sequence[str] = "autosomes",
        panel_of_normals: str | None = None,
        cna_states: Sequence[int] = (1, 2, 3, 4, 5),
        cna_switch_prob: float = 0.01,
    ):
        unknown = sorted(set(groups) - set(FEATURE_GROUPS))
        if unknown:
            raise ValueError(f"unknown feature group(s) {unknown}; choose from {', '.join(FEATURE_GROUPS)}")
        if intersect_policy not in ("midpoint", "any"):
            raise ValueError(f"intersect_policy must be 'midpoint' or 'any', got {intersect_policy!r}")
        if coarse_bin_size % bin_size:
            raise ValueError(f"coarse_bin_size ({coarse_bin_size}) must be a multiple of bin_size ({bin_size})")
        if not 0 < min_length <= max_length:
            raise ValueError(f"need 0 < min_length <= max_length, got {min_length}, {max_length}")
        if motif_ends not in ("both", "strand"):
            raise ValueError(f"motif_ends must be 'both' or 'strand', got {motif_ends!r}")
        self.groups = tuple(g for g in FEATURE_GROUPS if g in set(groups))
        self.min_mapq = int(min_mapq)
        self.min_length = int(min_length)
        self.max_length = int(max_length)
        self.length_bin_width = int(length_bin_width)
        self.intersect_policy = intersect_policy
        self.bin_size = int(bin_size)
        self.coarse_bin_size = int(coarse_bin_size)
        self.coarse_merge_tail = float(coarse_merge_tail)
        self.cna_bin_size = int(cna_bin_size)
        self.min_acgt = float(min_acgt)
        self.delfi_short = (int(delfi_short[0]), int(delfi_short[1]))
        self.delfi_long = (int(delfi_long[0]), int(delfi_long[1]))
        self.delfi_trim_percentile = float(delfi_trim_percentile)
        self.kmer = int(kmer)
        self.motif_min_mapq = int(motif_min_mapq)
        self.motif_min_length = None if motif_min_length is None else int(motif_min_length)
        self.motif_max_length = None if motif_max_length is None else int(motif_max_length)
        self.motif_ends = motif_ends
        self.chroms = chroms if isinstance(chroms, str) else tuple(str(c) for c in chroms)
        self.panel_of_normals = panel_of_normals
        self.cna_states = tuple(int(s) for s in cna_states)
        self.cna_switch_prob = float(cna_switch_prob)

    # ----------------------------------------------------------------------------------------------- inputs

    def _panel_path(self, cohort: Cohort) -> Path | None:
        if not self.panel_of_normals:
            return None
        if self.panel_of_normals in cohort.spec.references:
            return cohort.path(cohort.spec.references[self.panel_of_normals])
        p = Path(self.panel_of_normals)
        return p if p.is_absolute() else cohort.path(str(p))

    def references(self, cohort: Cohort) -> dict[str, Path]:
        refs = {k: cohort.path(v) for k, v in cohort.spec.references.items() if k in ("genome_fasta", "chrom_sizes")}
        pon = self._panel_path(cohort)
        if pon is not None:
            refs["panel_of_normals"] = pon
        return refs

    def _select_chroms(self, sizes: Mapping[str, int]) -> dict[str, int]:
        if self.chroms == "all":
            return dict(sizes)
        if self.chroms == "autosomes":
            out = {c: s for c, s in sizes.items() if AUTOSOME_RE.match(c)}
            return dict(sorted(out.items(), key=lambda kv: int(AUTOSOME_RE.match(kv[0]).group(2))))
        if isinstance(self.chroms, str):
            raise ValueError(f"chroms must be 'autosomes', 'all' or a list of names, got {self.chroms!r}")
        return {c: sizes[c] for c in self.chroms if c in sizes}

    def _chrom_sizes(self, refs: Mapping[str, Path], fasta: ReferenceGenome | None, frags: Fragments) -> dict[str, int]:
        if "chrom_sizes" in refs:
            return read_chrom_sizes(refs["chrom_sizes"])
        if fasta is not None:
            return fasta.sizes
        ends = pd.Series(frags.end).groupby(frags.chrom).max()
        return {frags.chrom_names[int(c)]: int(e) for c, e in ends.items()}

    def _inputs(self, cohort: Cohort, frags: Fragments) -> tuple[BinGrid, ReferenceGenome | None, np.ndarray | None]:
        """The bin grid (at ``bin_size``), the reference (if any) and the panel of normals' log2 on the CNA grid."""
        refs = self.references(cohort)
        fasta = ReferenceGenome(refs["genome_fasta"]) if "genome_fasta" in refs else None
        sizes = self._select_chroms(self._chrom_sizes(refs, fasta, frags))
        if not sizes:
            raise SampleFailure(
                f"no chromosome left for binning with chroms={self.chroms!r}; set the extractor's chroms to the "
                "names your reference uses"
            )
        grid = BinGrid.from_sizes(sizes, self.bin_size)
        if not np.isin(grid.chrom_codes(frags.chrom_names), np.arange(len(grid.chroms))).any():
            raise SampleFailure(
                f"none of the fragment chromosomes ({', '.join(frags.chrom_names[:5])}) is among the binned "
                f"chromosomes ({', '.join(grid.chroms[:5])}, ...); use the reference's chromosome names"
            )
        panel = None
        pon_path = refs.get("panel_of_normals")
        if pon_path is not None and "cna" in self.groups:
            try:
                panel = _load_panel(_stamp(pon_path)).on(grid.with_bin_size(self.cna_bin_size))
            except FileNotFoundError as exc:
                raise SampleFailure(f"panel of normals {pon_path} not found") from exc
            except (DataFileError, ValueError) as exc:
                raise SampleFailure(f"panel of normals {pon_path}: {exc}") from exc
        return grid, fasta, panel

    def _read(self, cohort: Cohort, sample: pd.Series) -> Fragments:
        path = cohort.path(sample["path"])
        q = self.min_mapq if "motif" not in self.groups else min(self.min_mapq, self.motif_min_mapq)
        try:
            frags = read_fragments(path, min_mapq=q)
        except DataFileError as exc:
            raise SampleFailure(str(exc)) from exc
        except OSError as exc:  # permissions, a vanished file: still this sample's file only
            raise SampleFailure(f"{path} cannot be read ({exc.strerror or exc})") from exc
        if len(frags) == 0:
            raise SampleFailure(f"{path}: no fragments with MAPQ >= {q}")
        return frags

    # ----------------------------------------------------------------------------------------------- features

    def cna_profile(
        self, frags: Fragments, grid: BinGrid, fasta: ReferenceGenome | None, panel: np.ndarray | None = None
    ) -> tuple[BinGrid, np.ndarray]:
        """GC-corrected log2 ratios on the ``cna_bin_size`` grid (fragments already filtered)."""
        cgrid = grid.with_bin_size(self.cna_bin_size)
        counts = bin_counts(frags, cgrid, "midpoint")
        gc = None
        bases = (cgrid.end - cgrid.start).astype(float)
        if fasta is not None:
            gc, acgt = fasta.bin_composition(cgrid)
            bases = bases * acgt
        return cgrid, copy_number_log2(counts, bases, gc=gc, panel=panel, min_bases=0.5 * self.cna_bin_size)

    def features(
        self, frags: Fragments, grid: BinGrid, fasta: ReferenceGenome | None = None, panel: np.ndarray | None = None
    ) -> dict[str, float]:
        """All features of one library (``frags`` as read, before filtering) on ``grid`` (at ``bin_size``)."""
        main = frags.filter(min_mapq=self.min_mapq, min_length=self.min_length, max_length=self.max_length)
        if len(main) == 0:
            raise SampleFailure(
                f"no fragments with MAPQ >= {self.min_mapq} and length {self.min_length}-{self.max_length} bp"
            )
        out: dict[str, float] = {}
        if "length" in self.groups:
            hist = length_histogram(main.lengths, self.min_length, self.max_length)
            out.update(
                length_features(
                    hist, self.min_length, bin_width=self.length_bin_width, short=self.delfi_short, long=self.delfi_long
                )
            )
        coarse = grid.with_bin_size(self.coarse_bin_size, self.coarse_merge_tail)
        if "coverage" in self.groups:
            cov = bin_counts(main, coarse, self.intersect_policy) * (1e6 / len(main))
            out.update(zip(coarse.labels("cov"), (float(v) for v in cov), strict=True))
        if "delfi" in self.groups:
            gc = mask = None
            if fasta is not None:
                gc, acgt = fasta.bin_composition(grid)
                mask = acgt >= self.min_acgt
            prof = delfi_profile(
                frags.filter(min_mapq=self.min_mapq),
                grid,
                gc=gc,
                mask=mask,
                short=self.delfi_short,
                long=self.delfi_long,
                trim_percentile=self.delfi_trim_percentile,
            )
            ratio = delfi_merge(prof, grid, coarse)
            out.update(zip(coarse.labels("delfi_ratio"), (float(v) for v in ratio), strict=True))
        if "motif" in self.groups and fasta is not None:
            mf = frags.filter(
                min_mapq=self.motif_min_mapq, min_length=self.motif_min_length, max_length=self.motif_max_length
            )
            counts = end_motif_counts(mf, fasta, self.kmer, self.motif_ends)
            total = counts.sum()
            freqs = counts / total if total else np.full(len(counts), np.nan)
            out.update(zip((f"motif_{m}" for m in motif_names(self.kmer)), (float(v) for v in freqs), strict=True))
            out["mds"] = motif_diversity_score(counts, self.kmer)
        if "cna" in self.groups:
            cgrid, log2 = self.cna_profile(main, grid, fasta, panel)
            fit = fit_tumour_fraction(log2, cgrid.chrom_index, states=self.cna_states, switch_prob=self.cna_switch_prob)
            out.update(cna_features(log2, fit, cgrid))
        return out

    def extract_sample(self, cohort: Cohort, sample: pd.Series) -> dict[str, float]:
        frags = self._read(cohort, sample)
        grid, fasta, panel = self._inputs(cohort, frags)
        return self.features(frags, grid, fasta, panel)

    def build_panel_of_normals(
        self, cohort: Cohort, samples: pd.DataFrame | Iterable[str], *, min_samples: int = 1
    ) -> PanelOfNormals:
        """A panel of normals from ``samples`` (rows of samples.csv, or sample ids) of ``cohort``, with these settings.

        Use libraries without tumour DNA (healthy donors, or samples of a cohort known to be tumour-free); save it
        with :meth:`PanelOfNormals.save` and point ``panel_of_normals`` at the file. A library that cannot be used
        (unreadable, no fragment passing the filters, no usable copy-number bin) is left out with a warning naming
        it and the reason (also in ``skipped``), so one bad library does not cost the panel; fewer than
        ``min_samples`` usable libraries raise a ValueError listing every reason. A broken reference file raises.
        """
        if not isinstance(samples, pd.DataFrame):
            ids = list(samples)
            samples = cohort.samples[cohort.samples["sample_id"].isin(ids)]
        profiles = []
        skipped: dict[str, str] = {}
        grid = None
        for _, row in samples.iterrows():
            try:
                frags = self._read(cohort, row)
                sample_grid, fasta, _ = self._inputs(cohort, frags)
                main = frags.filter(min_mapq=self.min_mapq, min_length=self.min_length, max_length=self.max_length)
                if len(main) == 0:
                    raise SampleFailure(
                        f"{row['path']}: no fragments with MAPQ >= {self.min_mapq} and length "
                        f"{self.min_length}-{self.max_length} bp"
                    )
                profile = self.cna_profile(main, sample_grid, fasta)[1]
                if not np.isfinite(profile).any():
                    raise SampleFailure(f"{row['path']}: no copy-number bin with enough coverage")
            except SampleFailure as exc:
                skipped[str(row["sample_id"])] = str(exc)
                continue
            profiles.append(profile)
            grid = sample_grid
        shown = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        if grid is None or len(profiles) < max(1, min_samples):
            raise ValueError(
                f"a panel of normals needs at least {max(1, min_samples)} usable normal librar(ies); "
                f"{len(profiles)} of the {len(samples)} given are usable" + (f" (left out: {shown})" if skipped else "")
            )
        if skipped:
            warnings.warn(
                f"panel of normals built from {len(profiles)} of {len(samples)} libraries; left out: {shown}",
                stacklevel=2,
            )
        pon = PanelOfNormals.build(profiles, grid.with_bin_size(self.cna_bin_size))
        return PanelOfNormals(pon.grid, pon.log2, pon.n_samples, skipped)

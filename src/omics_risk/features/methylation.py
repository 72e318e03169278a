"""Targeted cfDNA methylation (Bismark coverage) into region betas and a deconvolution tumour fraction.

Per library (one ``bismark_cov`` file per sample):

- **pooled region beta**: ``sum(M) / sum(M + U)`` over the CpGs of each region of the panel BED (the convention of
  targeted panels; a mean of per-CpG betas would over-weight poorly covered CpGs). A region read fewer than
  ``min_coverage`` times (or at fewer than ``min_cpgs`` CpGs) is NaN: missing, not zero.
- **tumour fraction** ``meth_tf``: the library's region betas as a non-negative mixture of reference profiles
  (``references: methylation_profiles``, e.g. ``plasma`` and ``tumour``), fitted by NNLS with regions weighted by
  coverage and the proportions normalised to sum 1 (MethAtlas / UXM style). ``meth_prop_<reference>`` reports
  every proportion.
- **summaries**: covered regions, median region coverage, mean and pooled beta of tumour-marker regions, and a
  marker-wise tumour-fraction estimate (median of ``(beta - plasma) / (tumour - plasma)``) that does not assume
  the patient's tumour matches the reference on every marker.

Coordinates: Bismark coverage positions are 1-based (a CpG's C), BED regions 0-based half-open, so a CpG at
1-based position ``p`` lies in ``[start, end)`` when ``start < p <= end``. Chromosome names match with or without a
``chr`` prefix. Everything here reads one library and fixed reference files: no patient learns from another.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from omics_risk.data.contract import Cohort
from omics_risk.data.readers import DataFileError, read_bed, read_bismark_cov
from omics_risk.features.base import Extractor, SampleFailure

__all__ = [
    "MethylationExtractor",
    "RegionSet",
    "deconvolve",
    "load_region_set",
    "normalise_chrom",
    "pool_regions",
]

#: Profile-table columns that describe a region rather than a reference cell type.
ANNOTATION_COLUMNS = frozenset(
    {
        "region_id",
        "chrom",
        "start",
        "end",
        "region_class",
        "class",
        "n_cpg",
        "name",
        "strand",
        "score",
        "width",
        "length",
        "gene",
    }
)
#: Positions are combined with a chromosome code into one sortable int64 key: code * _CHROM_STRIDE + position.
_CHROM_STRIDE = np.int64(1) << np.int64(40)


def normalise_chrom(names: Iterable[Any]) -> np.ndarray:
    """Chromosome names without a ``chr`` prefix (``chr1`` and ``1`` match), as a string array."""
    arr = np.asarray([str(n) for n in names], dtype=object)
    return np.array([n[3:] if n[:3].lower() == "chr" else n for n in arr], dtype=object)


def pool_regions(cov: pd.DataFrame, chrom: Sequence[Any], start: np.ndarray, end: np.ndarray) -> pd.DataFrame:
    """Methylated reads, total reads and covered CpGs of each BED region ``[start, end)`` (0-based, half-open).

    ``cov`` is a :func:`read_bismark_cov` frame (1-based ``start``). Vectorised: CpGs are sorted once by
    (chromosome, position) and each region's slice is found with two ``searchsorted`` calls on cumulative sums,
    so overlapping regions and unsorted files are handled and the cost is O((CpGs + regions) log CpGs).
    """
    start = np.asarray(start, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    cats = cov["chrom"].cat.categories if isinstance(cov["chrom"].dtype, pd.CategoricalDtype) else None
    if cats is None:
        cov = cov.assign(chrom=cov["chrom"].astype("category"))
        cats = cov["chrom"].cat.categories
    cat_keys = normalise_chrom(cats)
    code_of = {k: i for i, k in enumerate(cat_keys)}
    codes = cov["chrom"].cat.codes.to_numpy().astype(np.int64)
    pos = cov["start"].to_numpy(dtype=np.int64)
    meth = cov["count_methylated"].to_numpy(dtype=np.int64)
    total = meth + cov["count_unmethylated"].to_numpy(dtype=np.int64)
    key = codes * _CHROM_STRIDE + pos
    if len(key) > 1 and not np.all(key[1:] >= key[:-1]):
        order = np.argsort(key, kind="stable")
        key, meth, total = key[order], meth[order], total[order]
    cum_m = np.concatenate([[0], np.cumsum(meth)])
    cum_t = np.concatenate([[0], np.cumsum(total)])
    cum_n = np.concatenate([[0], np.cumsum(total > 0)])
    region_code = np.array([code_of.get(k, -1) for k in normalise_chrom(chrom)], dtype=np.int64)
    known = region_code >= 0
    base = np.where(known, region_code, 0) * _CHROM_STRIDE
    lo = np.searchsorted(key, base + start + 1, side="left")  # first CpG with 1-based position > start
    hi = np.searchsorted(key, base + end, side="right")  # last CpG with 1-based position <= end
    hi = np.where(known, np.maximum(hi, lo), lo)
    return pd.DataFrame(
        {
            "count_methylated": cum_m[hi] - cum_m[lo],
            "coverage": cum_t[hi] - cum_t[lo],
            "n_cpg": cum_n[hi] - cum_n[lo],
        }
    )


def deconvolve(
    beta: np.ndarray, profiles: np.ndarray, weights: np.ndarray | None = None, min_regions: int | None = None
) -> tuple[np.ndarray, float]:
    """Mixture proportions (summing to 1) of reference ``profiles`` (regions x references) explaining ``beta``.

    Weighted NNLS on the regions where the beta and every profile are finite (rows scaled by sqrt(weight), so the
    squared error of a region counts in proportion to its weight, e.g. its read coverage), then normalised to sum
    1. Returns the proportions (NaN when fewer than ``min_regions`` usable regions, default references + 1, or
    when the fit is all zero) and the weighted root-mean-square residual.
    """
    beta = np.asarray(beta, dtype=float)
    profiles = np.asarray(profiles, dtype=float)
    k = profiles.shape[1]
    w = np.ones(len(beta)) if weights is None else np.asarray(weights, dtype=float)
    ok = np.isfinite(beta) & np.all(np.isfinite(profiles), axis=1) & np.isfinite(w) & (w > 0)
    need = k + 1 if min_regions is None else min_regions
    if ok.sum() < max(need, 1):
        return np.full(k, np.nan), float("nan")
    sw = np.sqrt(w[ok] / w[ok].mean())
    a = profiles[ok] * sw[:, None]
    b = beta[ok] * sw
    x, _ = nnls(a, b)
    if not np.isfinite(x).all() or x.sum() <= 0:
        return np.full(k, np.nan), float("nan")
    resid = b - a @ x
    return x / x.sum(), float(np.sqrt(np.mean(resid**2)))


@dataclass
class RegionSet:
    """The methylation panel with its reference profiles, prepared once per process."""

    ids: np.ndarray  # region_id per region (str)
    chrom: np.ndarray  # chromosome as written in the BED
    start: np.ndarray  # 0-based
    end: np.ndarray  # exclusive
    classes: np.ndarray | None  # region class (from the profiles' region_class column), if known
    profiles: np.ndarray | None  # regions x references reference betas (NaN where a region has no profile)
    references: list[str]  # profile column names, in order


def _read_profiles(path: Path, columns: Sequence[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """The profile CSV indexed by region_id, and the reference columns to deconvolve against."""
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataFileError(path, f"cannot be read as CSV ({exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    if "region_id" not in df.columns:
        raise DataFileError(
            path,
            "needs a 'region_id' column (matching the region BED names) and one column of "
            "reference betas per cell type, e.g. plasma, tumour",
            1,
            "region_id",
        )
    df["region_id"] = df["region_id"].astype(str).str.strip()
    dup = df["region_id"][df["region_id"].duplicated()]
    if len(dup):
        raise DataFileError(path, f"region_id '{dup.iloc[0]}' appears more than once", None, "region_id")
    df = df.set_index("region_id")
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise DataFileError(
                path,
                f"reference column(s) {', '.join(missing)} are missing (columns: {', '.join(df.columns)})",
                1,
                missing[0],
            )
        refs = list(columns)
    else:
        refs = [
            c
            for c in df.columns
            if c.lower() not in ANNOTATION_COLUMNS
            and pd.api.types.is_numeric_dtype(df[c])
            and df[c].dropna().between(0, 1).all()
        ]
        if not refs:
            raise DataFileError(
                path,
                "no reference profile columns found: give numeric columns of betas in [0, 1] "
                "(one per cell type), or name them with profile_columns",
            )
    for c in refs:
        vals = pd.to_numeric(df[c], errors="coerce")
        bad = df[c].notna() & (vals.isna() | ~vals.between(0, 1))
        if bad.any():
            raise DataFileError(
                path,
                f"reference column '{c}' must hold betas in [0, 1]; region "
                f"'{bad.index[bad.to_numpy()][0]}' has {df.loc[bad, c].iloc[0]!r}",
                None,
                c,
            )
        df[c] = vals
    return df, refs


def load_region_set(
    regions_bed: Path, profiles_csv: Path | None = None, profile_columns: Sequence[str] | None = None
) -> RegionSet:
    """Read the region BED (region ids from its name column, else ``chrom_start_end``) and optional profiles."""
    bed = read_bed(regions_bed)
    if len(bed) == 0:
        raise DataFileError(regions_bed, "holds no regions")
    if "name" in bed.columns:
        ids = bed["name"].astype(str).str.strip().to_numpy()
    else:
        ids = (bed["chrom"].astype(str) + "_" + bed["start"].astype(str) + "_" + bed["end"].astype(str)).to_numpy()
    dup = pd.Series(ids)[pd.Series(ids).duplicated()]
    if len(dup):
        raise DataFileError(
            regions_bed,
            f"region name '{dup.iloc[0]}' appears more than once; region names become feature names and must be unique",
            None,
            "name",
        )
    classes = None
    profiles = None
    refs: list[str] = []
    if profiles_csv is not None:
        prof, refs = _read_profiles(profiles_csv, profile_columns)
        aligned = prof.reindex(ids)
        profiles = aligned[refs].to_numpy(dtype=float)
        for col in ("region_class", "class"):
            if col in prof.columns:
                classes = aligned[col].astype(object).where(aligned[col].notna(), None).to_numpy()
                break
    return RegionSet(
        ids=np.asarray(ids, dtype=object),
        chrom=bed["chrom"].astype(str).to_numpy(),
        start=bed["start"].to_numpy(np.int64),
        end=bed["end"].to_numpy(np.int64),
        classes=classes,
        profiles=profiles,
        references=refs,
    )


def _as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


class MethylationExtractor(Extractor):
    """Region betas, tumour-marker summaries and an NNLS tumour fraction of one Bismark coverage library.

    Args:
        min_coverage: reads (M + U summed over the region's CpGs) a region needs; below it the region is NaN.
        min_cpgs: covered CpGs a region needs.
        region_features: which regions become ``meth_<region_id>`` features: ``"all"``, ``"markers"`` (the
            tumour-marker regions, see below) or ``"none"`` (summaries only).
        region_classes: if given, only regions of these classes (profile column ``region_class``) are features.
        profile_columns: reference columns of the profile CSV to deconvolve against; default every numeric
            column with values in [0, 1] that is not an annotation (start, end, n_cpg ...).
        tumour_columns: the reference column(s) whose summed proportion is ``meth_tf``.
        marker_classes: region classes that are tumour markers; default: regions where the tumour reference
            exceeds every other reference by at least ``marker_min_delta`` (hypermethylated in tumour).
        marker_min_delta: see ``marker_classes``.
        regions_reference / profiles_reference: the ``references:`` names in cohort.yaml.
    """

    name: ClassVar[str] = "methylation"
    formats: ClassVar[tuple[str, ...]] = ("bismark_cov",)
    version: ClassVar[str] = "1"
    per_sample: ClassVar[bool] = True

    def __init__(
        self,
        min_coverage: int = 10,
        min_cpgs: int = 1,
        region_features: str = "all",
        region_classes: Sequence[str] | None = None,
        profile_columns: Sequence[str] | None = None,
        tumour_columns: Sequence[str] | str = ("tumour",),
        marker_classes: Sequence[str] | None = None,
        marker_min_delta: float = 0.3,
        regions_reference: str = "methylation_regions",
        profiles_reference: str = "methylation_profiles",
    ):
        if region_features not in ("all", "markers", "none"):
            raise ValueError(f"region_features must be 'all', 'markers' or 'none', got {region_features!r}")
        if min_coverage < 1 or min_cpgs < 1:
            raise ValueError("min_coverage and min_cpgs must be >= 1")
        self.min_coverage = int(min_coverage)
        self.min_cpgs = int(min_cpgs)
        self.region_features = region_features
        self.region_classes = _as_tuple(region_classes)
        self.profile_columns = _as_tuple(profile_columns)
        self.tumour_columns = _as_tuple(tumour_columns) or ()
        self.marker_classes = _as_tuple(marker_classes)
        self.marker_min_delta = float(marker_min_delta)
        self.regions_reference = regions_reference
        self.profiles_reference = profiles_reference
        self._cache: dict[tuple, tuple[RegionSet, dict[str, np.ndarray]]] = {}

    # ------------------------------------------------------------------------------------------ references
    def references(self, cohort: Cohort) -> dict[str, Path]:
        refs = cohort.spec.references
        return {
            name: cohort.path(refs[name]) for name in (self.regions_reference, self.profiles_reference) if name in refs
        }

    def _panel(self, cohort: Cohort) -> tuple[RegionSet, dict[str, np.ndarray]]:
        """The region set and its masks (features, markers, tumour references), cached per reference files."""
        refs = self.references(cohort)
        if self.regions_reference not in refs:
            raise SampleFailure(
                f"cohort.yaml names no '{self.regions_reference}' under references: (a BED of the "
                "methylation panel's regions); add it to extract methylation features"
            )
        bed = refs[self.regions_reference]
        prof = refs.get(self.profiles_reference)
        key = tuple(
            (str(p), p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else (str(p),)
            for p in (bed, prof)
            if p is not None
        )
        if key not in self._cache:
            for p in (bed, prof):
                if p is not None and not p.is_file():
                    raise SampleFailure(f"reference file {p} (cohort.yaml references:) not found")
            panel = load_region_set(bed, prof, self.profile_columns)
            self._cache.clear()
            self._cache[key] = (panel, self._masks(panel))
        return self._cache[key]

    def _masks(self, panel: RegionSet) -> dict[str, np.ndarray]:
        n = len(panel.ids)
        tumour_idx = [panel.references.index(c) for c in self.tumour_columns if c in panel.references]
        if panel.profiles is not None and self.tumour_columns and len(tumour_idx) != len(self.tumour_columns):
            missing = [c for c in self.tumour_columns if c not in panel.references]
            raise SampleFailure(
                f"tumour_columns {', '.join(missing)} are not reference profile columns "
                f"({', '.join(panel.references)}); set tumour_columns or profile_columns"
            )
        if self.marker_classes is not None:
            if panel.classes is None:
                raise SampleFailure("marker_classes needs a 'region_class' column in the methylation profiles")
            marker = np.isin(panel.classes.astype(str), list(self.marker_classes))
        elif panel.profiles is not None and tumour_idx and len(tumour_idx) < panel.profiles.shape[1]:
            other = np.delete(panel.profiles, tumour_idx, axis=1)
            tum = panel.profiles[:, tumour_idx].max(axis=1)
            with np.errstate(invalid="ignore"):
                marker = np.nan_to_num(tum - np.nanmax(other, axis=1), nan=-1.0) >= self.marker_min_delta
        else:
            marker = np.zeros(n, dtype=bool)
        if self.region_features == "all":
            emit = np.ones(n, dtype=bool)
        elif self.region_features == "markers":
            emit = marker.copy()
        else:
            emit = np.zeros(n, dtype=bool)
        if self.region_classes is not None:
            if panel.classes is None:
                raise SampleFailure("region_classes needs a 'region_class' column in the methylation profiles")
            emit &= np.isin(panel.classes.astype(str), list(self.region_classes))
        return {"emit": emit, "marker": marker, "tumour_idx": np.asarray(tumour_idx, dtype=int)}

    # ------------------------------------------------------------------------------------------ features
    def features_from_cov(self, cov: pd.DataFrame, panel: RegionSet, masks: dict[str, np.ndarray]) -> dict[str, float]:
        """Features of one library's coverage frame against a prepared panel (no file access)."""
        pooled = pool_regions(cov, panel.chrom, panel.start, panel.end)
        meth = pooled["count_methylated"].to_numpy(float)
        total = pooled["coverage"].to_numpy(float)
        ok = (total >= self.min_coverage) & (pooled["n_cpg"].to_numpy() >= self.min_cpgs)
        with np.errstate(invalid="ignore", divide="ignore"):
            beta = np.where(ok, meth / np.where(total > 0, total, 1.0), np.nan)
        out: dict[str, float] = {
            f"meth_{rid}": float(b) for rid, b in zip(panel.ids[masks["emit"]], beta[masks["emit"]], strict=True)
        }
        n_ok = int(ok.sum())
        out["meth_n_covered_regions"] = float(n_ok)
        out["meth_frac_covered_regions"] = n_ok / len(beta)
        out["meth_median_region_coverage"] = float(np.median(total))
        marker = masks["marker"] & ok
        out["meth_marker_mean_beta"] = float(beta[marker].mean()) if marker.any() else float("nan")
        out["meth_marker_pooled_beta"] = (
            float(meth[marker].sum() / total[marker].sum()) if marker.any() else float("nan")
        )
        if panel.profiles is not None:
            props, rmse = deconvolve(beta, panel.profiles, np.where(ok, total, 0.0))
            for ref, p in zip(panel.references, props, strict=True):
                out[f"meth_prop_{ref}"] = float(p)
            tidx = masks["tumour_idx"]
            out["meth_tf"] = float(props[tidx].sum()) if len(tidx) else float("nan")
            out["meth_nnls_rmse"] = rmse
            out["meth_tf_markers"] = self._marker_tf(beta, panel, masks, marker)
        return out

    @staticmethod
    def _marker_tf(beta: np.ndarray, panel: RegionSet, masks: dict[str, np.ndarray], marker: np.ndarray) -> float:
        """Median over covered marker regions of the single-region mixing fraction, clipped to [0, 1]."""
        tidx = masks["tumour_idx"]
        if panel.profiles is None or not len(tidx) or not marker.any():
            return float("nan")
        tum = panel.profiles[:, tidx].mean(axis=1)
        other = np.nanmean(np.delete(panel.profiles, tidx, axis=1), axis=1)
        span = tum - other
        use = marker & np.isfinite(span) & (np.abs(span) > 1e-6)
        if not use.any():
            return float("nan")
        return float(np.median(np.clip((beta[use] - other[use]) / span[use], 0.0, 1.0)))

    def extract_sample(self, cohort: Cohort, sample: pd.Series) -> dict[str, float]:
        panel, masks = self._panel(cohort)
        path = cohort.path(sample["path"])
        if not path.is_file():
            raise SampleFailure(f"Bismark coverage file {sample['path']} not found")
        try:
            cov = read_bismark_cov(path)
        except DataFileError as exc:  # this library's file: this sample fails, with the reader's located problem
            raise SampleFailure(str(exc)) from exc
        except OSError as exc:
            raise SampleFailure(f"{path} cannot be read ({exc.strerror or exc})") from exc
        if len(cov) == 0:
            raise SampleFailure(f"{sample['path']} holds no CpG")
        feats = self.features_from_cov(cov, panel, masks)
        if feats["meth_n_covered_regions"] == 0:
            cov_chroms = ", ".join(map(str, cov["chrom"].cat.categories[:5]))
            bed_chroms = ", ".join(dict.fromkeys(map(str, panel.chrom[:50])))
            raise SampleFailure(
                f"no panel region reaches {self.min_coverage} reads in {sample['path']} (its "
                f"chromosomes: {cov_chroms}; the region BED's: {bed_chroms[:80]}); is it the right "
                "panel and genome build?"
            )
        return feats

"""The synthetic cohort generator: contract layout, determinism, truth, and that the biology signals are real.

Tiny cohorts (30 patients, a few thousand fragments) keep this fast; the oracle / lead-time checks run the
kinds' planners at n = 300 without writing files. The 300-patient timing test is marked slow.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pysam
import pytest
import yaml
from scipy.stats import spearmanr

from omics_risk.data.synthetic import KINDS, generate_cohort
from omics_risk.data.synthetic.cohort import SynthOptions, summarise
from omics_risk.data.synthetic.genome import get_genome

N = 30
SEED = 7
SMALL = {"fragments_per_sample": 4000, "ct_shape": (32, 32, 20), "n_metabolites": 60, "progress": False}
FRAG_COLUMNS = ["chrom", "start", "end", "mapq", "strand"]
COV_COLUMNS = ["chrom", "start", "end", "percent", "meth", "unmeth"]


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("synthetic")
    return {kind: generate_cohort(kind, N, SEED, base / kind, workers=2, **SMALL) for kind in KINDS}


def read_frag(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None, names=FRAG_COLUMNS, comment="#")


def read_cov(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None, names=COV_COLUMNS)


def samples_with_truth(root: Path, modality: str) -> pd.DataFrame:
    s = pd.read_csv(root / "samples.csv")
    t = pd.read_csv(root / "truth" / "samples.csv")
    t = t.reindex(columns=["sample_id", "tumour_fraction", "mean_vaf"])
    return s[s["modality"] == modality].merge(t, on="sample_id")


# --------------------------------------------------------------------------------------------------- layout


@pytest.mark.parametrize("kind", KINDS)
def test_layout_follows_the_contract(cohorts: dict[str, Path], kind: str) -> None:
    root = cohorts[kind]
    spec = yaml.safe_load((root / "cohort.yaml").read_text())
    assert spec["contract_version"] == 1 and spec["time_unit"] == "days"
    clinical = pd.read_csv(root / "clinical.csv")
    samples = pd.read_csv(root / "samples.csv", keep_default_na=False)
    assert clinical["patient_id"].is_unique and len(clinical) == N
    for ep in spec["endpoints"].values():
        cols = [ep["time"], ep["event"]] if ep["type"] == "survival" else [ep["column"]]
        assert set(cols) <= set(clinical.columns)
        if ep["type"] == "survival":
            assert (clinical[ep["time"]] >= 0).all() and set(clinical[ep["event"]].unique()) <= {0, 1}
    assert set(spec["clinical"]) <= set(clinical.columns)
    for col, typ in spec["clinical"].items():
        if isinstance(typ, dict):  # ordinal: every value is a declared level
            assert set(clinical[col].dropna()) <= set(typ["levels"])
    assert 0 < clinical.drop(columns="patient_id").isna().to_numpy().mean() < 0.1  # a few % missing

    assert list(samples.columns) == ["patient_id", "sample_id", "modality", "timepoint", "day", "path", "mask_path"]
    assert samples["sample_id"].is_unique
    assert not samples.duplicated(["patient_id", "modality", "timepoint"]).any()
    assert set(samples["patient_id"]) <= set(clinical["patient_id"])
    assert set(samples["modality"]) <= set(spec["modalities"])
    for row in samples.itertuples():
        assert (root / row.path).exists(), row.path
        assert (row.mask_path != "") == (row.modality == "ct")
        if row.mask_path:
            assert (root / row.mask_path).exists()
    for ref in spec["references"].values():
        assert (root / ref).exists()
    assert (root / "reference" / "genome.fa.fai").exists()

    if "metabolomics" in spec["modalities"]:
        opts = spec["modalities"]["metabolomics"]
        sheet = pd.read_csv(root / opts["sample_sheet"])
        matrix = pd.read_csv(root / "metabolomics" / "matrix.csv")
        assert list(matrix.columns[1:]) == sheet["sample_id"].tolist()
        assert {"sample", "qc", "blank"} == set(sheet["sample_type"])
        assert set(sheet.loc[sheet["sample_type"] == "sample", "sample_id"]) == set(
            samples.loc[samples["modality"] == "metabolomics", "sample_id"])
        values = matrix.iloc[:, 1:].to_numpy(float)
        assert 0.01 < np.isnan(values).mean() < 0.5 and np.nanmin(values) > 0
    if "ctdna" in spec["modalities"]:
        var = pd.read_csv(root / "ctdna" / "variants.csv")
        assert list(var.columns) == ["patient_id", "sample_id", "day", "gene", "variant", "vaf", "depth", "alt_count"]
        assert var["vaf"].between(0, 1).all() and (var["alt_count"] <= var["depth"]).all()
        assert set(var["sample_id"]) == set(samples.loc[samples["modality"] == "ctdna", "sample_id"])


@pytest.mark.parametrize("kind", KINDS)
def test_cohort_passes_the_validator(cohorts: dict[str, Path], kind: str) -> None:
    from omics_risk.data.validate import validate_cohort

    report = validate_cohort(cohorts[kind], deep=True, workers=2, progress=False)
    errors = [str(p) for p in report.problems if p.severity == "error"]
    assert errors == []


def test_ct_images_and_masks_share_a_grid(cohorts: dict[str, Path]) -> None:
    for kind in KINDS:
        root = cohorts[kind]
        s = pd.read_csv(root / "samples.csv")
        for row in s[s["modality"] == "ct"].head(12).itertuples():
            img, mask = nib.load(root / row.path), nib.load(root / row.mask_path)
            hu = np.asarray(img.dataobj)
            m = np.asarray(mask.dataobj)
            assert hu.dtype == np.int16 and hu.shape == SMALL["ct_shape"] == m.shape
            assert np.allclose(img.affine, mask.affine)
            assert m.sum() > 0 and set(np.unique(m)) <= {0, 1}
            assert hu.min() < -800 and np.median(hu[m == 0]) < -500  # lung background
            assert np.median(hu[m == 1]) > -600  # a soft-tissue (or part-solid / post-surgical) lesion


def test_fragment_files_are_sorted_indexed_bed(cohorts: dict[str, Path]) -> None:
    root = cohorts["sclc"]
    sizes = pd.read_csv(root / "reference" / "genome.chrom.sizes", sep="\t", header=None, index_col=0)[1]
    order = {c: i for i, c in enumerate(sizes.index)}
    s = pd.read_csv(root / "samples.csv")
    for row in s[s["modality"] == "cfdna"].head(6).itertuples():
        path = root / row.path
        with open(path, "rb") as fh:
            assert fh.read(4) == b"\x1f\x8b\x08\x04"  # BGZF (gzip with the extra field)
        assert Path(str(path) + ".tbi").exists()
        df = read_frag(path)
        key = df["chrom"].map(order).to_numpy() * 10**9 + df["start"].to_numpy()
        assert (np.diff(key) >= 0).all()
        assert (df["start"] >= 0).all() and (df["end"] > df["start"]).all()
        assert (df["end"] <= df["chrom"].map(sizes)).all()
        assert set(df["strand"]) == {"+", "-"} and df["mapq"].between(0, 60).all()
        assert 0.005 < (df["mapq"] < 30).mean() < 0.1
        length = df["end"] - df["start"]
        assert 150 < length.median() < 175
        with pysam.TabixFile(str(path)) as tbx:
            assert len(list(tbx.fetch("chr1", 0, int(sizes["chr1"])))) == int((df["chrom"] == "chr1").sum())


def test_cov_files_are_bismark_cpgs(cohorts: dict[str, Path]) -> None:
    root = cohorts["nsclc-postop"]
    fasta = pysam.FastaFile(str(root / "reference" / "genome.fa"))
    bed = pd.read_csv(root / "reference" / "methylation_regions.bed", sep="\t", header=None)
    s = pd.read_csv(root / "samples.csv")
    path = root / s.loc[s["modality"] == "methylation", "path"].iloc[0]
    with gzip.open(path, "rt") as fh:
        first = fh.readline().split("\t")
    assert len(first) == 6
    cov = read_cov(path)
    assert (cov["start"] == cov["end"]).all()
    depth = cov["meth"] + cov["unmeth"]
    assert (depth > 0).all() and 15 < depth.median() < 50
    assert np.allclose(cov["percent"], 100 * cov["meth"] / depth, atol=0.01)
    for r in cov.sample(40, random_state=0).itertuples():  # every position is the C of a CpG in a panel region
        assert fasta.fetch(r.chrom, r.start - 1, r.start + 1) == "CG"
        reg = bed[(bed[0] == r.chrom) & (bed[1] < r.start) & (bed[2] >= r.start)]
        assert len(reg) == 1


# --------------------------------------------------------------------------------------------------- truth


@pytest.mark.parametrize("kind", KINDS)
def test_truth_files(cohorts: dict[str, Path], kind: str) -> None:
    root = cohorts[kind]
    spec = yaml.safe_load((root / "cohort.yaml").read_text())
    tp = pd.read_csv(root / "truth" / "patients.csv")
    ts = pd.read_csv(root / "truth" / "samples.csv")
    summary = json.loads((root / "truth" / "summary.json").read_text())
    assert len(tp) == N
    for ep in spec["endpoints"]:
        assert tp[f"true_risk_{ep}"].notna().all()
    assert any(c.startswith("latent_") for c in tp.columns) and any(c.startswith("risk_") for c in tp.columns)
    assert any(c.startswith("view_") for c in tp.columns)
    samples = pd.read_csv(root / "samples.csv")
    assert ts["sample_id"].tolist() == samples["sample_id"].tolist()
    plasma = ts["modality"].isin(["cfdna", "methylation", "ctdna"])
    assert ts.loc[plasma, "tumour_fraction"].between(0, 1).all()
    assert summary["kind"] == kind and summary["n"] == N and summary["seed"] == SEED
    assert set(summary["oracle_cindex"]) == {e for e, d in spec["endpoints"].items() if d["type"] == "survival"}
    assert set(summary["missing_rate"]) == set(samples["modality"])
    if kind == "sclc":
        assert "response" in summary["oracle_auc"]
    if kind == "nsclc-advanced":
        assert "median_ctdna_lead_time_days" in summary


@pytest.mark.parametrize("kind,endpoint", [("nsclc-postop", "rfs"), ("sclc", "pfs"), ("nsclc-advanced", "pfs")])
def test_oracle_discrimination_and_modality_shares(kind: str, endpoint: str) -> None:
    """At trial size the true risk discriminates like a strong biomarker, and no single modality sees all of it."""
    import importlib

    mod = importlib.import_module(f"omics_risk.data.synthetic.{kind.replace('-', '_')}")
    plan = mod.plan(300, np.random.SeedSequence(0), SynthOptions(), get_genome())
    summary = summarise(plan, 300, 0)
    c = summary["oracle_cindex"][endpoint]
    assert 0.70 <= c <= 0.90
    rate = summary["endpoints"][endpoint]["event_rate"]
    assert (0.3 <= rate <= 0.5) if kind == "nsclc-postop" else (0.6 <= rate <= 0.95)
    # Views of one modality at one timepoint (the pooled "ct" / "cfdna" views span two timepoints in sclc).
    pooled = {"all", "ct"} | ({"cfdna", "methylation", "pre_treatment", "on_treatment"} if kind == "sclc" else set())
    ceilings = summary["modality_ceiling"][endpoint]
    singles = {m: v for m, v in ceilings.items() if m not in pooled}
    assert max(singles.values()) < c - 0.02  # every single modality falls short of the oracle
    assert ceilings["all"] > max(singles.values())  # fusing modalities recovers more of the risk
    r2 = summary["modality_r2"][endpoint]
    assert max(v for m, v in r2.items() if m not in pooled) < min(0.85, r2["all"])
    if kind == "sclc":
        assert 0.8 <= summary["oracle_auc"]["response"] <= 0.99
        assert 0.4 <= summary["endpoints"]["response"]["positive_rate"] <= 0.75
        # Response is decided on treatment: what is measurable before it says little, the c3d1 CT and draw a lot.
        resp = summary["modality_ceiling"]["response"]
        assert resp["pre_treatment"] < 0.7 < 0.9 < resp["on_treatment"] <= summary["oracle_auc"]["response"] + 0.01
    if kind == "nsclc-advanced":
        assert 20 <= summary["median_ctdna_lead_time_days"] <= 90
        assert summary["fraction_lead_time_positive"] > 0.6
        assert 0.6 <= summary["ctdna_shedder_fraction"] <= 0.8


# --------------------------------------------------------------------------------------------------- signals


def test_fragment_size_and_end_motifs_track_tumour_fraction(cohorts: dict[str, Path]) -> None:
    root = cohorts["sclc"]
    fasta = pysam.FastaFile(str(root / "reference" / "genome.fa"))
    comp = str.maketrans("ACGT", "TGCA")
    rows = []
    for r in samples_with_truth(root, "cfdna").itertuples():
        df = read_frag(root / r.path)
        length = df["end"] - df["start"]
        sub = df.sample(1500, random_state=0)
        motifs = [fasta.fetch(f.chrom, f.end - 4, f.end).translate(comp)[::-1] if f.strand == "-"
                  else fasta.fetch(f.chrom, f.start, f.start + 4) for f in sub.itertuples()]
        rows.append((r.tumour_fraction, float((length < 150).mean()), float(np.mean([m[0] == "C" for m in motifs]))))
    tf, short, c_end = (np.array(x) for x in zip(*rows, strict=True))
    assert tf.max() > 0.3 and tf.min() < 0.02
    assert np.corrcoef(tf, short)[0, 1] > 0.9  # linear in TF; at TF ~1% library-to-library variation dominates
    assert spearmanr(tf, short)[0] > 0.55
    assert spearmanr(tf, c_end)[0] < -0.4
    assert c_end[tf < 0.05].mean() > 0.3  # healthy 5' ends are C-rich (the genome is ~20% C)


def test_binned_coverage_follows_copy_number(cohorts: dict[str, Path]) -> None:
    """Arm-level coverage ratios against a panel of all libraries track the true copy number at high TF."""
    root = cohorts["sclc"]
    genome = get_genome()
    arms = genome.arms
    seg = pd.read_csv(root / "truth" / "cna_segments.csv")
    cf = samples_with_truth(root, "cfdna")
    counts = {}
    for r in cf.itertuples():
        df = read_frag(root / r.path)
        df = df[df["mapq"] >= 30]
        arm_idx = np.full(len(df), -1)
        for k, a in arms.iterrows():
            sel = ((df["chrom"] == a.chrom) & (df["start"] >= a.start) & (df["start"] < a.end)).to_numpy()
            arm_idx[sel] = k
        counts[r.sample_id] = np.bincount(arm_idx[arm_idx >= 0], minlength=len(arms)) / len(df)
    cov = pd.DataFrame(counts)
    ratio = cov.div(cov.median(axis=1), axis=0)
    corrs = []
    for r in cf[cf["tumour_fraction"] > 0.25].itertuples():
        s = seg[(seg["patient_id"] == r.patient_id)]
        cn = [np.average(s.loc[(s.chrom == a.chrom) & (s.start >= a.start) & (s.end <= a.end), "copy_number"],
                         weights=(s.end - s.start)[(s.chrom == a.chrom) & (s.start >= a.start) & (s.end <= a.end)])
              for a in arms.itertuples()]
        if np.std(cn) > 0:
            corrs.append(spearmanr(cn, ratio[r.sample_id])[0])
    assert len(corrs) >= 3 and np.median(corrs) > 0.6


def test_methylation_markers_and_ctdna_track_tumour_fraction(cohorts: dict[str, Path]) -> None:
    root = cohorts["sclc"]
    prof = pd.read_csv(root / "reference" / "methylation_profiles.csv")
    markers = prof[(prof["tumour"] - prof["plasma"]) > 0.4]
    assert len(markers) > 50
    bed = markers[["chrom", "start", "end"]]
    rows = []
    for r in samples_with_truth(root, "methylation").itertuples():
        cov = read_cov(root / r.path)
        hit = np.zeros(len(cov), dtype=bool)
        for b in bed.itertuples():
            hit |= ((cov["chrom"] == b.chrom) & (cov["start"] > b.start) & (cov["start"] <= b.end)).to_numpy()
        m = cov[hit]
        rows.append((r.tumour_fraction, m["meth"].sum() / (m["meth"] + m["unmeth"]).sum()))
    tf, beta = (np.array(x) for x in zip(*rows, strict=True))
    assert spearmanr(tf, beta)[0] > 0.85

    root = cohorts["nsclc-postop"]
    ct = samples_with_truth(root, "ctdna")
    var = pd.read_csv(root / "ctdna" / "variants.csv")
    obs = var.groupby("sample_id").apply(lambda g: g["alt_count"].sum() / g["depth"].sum(), include_groups=False)
    ct = ct.set_index("sample_id").join(obs.rename("pooled_vaf"))
    assert spearmanr(ct["tumour_fraction"], ct["pooled_vaf"])[0] > 0.6
    assert spearmanr(ct["mean_vaf"], ct["pooled_vaf"])[0] > 0.6
    assert (ct["mean_vaf"] <= ct["tumour_fraction"] / 2 * 1.6).all()  # heterozygous: VAF ~ TF/2 x clonality


def test_serial_ctdna_and_recist_schedule(cohorts: dict[str, Path]) -> None:
    root = cohorts["nsclc-advanced"]
    clin = pd.read_csv(root / "clinical.csv").set_index("patient_id")
    s = pd.read_csv(root / "samples.csv")
    rec = pd.read_csv(root / "recist" / "recist.csv").set_index("sample_id")
    assert list(rec.columns) == ["sld_mm", "pct_change_baseline", "pct_change_nadir", "new_lesion", "n_target_lesions"]
    ct = s[s["modality"] == "ctdna"]
    assert (ct["day"] % 7 == 0).all() and (ct.loc[ct["timepoint"] == "c1", "day"] == 0).all()
    tp = pd.read_csv(root / "truth" / "patients.csv").set_index("patient_id")
    for pid, g in s[s["modality"] == "recist"].groupby("patient_id"):
        g = g.sort_values("day")
        assert g["timepoint"].iloc[0] == "baseline"
        last = rec.loc[g["sample_id"].iloc[-1]]
        if tp.at[pid, "radiological_progression_seen"]:
            # PFS is the day of the assessment that showed progression: +20% and +5 mm over the nadir, or new lesion.
            assert g["day"].iloc[-1] == clin.at[pid, "pfs_time"] and clin.at[pid, "pfs_event"] == 1
            assert last["new_lesion"] == 1 or (last["pct_change_nadir"] >= 19.9)
            assert ct.loc[ct["patient_id"] == pid, "day"].max() <= clin.at[pid, "pfs_time"] + 28
        else:  # censored at the last assessment, or died; blood draws go on until the data cut
            assert (g["day"] <= clin.at[pid, "pfs_time"]).all()
            assert ct.loc[ct["patient_id"] == pid, "day"].max() <= tp.at[pid, "censoring_day"]


# --------------------------------------------------------------------------------------------------- determinism


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_regardless_of_workers(cohorts: dict[str, Path], tmp_path: Path) -> None:
    again = generate_cohort("nsclc-postop", N, SEED, tmp_path / "again", workers=1, **SMALL)
    a, b = _tree_bytes(cohorts["nsclc-postop"]), _tree_bytes(again)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    img = next(k for k in a if k.endswith("_preop.nii.gz"))
    assert np.array_equal(nib.load(cohorts["nsclc-postop"] / img).get_fdata(), nib.load(again / img).get_fdata())


def test_different_seed_differs(cohorts: dict[str, Path], tmp_path: Path) -> None:
    other = generate_cohort("nsclc-postop", N, SEED + 1, tmp_path / "other", workers=2, **SMALL)
    base = cohorts["nsclc-postop"]
    assert (other / "clinical.csv").read_bytes() != (base / "clinical.csv").read_bytes()
    frag = sorted((other / "cfdna").glob("*.frag.gz"))[0].name
    if (base / "cfdna" / frag).exists():
        assert not read_frag(other / "cfdna" / frag).equals(read_frag(base / "cfdna" / frag))
    # The reference genome is shared by every synthetic cohort.
    assert (other / "reference" / "genome.fa").read_bytes() == (base / "reference" / "genome.fa").read_bytes()


def test_refuses_non_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_cohort("sclc", 10, 0, out, **SMALL)
    with pytest.raises(FileExistsError, match="does not look like a synthetic cohort"):
        generate_cohort("sclc", 10, 0, out, overwrite=True, **SMALL)
    assert (out / "notes.txt").read_text() == "keep me"
    cohort = generate_cohort("sclc", 10, 0, tmp_path / "c", **SMALL)
    generate_cohort("nsclc-advanced", 10, 0, cohort, overwrite=True, **SMALL)
    assert "nsclc-advanced" in (cohort / "cohort.yaml").read_text()
    assert not (cohort / "methylation").exists()
    with pytest.raises(ValueError, match="unknown kind"):
        generate_cohort("mesothelioma", 10, 0, tmp_path / "m")
    with pytest.raises(ValueError, match="at least"):
        generate_cohort("sclc", 3, 0, tmp_path / "m")
    with pytest.raises(ValueError, match="nsclc-advanced only"):  # --draw-every: serial draws of nsclc-advanced
        generate_cohort("sclc", 10, 0, tmp_path / "m", draw_every=7)
    with pytest.raises(ValueError, match=">= 1"):
        generate_cohort("nsclc-advanced", 10, 0, tmp_path / "m", draw_every=0)
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_default_demo_cohort_has_the_demo_sample_counts(tmp_path: Path) -> None:
    """The 300-patient default cohort (make demo's) has cfDNA for most patients; speed: bench/bench_synth.py."""
    out = generate_cohort("nsclc-postop", 300, 0, tmp_path / "demo", progress=False)
    summary = json.loads((out / "truth" / "summary.json").read_text())
    assert summary["n"] == 300
    assert summary["n_samples"]["cfdna"] > 240

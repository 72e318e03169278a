"""The TCGA converter on LUSC: real data (counts and the README's stage-only C-indices, ``convert tcga --project
LUSC`` and its alias ``convert tcga-lusc``) and a tiny synthetic source that exercises every rule for leaving samples
and values out. Other projects (a LUAD-named source, file discovery, errors): test_convert_tcga_projects.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omics_risk.cli import main
from omics_risk.data import load_cohort
from omics_risk.data.convert import convert_tcga_lusc
from omics_risk.data.convert.tcga import CDR_FILE, CNV_FILE, MIRNA_FILE, RPPA_FILE
from omics_risk.data.validate import validate_cohort


def _shared_dir() -> Path:
    """The shared data folder: $OMICS_RISK_SHARED, else the ``shared`` folder next to the repository."""
    env = os.environ.get("OMICS_RISK_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"


TCGA_SRC = _shared_dir() / "data" / "tcga_lusc"
needs_tcga = pytest.mark.skipif(
    not (TCGA_SRC / CDR_FILE).is_file(),
    reason=f"real TCGA LUSC data not found at {TCGA_SRC} (set OMICS_RISK_SHARED to the folder holding data/tcga_lusc)",
)


# ------------------------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def tcga(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (TCGA_SRC / CDR_FILE).is_file():
        pytest.skip(f"real TCGA LUSC data not found at {TCGA_SRC}")
    return convert_tcga_lusc(TCGA_SRC, tmp_path_factory.mktemp("tcga") / "tcga_lusc", verbose=False)


def _report(root: Path) -> dict:
    return json.loads((root / "conversion_report.json").read_text())


@needs_tcga
def test_real_cohort_loads_and_counts_match_the_readme(tcga: Path) -> None:
    cohort = load_cohort(tcga)
    assert cohort.spec.name == "tcga-lusc"
    assert cohort.spec.time_unit == "days"
    assert list(cohort.spec.endpoints) == ["pfi", "os", "dss", "dfi"]
    assert len(cohort.clinical) == 504

    report = _report(tcga)
    # The README counts events in the source; 1 PFI and 4 OS events have no time there, so the contract (time and
    # event together or neither) leaves them out of the usable endpoint, and the report names them.
    assert report["endpoints"]["pfi"]["events_in_source"] == 149
    assert report["endpoints"]["os"]["events_in_source"] == 219
    assert int((cohort.clinical["pfi_event"] == 1).sum()) == 148 == report["endpoints"]["pfi"]["events"]
    assert int((cohort.clinical["os_event"] == 1).sum()) == 215 == report["endpoints"]["os"]["events"]
    assert len(report["endpoints"]["pfi"]["blanked_event_without_time"]) == 5
    assert len(report["endpoints"]["os"]["blanked_event_without_time"]) == 6
    for name in ("pfi", "os", "dss", "dfi"):
        assert (cohort.clinical[f"{name}_time"].dropna() >= 0).all()

    patients = cohort.samples.groupby("modality")["patient_id"].nunique().to_dict()
    assert patients == {"rppa": 328, "mirna": 136, "cnv": 501}
    assert (cohort.samples["timepoint"] == "diagnosis").all() and (cohort.samples["day"] == 0).all()
    cnv = report["modalities"]["cnv"]
    assert cnv["samples_out"] == 501 and cnv["non_tumour_dropped"]["by_sample_type"] == {"10": 293, "11": 238}
    assert report["modalities"]["mirna"]["rows_in"] == 408  # read count, RPM and cross-mapped rows per sample
    assert report["modalities"]["mirna"]["measure_rows"] == 136
    for mod in report["modalities"].values():
        assert mod["duplicates_dropped"]["count"] == 0
        assert mod["not_in_clinical_dropped"]["count"] == 0


@needs_tcga
def test_real_cohort_matches_its_reference_values_without_a_warning(tcga: Path) -> None:
    report = _report(tcga)
    assert report["project"] == "LUSC" and report["warnings"] == [] and report["notes"] == []
    assert report["reference"]["patients"] == 504
    assert report["reference"]["stage_only_harrell_c"] == {"pfi": 0.620, "os": 0.559}
    assert report["clinical"]["stage_column"] == "ajcc_pathologic_tumor_stage"
    # The sub-stage levels come from the patients' stages: for LUSC, AJCC 7th edition lung (IV not sub-staged).
    assert report["clinical"]["stage_detail_levels"] == ["IA", "IB", "IIA", "IIB", "IIIA", "IIIB", "IV"]
    assert report["modalities"]["mirna"]["platforms"] == {
        "GA": {"file": MIRNA_FILE, "rows_in": 408, "measure_rows": 136}}


@needs_tcga
def test_convert_tcga_project_lusc_and_its_alias_write_the_same_cohort(tcga: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tcga_lusc"
    assert main(["convert", "tcga", "--project", "lusc", "--src", str(TCGA_SRC), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == f"tcga-lusc: 504 patients -> {out}"
    assert "warning" not in printed and "note:" not in printed
    assert printed.splitlines()[-1] == f"wrote the TCGA LUSC cohort to {out}; check it with: omics-risk validate {out}"
    for path in sorted(p for p in tcga.rglob("*") if p.is_file()):
        assert (out / path.relative_to(tcga)).read_bytes() == path.read_bytes(), path.name


@needs_tcga
def test_real_cohort_validates_with_its_data_files(tcga: Path) -> None:
    report = validate_cohort(tcga, deep=True, workers=1)
    assert report.ok, report.to_text()
    assert report.errors == []
    assert (report.n_patients, report.n_samples) == (504, 965)


@needs_tcga
def test_real_clinical_is_clean_and_typed(tcga: Path) -> None:
    raw = pd.read_csv(tcga / "clinical.csv", dtype=str, keep_default_na=False)
    assert not raw.apply(lambda s: s.str.startswith("[")).any().any(), "TCGA placeholders must become empty cells"
    assert raw["patient_id"].str.len().eq(12).all()
    clinical = load_cohort(tcga).clinical
    assert clinical["stage"].value_counts().to_dict() == {"I": 245, "II": 163, "III": 85, "IV": 7}
    assert clinical["stage"].isna().sum() == 4  # [Discrepancy]
    # Stage I/II/III without a sub-stage keep their stage but no stage_detail.
    assert (clinical["stage"].notna() & clinical["stage_detail"].isna()).sum() == 9
    assert set(clinical["sex"].dropna()) == {"female", "male"}


@needs_tcga
def test_real_omics_files_match_samples_csv(tcga: Path) -> None:
    samples = pd.read_csv(tcga / "samples.csv")
    assert samples["sample_id"].is_unique
    rppa = pd.read_csv(tcga / "omics" / "rppa.csv")
    mirna = pd.read_csv(tcga / "omics" / "mirna.csv")
    cnv = pd.read_csv(tcga / "omics" / "cnv_segments.csv.gz", dtype={"chrom": str})
    assert rppa.shape == (328, 224) and mirna.shape == (136, 1047)
    assert list(cnv.columns) == ["sample_id", "chrom", "start", "end", "num_probes", "segment_mean"]
    for name, table in (("rppa", rppa), ("mirna", mirna), ("cnv", cnv)):
        rows = samples[samples["modality"] == name]
        assert set(rows["sample_id"]) == set(table["sample_id"])
        assert (tcga / rows["path"].iloc[0]).is_file()
    assert cnv["sample_id"].str[13:15].eq("01").all()
    assert set(cnv["chrom"]) == {*map(str, range(1, 23)), "X"}
    # Raw reads-per-million, not log-transformed: the first sample's hsa-let-7a-1 as in the source.
    first = mirna.set_index("sample_id").loc["TCGA-18-3406-01A-01T-0981-13", "hsa-let-7a-1"]
    assert first == pytest.approx(6916.110735)


@needs_tcga
def test_real_stage_only_c_index_matches_the_readme(tcga: Path) -> None:
    """The README's reference: Harrell's C of the collapsed stage I-IV (coded 1-4), patients without stage left out."""
    from sksurv.metrics import concordance_index_censored

    cohort = load_cohort(tcga)
    clinical = cohort.clinical
    risk = clinical["stage"].map({lvl: i for i, lvl in enumerate(cohort.spec.clinical["stage"].levels)})
    got = {}
    for name, reference in (("pfi", 0.620), ("os", 0.559)):
        keep = risk.notna() & clinical[f"{name}_time"].notna()
        got[name] = concordance_index_censored(
            clinical.loc[keep, f"{name}_event"].to_numpy(bool),
            clinical.loc[keep, f"{name}_time"].to_numpy(float),
            risk[keep].to_numpy(float),
        )[0]
        assert got[name] == pytest.approx(reference, abs=0.005), name
        # The converter's own (numpy) Harrell C, reported in conversion_report.json, agrees with scikit-survival.
        assert _report(tcga)["stage_only_harrell_c"][name] == pytest.approx(got[name], abs=1e-4)


@needs_tcga
def test_real_conversion_is_deterministic_and_guards_its_output(tcga: Path, tmp_path: Path) -> None:
    again = convert_tcga_lusc(TCGA_SRC, tmp_path / "again", verbose=False)
    for path in sorted(p for p in tcga.rglob("*") if p.is_file()):
        assert (again / path.relative_to(tcga)).read_bytes() == path.read_bytes(), path.name
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_tcga_lusc(TCGA_SRC, again, verbose=False)
    convert_tcga_lusc(TCGA_SRC, again, overwrite=True, verbose=False)
    load_cohort(again)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder may be left behind"


# ---------------------------------------------------------------------------------------- synthetic source


def _write_mini_source(src: Path, project: str = "LUSC") -> None:
    """Four patients and every awkward case: duplicates, normals, orphans, placeholders, events without time; the
    files named with ``project``'s prefix (the LUSC release's names for LUSC)."""
    src.mkdir()
    names = {n: n.replace("LUSC_", f"{project}_", 1) for n in (CDR_FILE, RPPA_FILE, MIRNA_FILE, CNV_FILE)}
    na = "[Not Available]"
    cdr = pd.DataFrame(
        {
            "bcr_patient_barcode": ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003", "TCGA-AA-0004"],
            "age_at_initial_pathologic_diagnosis": ["60.0", "71.0", "", "55.0"],
            "gender": ["MALE", "FEMALE", "MALE", "FEMALE"],
            "race": ["WHITE", na, "[Unknown]", "ASIAN"],
            "ajcc_pathologic_tumor_stage": ["Stage IA", "Stage IIIB", "[Discrepancy]", "Stage II"],
            "histological_type": ["Lung Squamous Cell Carcinoma"] * 4,
            "initial_pathologic_dx_year": ["2005.0", "2010.0", "2011.0", ""],
            "OS": ["1.0", "0.0", "1.0", "0.0"],
            "OS.time": ["100.0", "0.0", "", "300.0"],
            "DSS": ["1.0", "0.0", "", "0.0"],
            "DSS.time": ["100.0", "0.0", "200.0", "300.0"],
            "DFI": ["", "", "", "0.0"],
            "DFI.time": ["", "", "", "300.0"],
            "PFI": ["1.0", "0.0", "1.0", "0.0"],
            "PFI.time": ["50.0", "0.0", "150.0", "300.0"],
        }
    )
    cdr.to_csv(src / names[CDR_FILE], index=False)
    rppa = pd.DataFrame(
        {
            "bcr_patient_barcode": [
                "TCGA-AA-0001-01B-21-0000-20",  # second tumour sample of patient 1: the 01A one is kept
                "TCGA-AA-0001-01A-21-0000-20",
                "TCGA-AA-0009-01A-21-0000-20",  # patient not in the clinical table
                "TCGA-AA-0002-11A-21-0000-20",  # normal tissue
            ],
            "Akt": [0.1, 0.2, 0.3, 0.4],
            "EGFR": [1.0, np.nan, 3.0, 4.0],
        }
    )
    rppa.to_csv(src / names[RPPA_FILE], index=False)
    rows = []
    for barcode, rpm in (("TCGA-AA-0001-01A-01T-0000-13", 1.5), ("TCGA-AA-0002-01A-01T-0000-13", 2.5)):
        rows += [
            [barcode, "read_count", "10", "0"],
            [f"{barcode}.1", "reads_per_million_miRNA_mapped", str(rpm), "0.0"],
            [f"{barcode}.2", "cross-mapped", "N", "Y"],
        ]
    pd.DataFrame(rows, columns=["sample_row", "miRNA_ID", "hsa-mir-21", "hsa-mir-155"]).to_csv(
        src / names[MIRNA_FILE], index=False
    )
    cnv = pd.DataFrame(
        {
            "Sample": ["TCGA-AA-0003-01A-01D-0000-01"] * 2
            + ["TCGA-AA-0001-10A-01D-0000-01"]
            + ["TCGA-AA-0001-01A-01D-0000-01"] * 2,
            "Chromosome": [23, 1, 1, 1, 2],
            "Start": [10, 10, 10, 10, 10],
            "End": [20, 20, 20, 20, 20],
            "Num_Probes": [5, 5, 5, 5, 5],
            "Segment_Mean": [-0.5, 0.3, 0.0, 0.1, -0.1],
        }
    )
    cnv.to_csv(src / names[CNV_FILE], index=False)


@pytest.fixture
def mini(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    _write_mini_source(src)
    return src, convert_tcga_lusc(src, tmp_path / "cohort", verbose=False)


def test_mini_every_left_out_sample_is_reported(mini: tuple[Path, Path]) -> None:
    _, out = mini
    cohort = load_cohort(out)
    assert validate_cohort(out, workers=1).ok
    report = _report(out)
    rppa = report["modalities"]["rppa"]
    assert rppa["duplicates_dropped"]["dropped"] == {"TCGA-AA-0001-01B-21-0000-20": "TCGA-AA-0001-01A-21-0000-20"}
    assert rppa["not_in_clinical_dropped"]["sample_ids"] == ["TCGA-AA-0009-01A-21-0000-20"]
    assert rppa["non_tumour_dropped"]["by_sample_type"] == {"11": 1}
    assert rppa["samples_in"] == 4 and rppa["samples_out"] == 1
    assert report["modalities"]["cnv"]["non_tumour_dropped"]["by_sample_type"] == {"10": 1}

    by_mod = cohort.samples.groupby("modality")["sample_id"].apply(sorted).to_dict()
    assert by_mod == {
        "rppa": ["TCGA-AA-0001-01A-21-0000-20"],
        "mirna": ["TCGA-AA-0001-01A-01T-0000-13", "TCGA-AA-0002-01A-01T-0000-13"],
        "cnv": ["TCGA-AA-0001-01A-01D-0000-01", "TCGA-AA-0003-01A-01D-0000-01"],
    }
    mirna = pd.read_csv(out / "omics" / "mirna.csv")
    assert mirna["hsa-mir-21"].tolist() == [1.5, 2.5]  # the RPM rows, untransformed
    cnv = pd.read_csv(out / "omics" / "cnv_segments.csv.gz", dtype={"chrom": str})
    # Sorted by sample, then chromosome order (1 < X), and chromosome 23 named X.
    assert cnv["chrom"].tolist() == ["1", "2", "1", "X"]


def test_mini_clinical_cleaning_stage_and_endpoints(mini: tuple[Path, Path]) -> None:
    _, out = mini
    clinical = load_cohort(out).clinical.set_index("patient_id")
    assert clinical["race"].isna().tolist() == [False, True, True, False]
    assert clinical["stage"].tolist()[:2] == ["I", "III"] and pd.isna(clinical.at["TCGA-AA-0003", "stage"])
    assert clinical.at["TCGA-AA-0004", "stage"] == "II" and pd.isna(clinical.at["TCGA-AA-0004", "stage_detail"])
    assert clinical.at["TCGA-AA-0002", "stage_detail"] == "IIIB"
    # OS event without a time and DSS time without an event are both blanked (the contract needs both or neither).
    assert pd.isna(clinical.at["TCGA-AA-0003", "os_event"]) and pd.isna(clinical.at["TCGA-AA-0003", "dss_time"])
    assert clinical.at["TCGA-AA-0002", "os_time"] == 0  # zero times are kept
    report = _report(out)
    assert report["endpoints"]["os"]["blanked_event_without_time"] == ["TCGA-AA-0003"]
    assert report["endpoints"]["dss"]["blanked_time_without_event"] == ["TCGA-AA-0003"]
    assert report["endpoints"]["os"]["events_in_source"] == 2 and report["endpoints"]["os"]["events"] == 1
    assert report["clinical"]["placeholders_cleaned"]["race"] == {"[Not Available]": 1, "[Unknown]": 1}
    # A constant column is kept in clinical.csv but not declared as a model feature.
    assert "histological_type" not in load_cohort(out).spec.clinical


def test_mini_without_mirna_converts_the_others_with_a_note(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_mini_source(src)
    (src / MIRNA_FILE).unlink()
    out = convert_tcga_lusc(src, tmp_path / "cohort", verbose=False)
    assert validate_cohort(out, workers=1).ok
    cohort = load_cohort(out)
    assert sorted(cohort.modalities) == ["cnv", "rppa"] and list(cohort.spec.modalities) == ["rppa", "cnv"]
    report = _report(out)
    assert report["notes"] == ["no miRNA file for LUSC (LUSC_miRNASeq_<platform>_<date>.csv.gz): the cohort has "
                               "rppa, cnv only"]
    assert list(report["modalities"]) == ["rppa", "cnv"] and MIRNA_FILE not in report["source"]
    # Four patients, not LUSC's 504: the reference check says so (and the stage-only C of PFI departs from 0.620).
    assert report["warnings"][0].startswith("4 LUSC patients, but the reference")


def test_mini_refuses_bad_sources_and_foreign_output_folders(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_mini_source(src)
    (src / CDR_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"no clinical table for LUSC: expected LUSC_cdr_endpoints\.csv"):
        convert_tcga_lusc(src, tmp_path / "cohort", verbose=False)
    _write_mini_source(tmp_path / "src2")
    foreign = tmp_path / "not_a_cohort"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a cohort"):
        convert_tcga_lusc(tmp_path / "src2", foreign, overwrite=True, verbose=False)
    assert (foreign / "precious.txt").read_text() == "keep me"

"""``omics-risk convert tcga --project P`` on projects other than LUSC: tiny fake sources written in tmp_path with a
project's file names (a LUAD one without miRNA whose endpoints come from the pan-cancer TCGA-CDR table, a FIGO-staged
UCEC one, a clinical-only one), and the one-line errors for an unknown project and another project's files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from omics_risk.cli import main
from omics_risk.data import load_cohort
from omics_risk.data.convert import PROJECTS, convert_tcga
from omics_risk.data.validate import validate_cohort

ENDPOINT_COLUMNS = ("OS", "OS.time", "DSS", "DSS.time", "DFI", "DFI.time", "PFI", "PFI.time")


def _cdr(project: str, n: int, *, stages: list[str], stage_column: str = "ajcc_pathologic_tumor_stage",
         seed: int = 0, tss: str = "AA") -> pd.DataFrame:
    """TCGA-CDR rows as distributed (text, bracketed placeholders), outcome times shorter for later stages."""
    rng = np.random.default_rng(seed)
    code = np.array([len(s.split()[-1].rstrip("ABC0123456789")) if s.startswith("Stage") else 1 for s in stages])
    time = np.round(rng.exponential(2000.0 / code)).astype(int) + 1
    event = (rng.random(n) < 0.6).astype(int)
    other = "clinical_stage" if stage_column == "ajcc_pathologic_tumor_stage" else "ajcc_pathologic_tumor_stage"
    rows = pd.DataFrame({
        "bcr_patient_barcode": [f"TCGA-{tss}-{i:04d}" for i in range(n)],
        "type": project,
        "age_at_initial_pathologic_diagnosis": [f"{a}.0" for a in rng.integers(40, 85, n)],
        "gender": rng.choice(["MALE", "FEMALE"], n),
        "race": ["WHITE", "[Not Available]"] * (n // 2) + ["ASIAN"] * (n % 2),
        stage_column: stages,
        other: "[Not Applicable]",
        "histological_type": rng.choice(["Type A", "Type B"], n),
        "initial_pathologic_dx_year": "2010.0",
        "vital_status": "Alive",
    })
    for name in ("OS", "DSS", "PFI"):
        rows[name], rows[f"{name}.time"] = [f"{e}.0" for e in event], [f"{t}.0" for t in time]
    rows["DFI"], rows["DFI.time"] = "", ""  # no patient has a disease-free interval here
    return rows


def _rppa(path: Path, barcodes: list[str], seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.normal(0, 1, (len(barcodes), 3)).round(4), columns=["Akt", "EGFR", "MTOR"])
    table.insert(0, "bcr_patient_barcode", barcodes)
    table.to_csv(path, index=False)


def _cnv(path: Path, barcodes: list[str]) -> None:
    rows = [[b, chrom, 1, 50_000_000 * chrom, 100, 0.1 * k] for k, b in enumerate(barcodes) for chrom in (1, 2)]
    pd.DataFrame(rows, columns=["Sample", "Chromosome", "Start", "End", "Num_Probes", "Segment_Mean"]).to_csv(
        path, index=False)


def _mirna(path: Path, barcodes: list[str], mirs: list[str], rpm: float) -> None:
    rows = []
    for b in barcodes:
        rows += [[b, "read_count", *["10"] * len(mirs)],
                 [f"{b}.1", "reads_per_million_miRNA_mapped", *[str(rpm)] * len(mirs)],
                 [f"{b}.2", "cross-mapped", *["N"] * len(mirs)]]
    pd.DataFrame(rows, columns=["sample_row", "miRNA_ID", *mirs]).to_csv(path, index=False)


LUAD_STAGES = ["Stage IA", "Stage IB", "Stage IIA", "Stage IIIA", "Stage IV", "[Discrepancy]"]


def _luad_source(src: Path) -> Path:
    """LUAD RPPA and CNV (no miRNA); the endpoints in the pan-cancer table, with LUSC rows and a spreadsheet index."""
    src.mkdir()
    luad = _cdr("LUAD", 6, stages=LUAD_STAGES, tss="05")
    lusc = _cdr("LUSC", 3, stages=["Stage I", "Stage II", "Stage III"], tss="18", seed=1)
    pancan = pd.concat([lusc, luad], ignore_index=True)
    pancan.insert(0, "", range(len(pancan)))  # the row index a spreadsheet export carries
    pancan.loc[3, "OS.time"] = "#N/A"  # LUAD's first patient: an OS event without a time
    pancan.to_csv(src / "TCGA-CDR-SupplementalTableS1.tsv", sep="\t", index=False)
    _rppa(src / "LUAD_RPPA_20160128.csv", [f"TCGA-05-{i:04d}-01A-21-0000-20" for i in (0, 1, 2, 3)])
    _cnv(src / "LUAD_CNV_segments_20160128.csv.gz",
         [f"TCGA-05-{i:04d}-01A-01D-0000-01" for i in range(6)] + ["TCGA-05-0001-10A-01D-0000-01"])
    return src


def test_a_luad_source_without_mirna_converts_and_validates(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    src, out = _luad_source(tmp_path / "src"), tmp_path / "tcga_luad"
    assert main(["convert", "tcga", "--project", "luad", "--src", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"tcga-luad: 6 patients -> {out}"
    assert "  rppa  4 samples (4 patients)" in printed and "  cnv   6 samples (6 patients); left out: 1 non-tumour" \
        in printed
    assert "  note: no miRNA file for LUAD (LUAD_miRNASeq_<platform>_<date>.csv.gz): the cohort has rppa, cnv only" \
        in printed
    warnings = [line for line in printed if "warning:" in line]
    assert warnings == ["  warning: no reference values on file for TCGA LUAD (patient count, stage-only Harrell C): "
                        "this conversion is not checked against published numbers (conversion_report.json has the "
                        "computed ones)"]
    assert printed[-1] == f"wrote the TCGA LUAD cohort to {out}; check it with: omics-risk validate {out}"

    assert main(["validate", str(out), "--quiet"]) == 0
    assert "0 error(s)" in capsys.readouterr().out
    cohort = load_cohort(out)
    assert cohort.spec.name == "tcga-luad" and list(cohort.spec.modalities) == ["rppa", "cnv"]
    assert list(cohort.spec.endpoints) == ["pfi", "os", "dss"]  # DFI has no outcome in these rows: not declared
    assert cohort.clinical["patient_id"].str.startswith("TCGA-05-").all() and len(cohort.clinical) == 6
    assert cohort.clinical["stage"].tolist()[:5] == ["I", "I", "II", "III", "IV"]
    assert cohort.clinical["stage_detail"].tolist()[:5] == ["IA", "IB", "IIA", "IIIA", "IV"]
    assert cohort.clinical[["stage", "stage_detail"]].iloc[5].isna().all()  # [Discrepancy]
    assert list(cohort.spec.clinical["stage_detail"].levels) == ["IA", "IB", "IIA", "IIB", "IIIA", "IIIB", "IV"]
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["project"] == "LUAD" and report["reference"] == {}
    assert report["clinical"]["pan_cancer_rows"] == 9 and report["clinical"]["patients"] == 6
    assert report["clinical"]["endpoints_without_outcome"] == ["dfi"]
    assert report["clinical"]["placeholders_cleaned"]["OS.time"] == {"#N/A": 1}
    assert report["endpoints"]["os"]["blanked_event_without_time"] == ["TCGA-05-0000"]
    assert report["endpoints"]["os"]["patients"] == 5
    assert list(report["source"]) == ["TCGA-CDR-SupplementalTableS1.tsv", "LUAD_RPPA_20160128.csv",
                                      "LUAD_CNV_segments_20160128.csv.gz"]
    assert "dfi_time" not in pd.read_csv(out / "clinical.csv").columns


def test_a_figo_staged_project_with_two_mirna_platforms(tmp_path: Path) -> None:
    """UCEC: the stage is in clinical_stage (FIGO, sub-stages with a digit), its levels are the patients' ones, and
    the GA and HiSeq miRNA files are stacked (one sample per patient, a miRNA one platform lacks left empty)."""
    src = tmp_path / "src"
    src.mkdir()
    stages = ["Stage IA", "Stage IB", "Stage II", "Stage IIIC1", "Stage IIIC2", "Stage IV"]
    _cdr("UCEC", 6, stages=stages, stage_column="clinical_stage", tss="AX").to_csv(
        src / "UCEC_cdr_endpoints.csv", index=False)
    _mirna(src / "UCEC_miRNASeq_GA_20160128.csv.gz", [f"TCGA-AX-{i:04d}-01A-11R-0000-13" for i in (0, 1, 2)],
           ["hsa-mir-21", "hsa-mir-155"], 1.5)
    _mirna(src / "UCEC_miRNASeq_HiSeq_20160128.csv.gz", [f"TCGA-AX-{i:04d}-01A-21R-0000-13" for i in (2, 3)],
           ["hsa-mir-21", "hsa-mir-200c"], 2.5)
    out = convert_tcga(src, tmp_path / "ucec", "UCEC", verbose=False)
    assert validate_cohort(out, workers=1).ok
    cohort = load_cohort(out)
    assert cohort.clinical["stage"].tolist() == ["I", "I", "II", "III", "III", "IV"]
    assert cohort.clinical["stage_detail"].tolist() == ["IA", "IB", "II", "IIIC", "IIIC", "IV"]
    assert list(cohort.spec.clinical["stage_detail"].levels) == ["IA", "IB", "II", "IIIC", "IV"]
    mirna = pd.read_csv(out / "omics" / "mirna.csv")
    assert mirna["sample_id"].str[:12].tolist() == [f"TCGA-AX-{i:04d}" for i in range(4)]
    assert mirna.columns.tolist() == ["sample_id", "hsa-mir-21", "hsa-mir-155", "hsa-mir-200c"]
    assert mirna["hsa-mir-21"].tolist() == [1.5, 1.5, 1.5, 2.5]  # patient 2: GA's 11R before HiSeq's 21R
    assert mirna["hsa-mir-200c"].isna().tolist() == [True, True, True, False]
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["clinical"]["stage_column"] == "clinical_stage"
    assert report["modalities"]["mirna"]["duplicates_dropped"]["dropped"] == {
        "TCGA-AX-0002-01A-21R-0000-13": "TCGA-AX-0002-01A-11R-0000-13"}
    assert set(report["modalities"]["mirna"]["platforms"]) == {"GA", "HiSeq"}
    assert report["notes"] == ["no rppa / cnv file for UCEC (UCEC_RPPA_<date>.csv, UCEC_CNV_segments_<date>.csv.gz): "
                               "the cohort has mirna only",
                               "no UCEC patient has an outcome for dfi: not declared in cohort.yaml"]
    spec_text = (out / "cohort.yaml").read_text()
    assert spec_text.startswith("# TCGA uterine corpus endometrial carcinoma (UCEC), written by")
    assert "miRNA-seq RPM (Illumina GA + HiSeq, not log-transformed)" in " ".join(
        line.lstrip("# ") for line in spec_text.splitlines() if line.startswith("#"))
    assert yaml.safe_load(spec_text)["modalities"] == {"mirna": {"format": "table", "extract": {"log2": True}}}


def test_a_project_with_endpoints_only_gives_a_clinical_only_cohort(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _cdr("BRCA", 6, stages=["Stage I", "Stage IIA", "Stage IIB", "Stage IIIA", "Stage X", "Stage IV"],
         tss="A1").to_csv(src / "BRCA_cdr_endpoints.csv", index=False)
    out = convert_tcga(src, tmp_path / "brca", "brca", verbose=False)
    report = validate_cohort(out, workers=1)
    assert report.ok and not (out / "samples.csv").exists() and not (out / "omics").exists()
    assert load_cohort(out).modalities == []
    converted = json.loads((out / "conversion_report.json").read_text())
    assert converted["notes"][0].startswith("no BRCA omics file (BRCA_RPPA_<date>.csv, ")
    assert converted["clinical"]["stage_unrecognised"] == ["Stage X"]
    assert len(converted["warnings"]) == 1 and "no reference values on file for TCGA BRCA" in converted["warnings"][0]


def test_another_projects_files_next_to_this_ones_are_left_alone_with_a_note(tmp_path: Path) -> None:
    src = _luad_source(tmp_path / "src")
    _rppa(src / "LUSC_RPPA_20160128.csv", ["TCGA-18-0000-01A-21-0000-20"])
    out = convert_tcga(src, tmp_path / "luad", "LUAD", verbose=False)
    notes = json.loads((out / "conversion_report.json").read_text())["notes"]
    assert "files of LUSC left alone: LUSC_RPPA_20160128.csv (convert them with --project LUSC)" in notes
    assert len(load_cohort(out).samples_of("rppa")) == 4


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("omics-risk convert: error: "), err
    return err


def test_an_unknown_project_is_one_line_with_the_known_codes(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, ["convert", "tcga", "--project", "LAUD", "--src", str(tmp_path), "--out",
                          str(tmp_path / "o")])
    assert "unknown TCGA project 'LAUD': did you mean LUAD?" in err and "LUSC" in err and "BRCA" in err
    assert list(tmp_path.iterdir()) == []


def test_another_projects_files_are_one_line_naming_them_and_the_fix(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    src = _luad_source(tmp_path / "src")
    err = _error(capsys, ["convert", "tcga", "--project", "LUSC", "--src", str(src), "--out", str(tmp_path / "o")])
    assert ("holds no LUSC files but files of LUAD (LUAD_CNV_segments_20160128.csv.gz, LUAD_RPPA_20160128.csv): "
            "pass --project LUAD for them, or --src the folder of the LUSC files") in err

    # a project table whose rows are another project's
    other = tmp_path / "other"
    other.mkdir()
    _cdr("LUSC", 4, stages=["Stage I"] * 4).to_csv(other / "LUAD_cdr_endpoints.csv", index=False)
    err = _error(capsys, ["convert", "tcga", "--project", "LUAD", "--src", str(other), "--out", str(tmp_path / "o")])
    assert "LUAD_cdr_endpoints.csv holds rows of type LUSC, not only LUAD: it is another project's table" in err

    # an omics file none of whose samples is a patient of the project
    (other / "LUAD_cdr_endpoints.csv").unlink()
    _cdr("LUAD", 4, stages=["Stage I"] * 4, tss="05").to_csv(other / "LUAD_cdr_endpoints.csv", index=False)
    _rppa(other / "LUAD_RPPA_20160128.csv", ["TCGA-18-0000-01A-21-0000-20", "TCGA-18-0001-01A-21-0000-20"])
    err = _error(capsys, ["convert", "tcga", "--project", "LUAD", "--src", str(other), "--out", str(tmp_path / "o")])
    assert ("LUAD_RPPA_20160128.csv: none of its 2 primary-tumour sample(s) is a patient of LUAD_cdr_endpoints.csv "
            "(LUAD): it is another project's file") in err

    # a file with normals only
    _rppa(other / "LUAD_RPPA_20160128.csv", ["TCGA-05-0000-11A-21-0000-20"])
    err = _error(capsys, ["convert", "tcga", "--project", "LUAD", "--src", str(other), "--out", str(tmp_path / "o")])
    assert "LUAD_RPPA_20160128.csv: no primary-tumour sample (barcode type 01) to convert as rppa" in err

    # two releases of one kind
    _rppa(other / "LUAD_RPPA_20160128.csv", ["TCGA-05-0000-01A-21-0000-20"])
    _rppa(other / "LUAD_RPPA_20150821.csv", ["TCGA-05-0000-01A-21-0000-20"])
    err = _error(capsys, ["convert", "tcga", "--project", "LUAD", "--src", str(other), "--out", str(tmp_path / "o")])
    assert "holds 2 LUAD RPPA files (LUAD_RPPA_20150821.csv, LUAD_RPPA_20160128.csv): keep one release" in err

    # the pan-cancer table as a spreadsheet only, and without the project's rows
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "TCGA-CDR-SupplementalTableS1.xlsx").write_bytes(b"PK")
    err = _error(capsys, ["convert", "tcga", "--project", "LUAD", "--src", str(empty), "--out", str(tmp_path / "o")])
    assert "save its TCGA-CDR sheet as CSV next to it" in err
    _cdr("LUSC", 2, stages=["Stage I"] * 2).to_csv(empty / "TCGA-CDR-SupplementalTableS1.csv", index=False)
    err = _error(capsys, ["convert", "tcga", "--project", "LUAD", "--src", str(empty), "--out", str(tmp_path / "o")])
    assert "TCGA-CDR-SupplementalTableS1.csv has no rows of type LUAD (it has: LUSC)" in err
    assert not (tmp_path / "o").exists()


def test_every_project_has_a_code_a_title_and_a_cohort_name() -> None:
    assert len(PROJECTS) == 33 and all(p.code == code and p.title for code, p in PROJECTS.items())
    assert PROJECTS["LUAD"].cohort_name == "tcga-luad"
    # Only LUSC carries reference values (its source README's); the others are converted unchecked, with a warning.
    assert [code for code, p in PROJECTS.items() if p.has_reference] == ["LUSC"]


# ------------------------------------------------------------------------------------------------ configs

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=["paths.root_dir=/p", "paths.output_dir=/p/run", *overrides])


def test_the_tcga_configs_point_at_the_converted_project() -> None:
    """configs/data/tcga.yaml reads data/tcga_<project> (where `convert tcga` writes by default); tcga_lusc stays."""
    luad = _compose("experiment=tcga", "data.project=luad")
    assert (luad.data.root, luad.run_name, luad.task.endpoint) == ("/p/data/tcga_luad", "tcga-luad-pfi", "pfi")
    assert list(luad.data.modalities) == ["rppa", "mirna", "cnv"]
    assert _compose("experiment=tcga").data.root == _compose("experiment=tcga_lusc").data.root == "/p/data/tcga_lusc"
    assert _compose("experiment=tcga_lusc", "data.root=/elsewhere/luad").data.root == "/elsewhere/luad"


@pytest.mark.slow
def test_a_converted_luad_cohort_trains_with_experiment_tcga(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """40 fake LUAD patients (RPPA for 30, copy number for all, no miRNA), converted into data/tcga_luad under a
    project folder and trained with `experiment=tcga data.project=luad`: the run uses rppa and cnv, with stage."""
    from omics_risk.workflows.training import train  # lazy: the training stack is heavy, only this test needs it

    rng = np.random.default_rng(5)
    src = tmp_path / "src"
    src.mkdir()
    stages = rng.choice(["Stage IA", "Stage IB", "Stage IIA", "Stage IIB", "Stage IIIA", "Stage IV"], 40).tolist()
    _cdr("LUAD", 40, stages=stages, tss="05", seed=5).to_csv(src / "LUAD_cdr_endpoints.csv", index=False)
    _rppa(src / "LUAD_RPPA_20160128.csv", [f"TCGA-05-{i:04d}-01A-21-0000-20" for i in range(30)])
    _cnv(src / "LUAD_CNV_segments_20160128.csv.gz", [f"TCGA-05-{i:04d}-01A-01D-0000-01" for i in range(40)])
    project = tmp_path / "project"
    convert_tcga(src, project / "data" / "tcga_luad", "LUAD", verbose=False)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={project}", f"paths.output_dir={project / 'run'}",
                                          "tracking=none", "training.progress=false", "extract.workers=1",
                                          "debug=fast", "baselines=none", "training.final_model=false",
                                          "evaluation.report.enabled=false", "experiment=tcga", "data.project=luad"])
    with caplog.at_level(logging.WARNING, logger="omics_risk.data.multimodal"):
        metrics = train(cfg)
    assert "has no sample of mirna (data.modalities); using clinical, rppa, cnv" in caplog.text
    assert 0.0 <= metrics["fused/cindex"] <= 1.0
    summary = json.loads((project / "run" / "summary.json").read_text())
    assert (summary["cohort"], summary["n_patients"], summary["modalities"]) == ("tcga-luad", 40, ["rppa", "cnv"])

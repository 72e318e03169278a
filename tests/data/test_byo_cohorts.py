"""Bringing your own cohort: column mappings (and the TCGA / GDC headers out of the box), grouped validation lines,
clinical-only cohorts, samples.csv without timepoint / day, and experiments that use the modalities a cohort has.

The fixtures (:mod:`byo_cohorts`) are written as a user receives the data: nothing is renamed by hand.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from byo_cohorts import write_clinical_only, write_tcga_cn
from hydra import compose, initialize_config_dir

from omics_risk.data.contract import CohortError, load_cohort
from omics_risk.data.problems import Problem, grouped_lines
from omics_risk.data.readers import DataFileError, read_cn_segments, read_table
from omics_risk.data.validate import validate_cohort
from omics_risk.features.extract import extract_cohort

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _edit_spec(root: Path, edit) -> None:  # type: ignore[no-untyped-def]
    spec = yaml.safe_load((root / "cohort.yaml").read_text())
    edit(spec)
    (root / "cohort.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


# ------------------------------------------------------------------------------------------ clinical-only


def test_a_clinical_only_cohort_needs_no_samples_csv_and_gets_one_note(tmp_path: Path) -> None:
    root = write_clinical_only(tmp_path / "clin")
    report = validate_cohort(root)
    assert report.ok and report.warnings == [], report.to_text()
    assert [(n.file, "clinical-only" in n.message) for n in report.notes] == [("samples.csv", True)]
    assert report.to_text().splitlines()[-1] == "0 error(s), 0 warning(s), 1 note(s)"
    cohort = load_cohort(root)
    assert len(cohort.clinical) == 60 and len(cohort.samples) == 0 and cohort.modalities == []


def test_a_header_only_samples_csv_gives_no_warning_per_patient(tmp_path: Path) -> None:
    root = write_clinical_only(tmp_path / "clin")
    (root / "samples.csv").write_text("patient_id,sample_id,modality,timepoint,day,path\n")
    report = validate_cohort(root)
    assert report.ok and report.problems == [], report.to_text()


def test_patients_without_samples_are_one_line_when_others_have_samples(tmp_path: Path) -> None:
    root = write_tcga_cn(tmp_path / "tcga")
    samples = pd.read_csv(root / "samples.csv")
    samples[samples["patient_id"].isin(["BYO-000", "BYO-001"])].to_csv(root / "samples.csv", index=False)
    report = validate_cohort(root, deep=False)
    assert len(report.warnings) == 38  # every patient is still reported in the JSON form
    lines = [line for line in report.to_text().splitlines() if "has no samples" in line]
    assert lines == ["  clinical.csv [patient_id]: 38 rows (lines 4, 5, 6, 7, 8, ...): patient '<value>' has no "
                     "samples in samples.csv; it is kept, with every modality missing; distinct values (rows): "
                     "'BYO-002' (1), "
                     "'BYO-003' (1), 'BYO-004' (1), 'BYO-005' (1), 'BYO-006' (1), 'BYO-007' (1), 'BYO-008' (1), "
                     "'BYO-009' (1), and 30 more"]


# ------------------------------------------------------------------------------------------ grouped lines


def test_sub_stages_against_main_levels_are_one_grouped_line_with_the_values_and_the_fix(tmp_path: Path) -> None:
    root = write_clinical_only(tmp_path / "clin")
    _edit_spec(root, lambda s: s["clinical"]["stage"].update(levels=["I", "II", "III"]))
    stage = pd.read_csv(root / "clinical.csv")["stage"]
    report = validate_cohort(root)
    assert len(report.errors) == len(stage) == 60  # one finding per row, as before, for the JSON form
    text = report.to_text()
    stage_lines = [line for line in text.splitlines() if "[stage]" in line]
    assert len(stage_lines) == 1
    line = stage_lines[0]
    first_rows = ", ".join(str(i + 2) for i in range(5))
    assert line.startswith(f"  clinical.csv [stage]: 60 rows (lines {first_rows}, ...): '<value>' is not a level of "
                           "ordinal column 'stage' (levels: I, II, III); add the value to its levels in cohort.yaml")
    assert "or map it to a declared level in clinical.csv" in line
    counts = dict(re.findall(r"'(I+[AB])' \((\d+)\)", line))
    assert {k: int(v) for k, v in counts.items()} == stage.value_counts().to_dict()


def test_grouped_lines_keep_single_findings_and_fold_repeated_kinds_in_place() -> None:
    problems = [Problem("error", "a.csv", "x 'p' is bad", 2, "c"), Problem("error", "a.csv", "header is odd", 1),
                Problem("error", "a.csv", "x 'q' is bad", 5, "c"), Problem("error", "a.csv", "y 'r' is odd", 3, "c")]
    assert grouped_lines(problems) == [
        "a.csv [c]: 2 rows (lines 2, 5): x '<value>' is bad; distinct values (rows): 'p' (1), 'q' (1)",
        "a.csv:1: header is odd",
        "a.csv:3 [c]: y 'r' is odd",
    ]


# ------------------------------------------------------------------------------------------ column mappings


def test_tcga_segment_headers_and_a_mapped_table_key_validate_with_notes(tmp_path: Path) -> None:
    root = write_tcga_cn(tmp_path / "tcga")
    report = validate_cohort(root)
    assert report.ok and report.warnings == [], report.to_text()
    notes = {n.file: n.message for n in report.notes}
    assert set(notes) == {"samples.csv", "cnv/segments.seg.csv"}
    assert "no 'timepoint' or 'day' column" in notes["samples.csv"]
    assert "Sample -> sample_id, Chromosome -> chrom, Start -> start, End -> end" in notes["cnv/segments.seg.csv"]
    cohort = load_cohort(root)
    assert set(cohort.samples["timepoint"]) == {"baseline"} and set(cohort.samples["day"]) == {0.0}


def test_readers_take_the_mapping_and_name_columns_as_the_file_does(tmp_path: Path) -> None:
    root = write_tcga_cn(tmp_path / "tcga")
    table = read_table(root / "rppa/rppa.csv", columns={"sample_id": "Barcode"})
    raw = pd.read_csv(root / "rppa/rppa.csv").set_index("Barcode")
    assert table.index.name == "sample_id" and list(table.index) == list(raw.index)
    pd.testing.assert_frame_equal(table, raw.rename_axis("sample_id"), check_dtype=False)
    seg = read_cn_segments(root / "cnv/segments.seg.csv")
    assert seg.attrs["column_aliases"]["segment_mean"] == "Segment_Mean" and len(seg) == 40 * 6
    bad = pd.read_csv(root / "cnv/segments.seg.csv", dtype=str)
    bad.loc[3, "Start"] = "x"
    bad.to_csv(root / "bad.csv", index=False)
    with pytest.raises(DataFileError) as err:
        read_cn_segments(root / "bad.csv")
    assert (err.value.issues[0].line, err.value.issues[0].column) == (5, "Start")  # the file's own header


def test_unmapped_headers_say_what_was_expected_found_and_how_to_map(tmp_path: Path) -> None:
    root = write_tcga_cn(tmp_path / "tcga")
    seg = pd.read_csv(root / "cnv/segments.seg.csv")
    seg.rename(columns={"Sample": "Aliquot", "Segment_Mean": "log2ratio"}).to_csv(root / "cnv/segments.seg.csv",
                                                                                   index=False)
    _edit_spec(root, lambda s: s["modalities"]["rppa"].update(columns={"sample_id": "Barcodes"}))
    report = validate_cohort(root)
    by_column = {(e.file, e.column): e.message for e in report.errors}
    msg = by_column[("cnv/segments.seg.csv", "sample_id")]
    assert "required column 'sample_id' is missing (a copy-number segment table has columns sample_id, chrom, " \
           "start, end, segment_mean; found: Aliquot, Chromosome, Start, End, Num_Probes, log2ratio)" in msg
    assert "map it once in cohort.yaml under the modality: columns: {sample_id: " in msg
    assert by_column[("rppa/rppa.csv", "sample_id")].startswith(
        "column 'Barcodes', which cohort.yaml maps to 'sample_id' (columns: {sample_id: Barcodes}), is not in the "
        "header (found: Barcode, AKT, EGFR, MTOR, TP53); fix the mapping")
    _edit_spec(root, lambda s: s["modalities"]["cnv"].update(columns={"sample_id": "Aliquot",
                                                                     "segment_mean": "log2ratio"}))
    _edit_spec(root, lambda s: s["modalities"]["rppa"].update(columns={"sample_id": "Barcode"}))
    assert validate_cohort(root).ok


@pytest.mark.parametrize(("columns", "expected"), [
    ({"sample": "Barcode"}, "'columns' names 'sample', which is no column of a table table; the keys are the "
                            "contract's names (sample_id)"),
    (["Barcode"], "'columns' must map contract column names to the file's headers"),
])
def test_a_malformed_mapping_is_a_cohort_yaml_error(tmp_path: Path, columns: object, expected: str) -> None:
    root = write_tcga_cn(tmp_path / "tcga")
    _edit_spec(root, lambda s: s["modalities"]["rppa"].update(columns=columns))
    with pytest.raises(CohortError) as err:
        load_cohort(root)
    first = next(p for p in err.value.problems if p.severity == "error")
    assert first.file == "cohort.yaml" and expected in first.message


# ------------------------------------------------------------------------------------------ end to end


def _train(root: Path, out: Path, *overrides: str) -> dict[str, float]:
    from omics_risk.workflows.training import train  # lazy: the training stack is heavy, only these tests need it

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={out}", f"paths.output_dir={out / 'run'}", "tracking=none",
                                          "training.progress=false", "extract.workers=1", "debug=fast",
                                          "baselines=fast", *overrides, f"data.root={root}"])
    return train(cfg)


@pytest.mark.slow
def test_a_clinical_only_cohort_extracts_and_trains_with_clinical_models(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    root = write_clinical_only(tmp_path / "clin")
    assert extract_cohort(root, progress=False, workers=1).modalities == {}
    with caplog.at_level(logging.WARNING, logger="omics_risk.data.multimodal"):
        metrics = _train(root, tmp_path / "out", "data=cohort")  # task rfs: its postop1 cannot be placed
    assert "predicting at the index date" in caplog.text
    for model in ("fused", "clinical_cox", "coxnet_clinical"):
        assert 0.5 < metrics[f"{model}/cindex"] <= 1.0, metrics


@pytest.mark.slow
def test_the_tcga_experiment_trains_on_raw_gdc_headers_without_mirna(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    root = write_tcga_cn(tmp_path / "tcga")
    with caplog.at_level(logging.WARNING, logger="omics_risk.data.multimodal"):
        metrics = _train(root, tmp_path / "out", "experiment=tcga_lusc")
    assert "has no sample of mirna (data.modalities); using clinical, rppa, cnv" in caplog.text
    assert {"fused/cindex", "clinical_cox/cindex", "coxnet_rppa/cindex", "coxnet_cnv/cindex"} <= set(metrics)
    assert not any(k.startswith("coxnet_mirna") for k in metrics)


@pytest.mark.slow
def test_a_clinical_only_cohort_is_scored_with_a_row_per_patient(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """No samples.csv at scoring either: the model (task rfs, trained at the index date since its postop1 cannot be
    placed) scores every patient at the index date from the clinical data, as training did."""
    from omics_risk.cli import main as cli_main  # lazy: the training and scoring stacks are heavy (as _train)
    from omics_risk.workflows.training import train  # lazy: as above

    root = write_clinical_only(tmp_path / "clin")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # a sqlite store's default artifact root is ./mlruns: keep it out of the checkout
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}",
                                          f"tracking.uri={uri}", "training.progress=false", "extract.workers=1",
                                          "debug=fast", "baselines=fast", "training.final_model=true", "data=cohort",
                                          f"data.root={root}"])
    train(cfg)
    out = tmp_path / "scores.csv"
    assert cli_main(["score", "--model", "models:/omics-risk-rfs@challenger", "--tracking-uri", uri,
                     "--cohort", str(root), "--out", str(out)]) in (0, None)
    scores = pd.read_csv(out)
    clinical = pd.read_csv(root / "clinical.csv")
    assert list(scores["patient_id"]) == list(clinical["patient_id"])
    assert (scores["status"] == "ok").all() and scores["risk_score"].notna().all()
    assert (scores["prediction_day"] == 0).all()

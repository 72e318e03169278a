"""``validate_cohort``: the valid tiny cohort passes, and every broken cohort of the corpus reports exactly its
problem (file, line, column), all at once, without inventing others."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from broken_cohorts import BROKEN, COMBINED, Expected

from omics_risk.data import validate as validate_mod
from omics_risk.data.contract import Problem, load_cohort
from omics_risk.data.validate import ValidationReport, validate_cohort

#: The one warning the valid cohort carries: P06 has no samples (clinical.csv line 7).
BASELINE_WARNING = ("clinical.csv", 7, "patient_id")


def _key(p: Problem) -> tuple[str, int | None, str | None]:
    return (p.file, p.line, p.column)


def _matches(p: Problem, e: Expected) -> bool:
    return p.severity == e.severity and _key(p) == (e.file, e.line, e.column) and e.contains in p.message


def _assert_reports_exactly(report: ValidationReport, expected: list[Expected]) -> None:
    """Each expected problem is reported once; no other error, and no warning beyond the baseline, appears."""
    text = report.to_text()
    for e in expected:
        hits = [p for p in report.problems if _matches(p, e)]
        assert len(hits) == 1, f"expected exactly one {e}, got {len(hits)}:\n{text}"
    unexpected = [
        p
        for p in report.problems
        if not any(_matches(p, e) for e in expected) and not (p.severity == "warning" and _key(p) == BASELINE_WARNING)
    ]
    assert not unexpected, "unexpected problems:\n" + "\n".join(map(str, unexpected))


def test_valid_cohort_passes(valid_cohort: Path) -> None:
    report = validate_cohort(valid_cohort)
    assert report.ok, report.to_text()
    assert report.errors == []
    assert [(_key(w), "has no samples" in w.message) for w in report.warnings] == [(BASELINE_WARNING, True)]
    assert "P06" in report.warnings[0].message
    assert (report.n_patients, report.n_samples) == (6, 27)
    assert report.n_files_opened == 17  # 4 CT + 4 cfDNA + 3 methylation + 4 shared tables + 2 references
    load_cohort(valid_cohort)  # the contract agrees


def test_coverage_summary(valid_cohort: Path) -> None:
    cov = validate_cohort(valid_cohort, deep=False).coverage
    got = {(r.modality, r.timepoint): (r.patients, round(r.percent, 1)) for r in cov.itertuples()}
    assert got[("ct", "preop")] == (4, 66.7)
    assert got[("cfdna", "preop")] == (1, 16.7)
    assert got[("cfdna", "postop1")] == (3, 50.0)
    assert got[("cfdna", "(any)")] == (3, 50.0)
    assert got[("ctdna", "(any)")] == (5, 83.3)
    assert got[("methylation", "postop1")] == (3, 50.0)
    assert got[("metabolomics", "preop")] == (4, 66.7)
    assert got[("rppa", "preop")] == (4, 66.7)
    assert got[("cnv", "preop")] == (3, 50.0)
    assert got[("(no samples)", "")] == (1, 16.7)
    assert len(got) == 16


def test_report_text_and_json(valid_cohort: Path) -> None:
    report = validate_cohort(valid_cohort)
    text = report.to_text()
    assert text.splitlines()[-1] == "0 error(s), 1 warning(s)"
    assert "clinical.csv:7 [patient_id]: patient 'P06' has no samples" in text
    assert "Modality coverage" in text and "metabolomics" in text
    d = json.loads(json.dumps(report.to_dict()))
    assert d["ok"] is True and d["n_errors"] == 0 and d["n_warnings"] == 1
    assert d["problems"][0] == {
        "severity": "warning",
        "file": "clinical.csv",
        "line": 7,
        "column": "patient_id",
        "message": report.warnings[0].message,
    }
    assert {"modality": "ct", "timepoint": "preop", "patients": 4, "percent": 66.67} in d["coverage"]


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_cohort_reports_its_problem(name: str, make_valid_cohort: Callable[..., Path], tmp_path: Path) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    expected = BROKEN[name](root)
    report = validate_cohort(root, workers=1)
    _assert_reports_exactly(report, expected)
    assert report.ok == (not any(e.severity == "error" for e in expected))
    text = report.to_text()
    for e in expected:
        where = e.file + (f":{e.line}" if e.line is not None else "") + (f" [{e.column}]" if e.column else "")
        assert where in text
    assert text.splitlines()[-1].startswith(f"{len(report.errors)} error(s)")


def test_corpus_is_large() -> None:
    assert len(BROKEN) >= 15
    assert len(set(BROKEN.values())) == len(BROKEN)


def test_every_problem_reported_at_once(make_valid_cohort: Callable[..., Path], tmp_path: Path) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    expected = [e for build in COMBINED for e in build(root)]
    report = validate_cohort(root, workers=2)
    _assert_reports_exactly(report, expected)
    assert len(report.errors) == len(COMBINED)
    assert len({p.file for p in report.errors}) >= 8


def test_parallel_and_serial_agree(
    make_valid_cohort: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    for build in COMBINED:
        build(root)
    serial = validate_cohort(root, workers=1)
    monkeypatch.setattr(validate_mod, "PARALLEL_MIN_JOBS", 0)
    parallel = validate_cohort(root, workers=2, progress=True)
    assert parallel.problems == serial.problems


def test_shallow_mode_checks_existence_only(make_valid_cohort: Callable[..., Path], tmp_path: Path) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    expected = BROKEN["missing_data_file"](root) + BROKEN["negative_time"](root)
    BROKEN["fragment_bad_strand"](root)  # content: only found when the file is opened
    BROKEN["truncated_nifti"](root)
    report = validate_cohort(root, deep=False)
    _assert_reports_exactly(report, expected)
    assert report.n_files_opened == 0


def test_unexpected_reader_failure_becomes_a_problem(valid_cohort: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("reader bug")

    monkeypatch.setattr(validate_mod.readers, "read_bismark_cov", boom)
    report = validate_cohort(valid_cohort, workers=1)
    errs = [(p.file, p.message) for p in report.errors]
    assert len(errs) == 3
    assert all("unexpected RuntimeError: reader bug" in m for _, m in errs)
    assert {f for f, _ in errs} == {
        "methylation/P01_postop1.cov.gz",
        "methylation/P02_postop1.cov.gz",
        "methylation/P04_postop1.cov",
    }
    assert "referenced by samples.csv line 10" in errs[0][1]


def test_internal_error_is_reported_not_raised(valid_cohort: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(*args: object) -> None:
        raise KeyError("oops")

    monkeypatch.setattr(validate_mod, "_check_sample_files", bug)
    report = validate_cohort(valid_cohort)
    assert not report.ok and "internal error (KeyError: 'oops')" in report.errors[-1].message
    assert any("has no samples" in w.message for w in report.warnings)  # what was found before is kept


def test_data_file_problem_names_the_samples_line(make_valid_cohort: Callable[..., Path], tmp_path: Path) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    BROKEN["fragment_bad_strand"](root)
    (err,) = validate_cohort(root).errors
    assert "referenced by samples.csv line 7" in err.message


def test_shared_file_problem_names_its_users(make_valid_cohort: Callable[..., Path], tmp_path: Path) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    BROKEN["ctdna_vaf_above_one"](root)
    (err,) = validate_cohort(root).errors
    assert "referenced by 5 samples.csv rows, first on line 13" in err.message


def test_missing_shared_file_is_reported_once(make_valid_cohort: Callable[..., Path], tmp_path: Path) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    (root / "ctdna" / "variants.csv").unlink()
    (err,) = validate_cohort(root).errors
    assert _key(err) == ("samples.csv", 13, "path")
    assert "file not found: ctdna/variants.csv (used by 5 samples.csv rows)" in err.message


def test_not_a_directory(tmp_path: Path) -> None:
    report = validate_cohort(tmp_path / "nope")
    assert not report.ok and "not a directory" in report.errors[0].message
    assert report.to_text().splitlines()[-1] == "1 error(s), 0 warning(s)"


def test_many_errors_in_one_file_are_capped(make_valid_cohort: Callable[..., Path], tmp_path: Path) -> None:
    from broken_cohorts import edit_text_lines

    root = make_valid_cohort(tmp_path / "cohort")

    def all_bad(lines: list[str]) -> None:
        for k in range(1, len(lines)):
            lines[k] = lines[k].rsplit("\t", 1)[0] + "\t?"

    edit_text_lines(root / "cfdna" / "P01_preop.frag.gz", all_bad)
    errs = [p for p in validate_cohort(root).errors if p.file == "cfdna/P01_preop.frag.gz"]
    assert len(errs) == 21  # 20 located lines and a "... and 180 more" line
    assert [p.line for p in errs[:3]] == [2, 3, 4]
    assert "and 180 more" in errs[-1].message

"""Inputs stay inside the cohort (or a declared data root), checks stay linear, and broken cells are located.

The broken-cohort corpus (broken_cohorts.py) holds one builder per rejected input; these tests cover what a corpus
entry cannot: what is allowed (links inside the cohort, data_roots), the ``max_years`` option, the defence in
``Cohort.path`` and a 100,000-row clinical.csv.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from broken_cohorts import read_rows, sample_line, sample_path, set_cell, write_rows

from omics_risk.data.contract import CohortError, PathOutsideCohortError, load_cohort
from omics_risk.data.paths import Confinement
from omics_risk.data.validate import validate_cohort

#: The one warning the valid cohort carries (P06 has no samples).
BASELINE = [("warning", "clinical.csv", 7, "patient_id")]


def _problems(report) -> list[tuple[str, str, int | None, str | None]]:
    return [(p.severity, p.file, p.line, p.column) for p in report.problems]


def _append_yaml(root: Path, text: str) -> None:
    p = root / "cohort.yaml"
    p.write_text(p.read_text() + text)


def _move_outside(root: Path, sid: str, folder: Path) -> Path:
    """Move a sample's file into ``folder`` (outside the cohort) and return its new place."""
    rel = sample_path(root, sid)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(rel).name
    shutil.move(str(root / rel), target)
    return target


# --------------------------------------------------------------------------------------------------- allowed


def test_symlink_inside_the_cohort_is_allowed(make_valid_cohort: Callable[..., Path], tmp_path: Path) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    (root / "store").mkdir()
    shutil.move(str(root / "cfdna" / "P01_postop1.frag.gz"), root / "store" / "x.frag.gz")
    (root / "cfdna" / "P01_postop1.frag.gz").symlink_to(root / "store" / "x.frag.gz")
    (root / "ct_link").symlink_to(root / "ct", target_is_directory=True)
    set_cell(root / "samples.csv", sample_line(root, "P01-ct-preop"), "path", "ct_link/P01_preop.nii.gz")
    report = validate_cohort(root, workers=1)
    assert _problems(report) == BASELINE, report.to_text()
    assert report.n_files_opened == 17
    cohort = load_cohort(root)
    assert cohort.path("cfdna/P01_postop1.frag.gz") == root / "cfdna" / "P01_postop1.frag.gz"


def test_data_roots_allow_absolute_relative_and_linked_paths(make_valid_cohort: Callable[..., Path],
                                                             tmp_path: Path) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    archive = tmp_path / "archive"
    absolute = _move_outside(root, "P01-cfdna-postop1", archive / "cfdna")
    set_cell(root / "samples.csv", sample_line(root, "P01-cfdna-postop1"), "path", str(absolute))
    _move_outside(root, "P01-methylation-postop1", archive / "methylation")
    set_cell(root / "samples.csv", sample_line(root, "P01-methylation-postop1"), "path",
             "../archive/methylation/P01_postop1.cov.gz")
    linked = _move_outside(root, "P02-cfdna-postop1", archive / "cfdna")
    (root / sample_path(root, "P02-cfdna-postop1")).symlink_to(linked)
    shutil.copyfile(root / "reference" / "genome.fa", archive / "genome.fa")
    p = root / "cohort.yaml"
    p.write_text(p.read_text().replace("genome_fasta: reference/genome.fa", f"genome_fasta: {archive}/genome.fa"))

    (root / "cohort_a.yaml").write_text((root / "cohort.yaml").read_text())
    without = validate_cohort(root, workers=1)  # not declared: four refusals, nothing opened outside
    assert sorted(_problems(without)) == sorted([
        *BASELINE,
        ("error", "cohort.yaml", None, "references.genome_fasta"),
        ("error", "samples.csv", sample_line(root, "P01-cfdna-postop1"), "path"),
        ("error", "samples.csv", sample_line(root, "P02-cfdna-postop1"), "path"),
        ("error", "samples.csv", sample_line(root, "P01-methylation-postop1"), "path"),
    ]), without.to_text()
    assert without.n_files_opened == 13

    for declared in ("../archive", str(archive)):  # relative to the cohort folder, or absolute
        p.write_text((root / "cohort_a.yaml").read_text() + f"data_roots: [{declared}]\n")
        report = validate_cohort(root, workers=1)
        assert _problems(report) == BASELINE, report.to_text()  # no 'absolute path' warning for a data root
        assert report.n_files_opened == 17
        cohort = load_cohort(root)
        assert cohort.spec.data_roots == (archive.resolve(),)
        assert cohort.path(str(absolute)) == absolute


def test_absolute_path_inside_the_cohort_still_warns(make_valid_cohort: Callable[..., Path], tmp_path: Path) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    line = sample_line(root, "P01-cfdna-postop1")
    set_cell(root / "samples.csv", line, "path", str(root / "cfdna" / "P01_postop1.frag.gz"))
    report = validate_cohort(root, deep=False)
    assert _problems(report) == [*BASELINE, ("warning", "samples.csv", line, "path")]
    assert "give paths relative to the cohort folder" in report.problems[1].message


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("[reference/genome.fa]", "data_roots entry 1 'reference/genome.fa' is not a folder"),
        ("/archive/ct", "'data_roots' must be a list of folders, absolute or relative to the cohort folder"),
        ("['']", "data_roots entry 1 '' is empty; give the path of an existing folder"),
    ],
)
def test_unusable_data_roots_are_errors_naming_the_key(make_valid_cohort: Callable[..., Path], tmp_path: Path,
                                                      entry: str, message: str) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    _append_yaml(root, f"data_roots: {entry}\n")
    report = validate_cohort(root, deep=False)
    assert _problems(report) == [("error", "cohort.yaml", None, "data_roots"), *BASELINE], report.to_text()
    assert message in report.errors[0].message
    with pytest.raises(CohortError, match="data_roots"):
        load_cohort(root)


def test_extra_roots_of_load_cohort(make_valid_cohort: Callable[..., Path], tmp_path: Path) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    moved = _move_outside(root, "P01-cfdna-postop1", tmp_path / "shared")
    set_cell(root / "samples.csv", sample_line(root, "P01-cfdna-postop1"), "path", str(moved))
    with pytest.raises(CohortError, match="is an absolute path outside the cohort folder"):
        load_cohort(root)
    cohort = load_cohort(root, extra_roots=[tmp_path / "shared"])
    assert cohort.path(str(moved)) == moved
    with pytest.raises(PathOutsideCohortError):
        cohort.path("../../outside.csv")


# --------------------------------------------------------------------------------------------------- Cohort.path


def test_cohort_path_refuses_to_leave_the_cohort(valid_cohort: Path, tmp_path: Path) -> None:
    cohort = load_cohort(valid_cohort)
    root = valid_cohort.resolve()
    with pytest.raises(PathOutsideCohortError) as exc:
        cohort.path("../../../../etc/passwd")
    assert isinstance(exc.value, ValueError)
    assert str(exc.value).startswith("refusing to read '../../../../etc/passwd': it leads outside the cohort folder")
    assert f"(allowed folders: {root})" in str(exc.value)
    with pytest.raises(PathOutsideCohortError, match="is an absolute path outside the cohort folder"):
        cohort.path("/etc/passwd")
    (valid_cohort / "cfdna" / "escape.frag.gz").symlink_to(tmp_path)
    with pytest.raises(PathOutsideCohortError, match="is a symbolic link"):
        cohort.path("cfdna/escape.frag.gz")
    with pytest.raises(PathOutsideCohortError, match=r"contains a NUL byte \(\\x00\) \(allowed folders: .*\); fix it$"):
        cohort.path("cfdna/a\x00b")
    with pytest.raises(PathOutsideCohortError, match="more than the 255 a file system allows"):
        cohort.path("cfdna/" + "a" * 256)
    assert cohort.path("ct/P01_preop.nii.gz") == valid_cohort / "ct" / "P01_preop.nii.gz"
    # judged when the file is about to be opened: a file swapped for an escaping link after loading is refused
    (valid_cohort / "ct" / "P01_preop.nii.gz").unlink()
    (valid_cohort / "ct" / "P01_preop.nii.gz").symlink_to(tmp_path / "elsewhere.nii.gz")
    with pytest.raises(PathOutsideCohortError, match="is a symbolic link"):
        cohort.path("ct/P01_preop.nii.gz")


def test_cached_resolution_agrees_with_realpath(tmp_path: Path) -> None:
    root = tmp_path / "cohort"
    (root / "a" / "b").mkdir(parents=True)
    (tmp_path / "far" / "sub").mkdir(parents=True)
    (root / "up").symlink_to(tmp_path / "far" / "sub", target_is_directory=True)
    (root / "loop").symlink_to(root / "loop")
    conf = Confinement.of(root)
    (root / "a" / "rel").symlink_to("../up/deeper")  # a relative link target, through another link
    for value in ("a/b/x", "a/../a/b/./x", "up/x", "up", "up/../x", "up/../../cohort/a", "a/b/../../..", "a/b/..",
                  "loop", "loop/x", "a/rel", "a/rel/x", "a/b/", ".", "/etc/passwd"):
        resolved, _ = conf.check(value)
        assert resolved == os.path.realpath(root / value), value
    assert conf.check("up/../../cohort/a")[1] is None  # leaves through a link, comes back: judged by where it lands
    assert conf.check("a/b/../../..")[1] is not None


# --------------------------------------------------------------------------------------------------- horizon


def test_max_years_sets_the_horizon(make_valid_cohort: Callable[..., Path], tmp_path: Path) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    _append_yaml(root, "max_years: 3\n")
    day_line = sample_line(root, "P01-cfdna-postop1")
    set_cell(root / "samples.csv", day_line, "day", "1096")  # 3 years = 1095.75 days
    before = sample_line(root, "P01-cfdna-preop")
    set_cell(root / "samples.csv", before, "day", "-1095")
    report = validate_cohort(root, deep=False)
    got = [(p.file, p.line, p.column, p.message) for p in report.errors]
    assert got == [
        ("clinical.csv", 5, "rfs_time", "rfs time must be <= 36 (3 years, the horizon set by max_years in "
                                        "cohort.yaml), got '40' (months since the index date)"),
        ("samples.csv", day_line, "day", "day must be <= 1095.75 (3 years after the index date, the horizon set by "
                                         "max_years in cohort.yaml), got '1096' (days from the index date; negative "
                                         "before it)"),
    ]


@pytest.mark.parametrize("value", ["0", "-5", "many", ".inf", "true"])
def test_max_years_must_be_a_positive_number(make_valid_cohort: Callable[..., Path], tmp_path: Path,
                                             value: str) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    _append_yaml(root, f"max_years: {value}\n")
    report = validate_cohort(root, deep=False)
    assert _problems(report) == [("error", "cohort.yaml", None, "max_years"), *BASELINE], report.to_text()
    assert "'max_years' must be a positive number of years" in report.errors[0].message


def test_default_horizon_accepts_long_follow_up_and_old_baselines(make_valid_cohort: Callable[..., Path],
                                                                 tmp_path: Path) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    set_cell(root / "clinical.csv", 2, "rfs_time", "1200")  # exactly 100 years of months
    set_cell(root / "samples.csv", sample_line(root, "P01-cfdna-preop"), "day", "-36525")
    assert _problems(validate_cohort(root, deep=False)) == BASELINE


# --------------------------------------------------------------------------------------------------- tables


def test_duplicate_header_after_stripping_is_reported_not_a_crash(make_valid_cohort: Callable[..., Path],
                                                                  tmp_path: Path) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    p = root / "clinical.csv"
    rows = read_rows(p)
    write_rows(p, [[*r, "IB" if i else "stage "] for i, r in enumerate(rows)])  # 'stage' and 'stage '
    report = validate_cohort(root, deep=False)
    assert _problems(report) == [("error", "clinical.csv", 1, "stage"), *BASELINE], report.to_text()
    assert "column 'stage' appears 2 times in the header (columns 4, 9)" in report.errors[0].message


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("modality", "methylation\t", "modality 'methylation\\x09' contains a control character (\\x09)"),
        ("timepoint", "post\x1fop1", "timepoint 'post\\x1fop1' contains a control character (\\x1f)"),
    ],
)
def test_control_characters_in_sample_identifiers(make_valid_cohort: Callable[..., Path], tmp_path: Path,
                                                  column: str, value: str, message: str) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    line = sample_line(root, "P02-methylation-postop1")
    set_cell(root / "samples.csv", line, column, value)
    report = validate_cohort(root, deep=False)
    assert _problems(report) == [("error", "samples.csv", line, column), *BASELINE], report.to_text()
    assert report.errors[0].message.startswith(message + "; identifiers must be printable text")


def test_nul_byte_in_a_number_cell_is_not_cut_short(make_valid_cohort: Callable[..., Path], tmp_path: Path) -> None:
    """pandas' C parser would read '6\\x004' as '6'; the cell must be reported as it is."""
    root = make_valid_cohort(tmp_path / "cohort")
    p = root / "clinical.csv"
    p.write_text(p.read_text().replace("P01,64,", "P01,6\x004,"))
    report = validate_cohort(root, deep=False)
    assert _problems(report) == [("error", "clinical.csv", 2, "age"), *BASELINE], report.to_text()
    assert report.errors[0].message == "age must be a number, got '6\\x004'"


def test_100k_duplicated_clinical_rows_are_all_reported(make_valid_cohort: Callable[..., Path],
                                                        tmp_path: Path) -> None:
    """The duplicate check is one pass: 99,994 repeats of 6 patients, each naming the line of its first row."""
    root = make_valid_cohort(tmp_path / "cohort")
    p = root / "clinical.csv"
    header, *rows = p.read_text().splitlines()
    n = 100_000
    p.write_text("\n".join([header, *(rows[i % len(rows)] for i in range(n))]) + "\n")
    report = validate_cohort(root, deep=False)
    errors = report.errors
    assert len(errors) == n - len(rows)
    assert {(e.file, e.column) for e in errors} == {("clinical.csv", "patient_id")}
    assert [e.line for e in errors] == list(range(2 + len(rows), n + 2))
    for e in (errors[0], errors[1], errors[-1]):
        k = (e.line - 2) % len(rows)
        assert e.message == f"duplicate patient_id (patient_id=P0{k + 1}); first seen on line {k + 2}"
    assert report.n_patients == 6
    with pytest.raises(CohortError, match=r"\.\.\. and 99974 more"):
        load_cohort(root)

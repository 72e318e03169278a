"""Property-based fuzzing of ``validate_cohort`` and ``omics-risk validate`` (hardening item 7).

Each example copies the tiny valid cohort (tests/conftest.py) and replaces one of its files (a table, a data file,
a reference) by a mutation of its own content (see fuzzing.py: byte flips, truncation, line and field edits,
special values, long lines, re-compression or damage of the compressed stream) or by arbitrary bytes. The
property: ``validate_cohort`` returns a :class:`ValidationReport`, never raises, never reports "validation stopped
early on an internal error" or a file that "cannot be opened: unexpected <ExceptionType>" (its two catch-alls for
reader and validator bugs), and every problem names a file, says something and, when it gives a line, points
inside that file. The command line gets the same inputs in a subprocess: exit code 0 or 1, no Python traceback.

Validation runs with ``workers=1`` here so that the reader runs in the main thread, under the watchdog
(fuzzing.py): a hang in a worker thread could not be interrupted, and the threads change no reader's behaviour.
Examples are derandomized, without an example database, and the watchdog only trips on runaway behaviour (a
minute plus a second per KB), never on a slow machine: no assertion here is about speed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fuzzing import (
    WRAPPERS,
    arbitrary_bytes,
    assert_located_issue,
    bam_with_broken_header_block,
    fuzz_settings,
    gunzip_or_raw,
    line_count,
    mutated,
    token_soup,
    watchdog,
)
from hypothesis import given
from hypothesis import strategies as st

import omics_risk
from omics_risk.data.validate import ValidationReport, validate_cohort

VALIDATE_EXAMPLES = 80
CLI_EXAMPLES = 3

#: The cohort files an example may replace. The DICOM series is left out: GDCM's scan of a folder holding one damaged
#: 1.4 KB slice (a huge element length) allocated about 3 GB, which this suite must not do on a shared CI machine.
FILES = [
    "cohort.yaml",
    "clinical.csv",
    "samples.csv",
    "ctdna/variants.csv",
    "metabolomics/matrix.csv",
    "metabolomics/sample_sheet.csv",
    "metabolomics/features.csv",
    "rppa/rppa.csv",
    "cnv/segments.csv",
    "cfdna/P01_preop.frag.gz",
    "cfdna/P01_postop1.frag.gz",
    "cfdna/P03_postop1.bam",
    "methylation/P01_postop1.cov.gz",
    "methylation/P04_postop1.cov",
    "ct/P01_preop.nii.gz",
    "ct/P01_preop_mask.nii.gz",
    "ct/P02_preop.nrrd",
    "ct/P04_preop_mask.mha",
    "reference/genome.chrom.sizes",
    "reference/genome.fa",
]
#: Files whose lines mean something (a problem's line must lie inside them); images and BAMs are binary.
TEXT_SUFFIXES = (".csv", ".yaml", ".cov", ".cov.gz", ".frag.gz", ".sizes", ".fa")
BUG_MARKERS = re.compile(r"validation stopped early on an internal error|cannot be opened: unexpected \w+")


@pytest.fixture(scope="module")
def template(make_valid_cohort: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny valid cohort, never modified: each example works on its own copy."""
    return make_valid_cohort(tmp_path_factory.mktemp("fuzz_validate") / "template")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_validate_runs")


@st.composite
def broken_cohort_file(draw: Callable, template: Path) -> tuple[str, bytes]:
    """(file, new content): one cohort file replaced by a mutation of itself (re-compressed as it was, or with the
    compressed stream itself damaged) or by arbitrary bytes."""
    rel = draw(st.sampled_from(FILES), label="file")
    original = (template / rel).read_bytes()
    how = draw(st.sampled_from(["mutate", "mutate", "mutate", "arbitrary"]), label="how")
    if how == "arbitrary":
        return rel, draw(arbitrary_bytes | token_soup(), label="content")
    content = gunzip_or_raw(original)
    if content is original or draw(st.booleans(), label="damage the compressed stream"):
        return rel, draw(mutated(original), label="content")
    bgzf = original[3:4] == b"\x04" and original[12:14] == b"BC"
    return rel, WRAPPERS["bgzf" if bgzf else "gzip"](draw(mutated(content), label="decompressed content"))


def _cohort_with(template: Path, workdir: Path, rel: str, content: bytes) -> Path:
    root = workdir / "cohort"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(template, root)
    (root / rel).write_bytes(content)
    return root


def _check_report(report: object, root: Path) -> None:
    """The report is usable, free of the validator's bug markers, and every problem is located in its file."""
    assert isinstance(report, ValidationReport)
    json.dumps(report.to_dict())
    assert report.to_text()
    for p in report.problems:
        assert not BUG_MARKERS.search(p.message), f"a reader or validator bug surfaced in the report: {p}"
        assert isinstance(p.file, str) and p.file.strip(), f"problem without a file: {p}"
        target = root / p.file
        lines: int | None = None
        if p.file.endswith(TEXT_SUFFIXES) and target.is_file():
            lines = line_count(gunzip_or_raw(target.read_bytes()))
        assert_located_issue(p.file, p.message, p.line, {p.file: lines}, what=f"{p.severity} problem")
        assert p.column is None or isinstance(p.column, str)


@fuzz_settings(VALIDATE_EXAMPLES)
@given(data=st.data())
def test_validate_reports_any_broken_file(template: Path, workdir: Path, data: st.DataObject) -> None:
    """validate_cohort on a cohort with one broken file returns a report of located problems, never raises."""
    rel, content = data.draw(broken_cohort_file(template), label="broken file")
    root = _cohort_with(template, workdir, rel, content)
    with watchdog(len(content), f"validate_cohort with a broken {rel}"):
        report = validate_cohort(root, workers=1)
    _check_report(report, root)


def _run_cli(root: Path) -> subprocess.CompletedProcess[str]:
    """``omics-risk validate ROOT`` as a user runs it, with this checkout's omics_risk first on the path."""
    src = str(Path(omics_risk.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "omics_risk.cli", "validate", str(root), "--quiet"],
        capture_output=True,
        text=True, encoding="utf-8",
        env=env,
        timeout=600,  # a watchdog, not a speed check: a normal run takes a second or two
        check=False,
    )


def _check_cli(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode in (0, 1), f"exit code {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert re.search(r"^\d+ error\(s\), \d+ warning\(s\)$", result.stdout, re.M), result.stdout[-2000:]
    assert not BUG_MARKERS.search(result.stdout), result.stdout[-3000:]


@fuzz_settings(CLI_EXAMPLES)
@given(data=st.data())
def test_cli_validate_exits_0_or_1_without_traceback(template: Path, workdir: Path, data: st.DataObject) -> None:
    """The command line on a cohort with one broken file: exit code 0 or 1, a report, and no traceback."""
    rel, content = data.draw(broken_cohort_file(template), label="broken file")
    _check_cli(_run_cli(_cohort_with(template, workdir, rel, content)))


def _long_nrrd_line(data: bytes) -> bytes:
    return data.replace(b"\nkinds:", b"\n" + b"A" * 5000 + b"\nkinds:", 1)


#: Broken files that, before the fixes, killed the process (SIGSEGV) or printed a traceback on stderr.
CLI_REGRESSIONS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "nrrd_long_header_line": ("ct/P02_preop.nrrd", _long_nrrd_line),
    "metaimage_negative_ndims": ("ct/P04_preop_mask.mha", lambda b: b.replace(b"NDims = 3", b"NDims = -1")),
    "bam_broken_header_block": ("cfdna/P03_postop1.bam", bam_with_broken_header_block),
    "clinical_extra_field": ("clinical.csv", lambda b: b.replace(b",24.5,1,1\n", b",24.5,1,1,x\n")),
}


@pytest.mark.parametrize("case", sorted(CLI_REGRESSIONS))
def test_cli_validate_regressions(case: str, template: Path, workdir: Path) -> None:
    """Each input that used to crash ``omics-risk validate`` now gives a report naming the broken file."""
    rel, damage = CLI_REGRESSIONS[case]
    content = damage((template / rel).read_bytes())
    assert content != (template / rel).read_bytes()
    result = _run_cli(_cohort_with(template, workdir, rel, content))
    _check_cli(result)
    assert result.returncode == 1 and rel in result.stdout, result.stdout[-2000:]

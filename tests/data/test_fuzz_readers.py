"""Property-based fuzzing of every data-file reader and of the contract parsers (hardening item 7).

Each reader gets (a) arbitrary bytes, or line-and-field shaped token soup, and (b) mutations of the matching valid
file of the tiny cohort (tests/conftest.py): byte flips, truncation, duplicated / deleted / swapped lines, swapped
fields, NUL and control characters, huge, negative and non-finite numbers, very long lines, non-UTF-8 and unicode,
other delimiters, gzip-wrapped garbage, and mutations of the compressed stream itself. The property: the reader
either returns its documented type, with the invariants its docstring promises (e.g. fragments have
``0 <= start < end``), or raises :class:`DataFileError` whose every issue names the file, says something, and
points (when it gives a line) inside the file. Any other exception is a reader bug; the contract parsers
(``parse_spec``, ``read_clinical``, ``read_samples``) must likewise return their problems, never raise.

Runtime and reproducibility: examples are derandomized and there is no example database, so CI sees the same
inputs on every run; sizes stay at a few KB and ``max_examples`` keeps the module to well under a minute.
``OMICS_RISK_FUZZ_SCALE=10`` explores ten times more locally, and ``OMICS_RISK_FUZZ_RANDOM=1`` draws new examples on
each run (bug hunting, not CI). Nothing asserts on speed: a watchdog
(:func:`fuzzing.watchdog`, module doc there) only fails an example that runs for more than a minute plus a second
per KB, which only a runaway parser reaches, never a slow machine.

The regression tests at the end keep one minimal input for each bug these properties found.
"""

from __future__ import annotations

import copy
import io
import itertools
import os
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
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

from omics_risk.data.contract import Problem, parse_spec, read_clinical, read_samples
from omics_risk.data.readers import (
    DataFileError,
    Fragments,
    MetabolomicsData,
    read_bed,
    read_bismark_cov,
    read_chrom_sizes,
    read_cn_segments,
    read_fragments,
    read_image,
    read_metabolomics,
    read_table,
    read_variant_table,
    reference_chromosomes,
)

pytestmark = [
    # A reader that lets pysam (or anything else) print "Exception ignored ... Traceback" on stderr fails here too.
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
    # nibabel's own note on a damaged NIfTI extension: expected on fuzzed headers, not a reader problem.
    pytest.mark.filterwarnings("ignore:Extension size is not a multiple of 16 bytes:UserWarning"),
]

MUTATION_EXAMPLES = 50
BYTES_EXAMPLES = 20
CONTRACT_EXAMPLES = 60

FASTA = b">chr1 first\n" + b"ACGTNacgtn" * 6 + b"\n" + b"GATTACA" * 8 + b"\n>chr2\n" + b"TTGCA" * 12 + b"\n"
BED = b"track name=regions\n# comment\nchr1\t0\t1000\tr1\t0\t+\nchr1\t2000\t2600\tr2\t5\t-\nchr2\t100\t900\tr3\t1\t.\n"
METABOLOMICS = ("metabolomics/matrix.csv", "metabolomics/sample_sheet.csv", "metabolomics/features.csv")


# --------------------------------------------------------------------------------------------------- result checks


def _check_fragments(f: object) -> None:
    assert isinstance(f, Fragments)
    assert (f.start.dtype, f.end.dtype, f.mapq.dtype, f.strand.dtype) == (np.int64, np.int64, np.int16, np.int8)
    assert len(f.chrom) == len(f.start) == len(f.end) == len(f.mapq) == len(f.strand)
    assert np.all(f.start >= 0) and np.all(f.end > f.start), "accepted fragments break 0 <= start < end"
    assert np.all((f.chrom >= 0) & (f.chrom < max(1, len(f.chrom_names))))
    assert all(isinstance(c, str) and c for c in f.chrom_names)


def _check_bismark(df: object) -> None:
    assert isinstance(df, pd.DataFrame)
    ints = ["start", "end", "count_methylated", "count_unmethylated"]
    assert list(df.columns) == ["chrom", "start", "end", "percent", *ints[2:]]
    assert all(df[c].dtype == np.int64 for c in ints) and df["percent"].dtype == np.float64
    assert df["percent"].between(0, 100).all() and (df[ints[2:]] >= 0).all().all() and (df["end"] >= df["start"]).all()


def _check_chrom_sizes(sizes: object) -> None:
    assert isinstance(sizes, dict) and sizes
    assert all(isinstance(k, str) and isinstance(v, int) and v >= 1 for k, v in sizes.items())


def _check_bed(df: object) -> None:
    assert isinstance(df, pd.DataFrame)
    assert df["start"].dtype == np.int64 and df["end"].dtype == np.int64, df.dtypes
    assert (df["start"] >= 0).all() and (df["end"] >= df["start"]).all()


def _check_variants(df: object) -> None:
    assert isinstance(df, pd.DataFrame)
    assert df["vaf"].between(0, 1).all() and df["depth"].dtype == np.int64 and (df["depth"] >= 0).all()
    assert df[["patient_id", "sample_id", "gene", "variant"]].notna().all().all() and np.isfinite(df["day"]).all()


def _check_table(df: object) -> None:
    assert isinstance(df, pd.DataFrame) and df.index.name == "sample_id"
    assert all(df[c].dtype == np.float64 for c in df.columns)
    assert np.isfinite(df.to_numpy()[~np.isnan(df.to_numpy())]).all()


def _check_segments(df: object) -> None:
    assert isinstance(df, pd.DataFrame)
    assert df["start"].dtype == np.int64 and df["end"].dtype == np.int64 and (df["end"] >= df["start"]).all()
    assert np.isfinite(df["segment_mean"]).all()


def _check_metabolomics(m: object) -> None:
    assert isinstance(m, MetabolomicsData)
    values = m.intensities.to_numpy(dtype=float)
    assert (values[~np.isnan(values)] > 0).all() and np.isfinite(values[~np.isnan(values)]).all()
    assert set(m.sheet["sample_type"]) <= {"sample", "qc", "blank"}


def _check_names(names: object) -> None:
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)


def _check_image(img: object) -> None:
    import SimpleITK as sitk

    assert isinstance(img, sitk.Image) and img.GetNumberOfPixels() > 0


# --------------------------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One reader on one kind of file: where its valid content comes from and how the fuzzed file is written."""

    name: str
    filename: str  # the fuzzed file, in the example's folder
    source: str  # the cohort file (decompressed) that is mutated; "" for an inline file (BED, FASTA)
    call: Callable[[Path, Path], object]  # (fuzzed file, cohort root) -> result
    check: Callable[[object], None]
    wrappers: tuple[str, ...] = ("none",)  # how mutated content is written (fuzzing.WRAPPERS)
    text: bool = True  # lines mean something (line numbers are checked against the content)
    companions: tuple[str, ...] = ()  # cohort files the reader also opens (issues may name them)


def _metabolomics(role: int) -> Callable[[Path, Path], object]:
    def call(path: Path, cohort: Path) -> object:
        files = [cohort / p for p in METABOLOMICS]
        files[role] = path
        return read_metabolomics(*files)

    return call


def _reader(fn: Callable[[Path], object]) -> Callable[[Path, Path], object]:
    return lambda path, cohort: fn(path)


TARGETS = [
    Target("fragments_gz", "x.frag.gz", "cfdna/P01_preop.frag.gz", _reader(read_fragments), _check_fragments,
           ("bgzf", "gzip")),
    Target("fragments_plain", "x.frag.tsv", "cfdna/P01_postop1.frag.gz", _reader(read_fragments), _check_fragments),
    Target("bam", "x.bam", "cfdna/P03_postop1.bam", _reader(read_fragments), _check_fragments, ("bgzf",), False),
    Target("bismark_gz", "x.cov.gz", "methylation/P01_postop1.cov.gz", _reader(read_bismark_cov), _check_bismark,
           ("gzip", "bgzf")),
    Target("bismark_plain", "x.cov", "methylation/P04_postop1.cov", _reader(read_bismark_cov), _check_bismark),
    Target("chrom_sizes", "x.chrom.sizes", "reference/genome.chrom.sizes", _reader(read_chrom_sizes),
           _check_chrom_sizes),
    Target("bed", "x.bed", "", _reader(read_bed), _check_bed, ("none", "gzip")),
    Target("fasta", "x.fa", "", _reader(lambda p: reference_chromosomes(p, "genome_fasta")), _check_names,
           ("none", "gzip", "bgzf")),
    Target("variant_table", "x.csv", "ctdna/variants.csv", _reader(read_variant_table), _check_variants,
           ("none", "gzip")),
    Target("table_csv", "x.csv", "rppa/rppa.csv", _reader(read_table), _check_table),
    Target("table_tsv", "x.tsv", "rppa/rppa.csv", _reader(read_table), _check_table),
    Target("table_parquet", "x.parquet", "rppa/rppa.csv", _reader(read_table), _check_table, text=False),
    Target("cn_segments", "x.csv", "cnv/segments.csv", _reader(read_cn_segments), _check_segments, ("none", "gzip")),
    Target("metabolomics_matrix", "x.csv", METABOLOMICS[0], _metabolomics(0), _check_metabolomics,
           companions=METABOLOMICS[1:]),
    Target("metabolomics_sheet", "x.csv", METABOLOMICS[1], _metabolomics(1), _check_metabolomics,
           companions=(METABOLOMICS[0], METABOLOMICS[2])),
    Target("metabolomics_features", "x.csv", METABOLOMICS[2], _metabolomics(2), _check_metabolomics,
           companions=METABOLOMICS[:2]),
    Target("nifti_gz", "x.nii.gz", "ct/P01_preop.nii.gz", _reader(read_image), _check_image, ("gzip",), False),
    Target("nifti", "x.nii", "ct/P01_preop_mask.nii.gz", _reader(read_image), _check_image, text=False),
    Target("nrrd", "x.nrrd", "ct/P02_preop.nrrd", _reader(read_image), _check_image, text=False),
    Target("metaimage", "x.mha", "ct/P04_preop.mha", _reader(read_image), _check_image, text=False),
]  # fmt: skip


@pytest.fixture(scope="module")
def cohort(make_valid_cohort: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny valid cohort, read-only for these tests: the source of valid content and of companion files."""
    return make_valid_cohort(tmp_path_factory.mktemp("fuzz_readers") / "cohort")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Module-scoped (hypothesis runs many examples per test); every example overwrites its own file."""
    return tmp_path_factory.mktemp("fuzz_inputs")


def _base(target: Target, cohort: Path) -> bytes:
    """The valid content the mutations start from (decompressed: mutations act on what the parser reads)."""
    if not target.source:
        return FASTA if target.name == "fasta" else BED
    if target.name == "table_parquet":
        buf = io.BytesIO()
        pd.read_csv(cohort / target.source).to_parquet(buf)
        return buf.getvalue()
    return gunzip_or_raw((cohort / target.source).read_bytes())


_example_number = itertools.count()


def _prepare(target: Target, workdir: Path) -> Path:
    """A fresh folder per example: nothing of the previous example (an index, a cache keyed on the file's
    mtime and size, as reference_chromosomes keeps) can leak into the next one."""
    shutil.rmtree(workdir / target.name, ignore_errors=True)
    folder = workdir / target.name / str(next(_example_number))
    folder.mkdir(parents=True)
    return folder / target.filename


def _run(target: Target, cohort: Path, path: Path, content: bytes) -> None:
    """Write ``content``, call the reader and check the outcome: its documented type, or a located DataFileError."""
    path.write_bytes(content)
    files: dict[str, int | None] = {str(path): line_count(gunzip_or_raw(content)) if target.text else None}
    for rel in target.companions:
        files[str(cohort / rel)] = line_count((cohort / rel).read_bytes())
    try:
        with watchdog(len(content), f"{target.name} reader"):
            result = target.call(path, cohort)
    except DataFileError as exc:
        assert exc.issues, "DataFileError without issues"
        for issue in exc.issues:
            assert_located_issue(issue.path, issue.message, issue.line, files)
        assert str(exc).strip()
    else:
        target.check(result)


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
@fuzz_settings(MUTATION_EXAMPLES)
@given(data=st.data())
def test_reader_on_mutated_valid_file(target: Target, cohort: Path, workdir: Path, data: st.DataObject) -> None:
    """A mutated valid file is read, or rejected with located issues; never another exception, never a hang."""
    path = _prepare(target, workdir)
    base = _base(target, cohort)
    wrapper = data.draw(st.sampled_from(target.wrappers), label="wrapper")
    if wrapper != "none" and data.draw(st.booleans(), label="mutate the compressed stream"):
        content = data.draw(mutated(WRAPPERS[wrapper](base)), label="compressed content")
    else:
        content = WRAPPERS[wrapper](data.draw(mutated(base), label="content"))
    _run(target, cohort, path, content)


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
@fuzz_settings(BYTES_EXAMPLES)
@given(data=st.data())
def test_reader_on_arbitrary_bytes(target: Target, cohort: Path, workdir: Path, data: st.DataObject) -> None:
    """Arbitrary bytes (raw or line-shaped, plain or compressed) never crash a reader."""
    path = _prepare(target, workdir)
    raw = data.draw(arbitrary_bytes | token_soup(), label="content")
    wrapper = data.draw(st.sampled_from(sorted({"none", *target.wrappers})), label="wrapper")
    _run(target, cohort, path, WRAPPERS[wrapper](raw))


DICOM_EXAMPLES = 60
DICOM_SERIES = "ct/P03_preop_dicom"


@fuzz_settings(DICOM_EXAMPLES)
@given(data=st.data())
def test_dicom_folder_with_one_mutated_slice(cohort: Path, workdir: Path, data: st.DataObject) -> None:
    """A DICOM series with one mutated slice is read, or rejected with an issue naming the folder or that slice.

    GDCM's folder scan trusted a damaged slice's lengths (one 1.4 KB slice cost ~3 GB), so the slices are
    pre-checked with pydicom; this explores what reaches that check and, past it, GDCM."""
    shutil.rmtree(workdir / "dicom", ignore_errors=True)
    folder = workdir / "dicom" / str(next(_example_number)) / "series"
    shutil.copytree(cohort / DICOM_SERIES, folder)
    slices = sorted(folder.iterdir())
    victim = slices[data.draw(st.integers(0, len(slices) - 1), label="slice")]
    content = data.draw(mutated(victim.read_bytes()), label="content")
    victim.write_bytes(content)
    files: dict[str, int | None] = {str(p): None for p in (folder, *slices)}
    try:
        with watchdog(len(content), "DICOM series reader"):
            result = read_image(folder)
    except DataFileError as exc:
        assert exc.issues, "DataFileError without issues"
        for issue in exc.issues:
            assert_located_issue(issue.path, issue.message, issue.line, files)
    else:
        _check_image(result)


# --------------------------------------------------------------------------------------------------- contract parsers


def _check_problems(problems: object, fname: str, content: bytes, usable: bool) -> None:
    """Problems are records naming ``fname`` with a message and an in-file line; an unusable result has an error."""
    assert isinstance(problems, list)
    n = line_count(content)
    for p in problems:
        assert isinstance(p, Problem) and p.severity in ("error", "warning")
        assert_located_issue(p.file, p.message, p.line, {fname: n}, what="problem")
        assert p.column is None or isinstance(p.column, str)
        assert str(p)
    if not usable:
        assert any(p.severity == "error" for p in problems), "unusable result without an error"


yaml_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(["survival", "binary", "ordinal", "numeric", "table", "image", "days", "months", "rfs_time", ""])
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=3),
    max_leaves=8,
)


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path into a nested mapping (the places a YAML value can be replaced)."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k))
    return out


@st.composite
def spec_documents(draw: Callable, base: dict) -> bytes:
    """cohort.yaml with values replaced by, or keys added with, arbitrary YAML values (wrong types, nesting...)."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            parent[path[-1]] = draw(yaml_values)
        else:
            parent[draw(st.text(max_size=6) | st.integers())] = draw(yaml_values)
    return yaml.safe_dump(doc, allow_unicode=True).encode()


@fuzz_settings(CONTRACT_EXAMPLES)
@given(data=st.data())
def test_parse_spec_never_raises(cohort: Path, workdir: Path, data: st.DataObject) -> None:
    """cohort.yaml with any content (mutated text, wrong YAML types, bytes) gives problems, not an exception."""
    base = (cohort / "cohort.yaml").read_bytes()
    content = data.draw(
        st.one_of(mutated(base), spec_documents(yaml.safe_load(base)), arbitrary_bytes, token_soup()), label="yaml"
    )
    path = workdir / "spec" / "cohort.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    with watchdog(len(content), "parse_spec"):
        spec, problems = parse_spec(path)
    _check_problems(problems, "cohort.yaml", content, usable=spec is not None)


@pytest.mark.parametrize("table", ["clinical.csv", "samples.csv"])
@fuzz_settings(CONTRACT_EXAMPLES)
@given(data=st.data())
def test_contract_tables_never_raise(table: str, cohort: Path, workdir: Path, data: st.DataObject) -> None:
    """clinical.csv / samples.csv with any content give problems with in-file lines, not an exception."""
    base = (cohort / table).read_bytes()
    content = data.draw(st.one_of(mutated(base), mutated(base), arbitrary_bytes, token_soup()), label=table)
    root = workdir / "tables"
    root.mkdir(exist_ok=True)
    (root / table).write_bytes(content)
    spec, _ = parse_spec(cohort / "cohort.yaml")
    with watchdog(len(content), f"reading {table}"):
        if table == "clinical.csv":
            df, problems = read_clinical(root, spec)
        else:
            df, problems = read_samples(root, spec, ["P01", "P02", "P03", "P04", "P05", "P06"])
    assert df is None or isinstance(df, pd.DataFrame)
    _check_problems(problems, table, content, usable=df is not None)


# --------------------------------------------------------------------------------------------------- regressions
# One minimal input per bug the properties above found; each raised another exception, crashed the process, took
# NA for a number, or pointed outside the file before its fix (see the commit that fixed it).


def _rejected(read: Callable[[Path], object], path: Path, content: bytes) -> DataFileError:
    """Write ``content`` and read it: it must be rejected with every issue located inside the file."""
    path.write_bytes(content)
    with pytest.raises(DataFileError) as exc:
        read(path)
    for issue in exc.value.issues:
        assert_located_issue(issue.path, issue.message, issue.line, {str(path): line_count(gunzip_or_raw(content))})
    return exc.value


def _first(err: DataFileError) -> tuple[int | None, str | None, str]:
    return err.issues[0].line, err.issues[0].column, err.issues[0].message


def test_regression_table_first_data_line_one_field_too_many(tmp_path: Path) -> None:
    """pandas made the first column the index: ValueError int('P04') in _Table.line."""
    err = _rejected(read_table, tmp_path / "t.csv", b"sample_id,a\nS1,1,2\nS2,3\n")
    assert _first(err)[0] == 2 and "more fields than the header" in _first(err)[2]
    err = _rejected(read_variant_table, tmp_path / "v.csv", b"\n\nsample_id,a\n\nS1,1,2\n")
    assert _first(err)[0] == 5


def test_regression_table_with_lone_cr_line_ends_and_unparsable_header(tmp_path: Path) -> None:
    """A header ending in a lone \\r raised _csv.Error; an over-long header field too. Old-Mac CSVs now read."""
    (tmp_path / "cr.csv").write_bytes(b"sample_id,a\rS1,1\rS2,2\r")
    assert read_table(tmp_path / "cr.csv")["a"].tolist() == [1.0, 2.0]
    err = _rejected(read_table, tmp_path / "h.csv", b'sample_id,"' + b"x" * 200_000 + b'"\nS1,1\n')
    assert _first(err)[0] == 1


def test_regression_table_too_many_fields_line_is_a_real_line(tmp_path: Path) -> None:
    """pandas said 'line 4' for this 2-line file (it numbers records): the line now comes from the csv module."""
    assert _first(_rejected(read_table, tmp_path / "t.csv", b"\r\t,"))[0] == 2
    quoted = b'sample_id,b\n"x\ny",2\n3,4,5\n'  # a quoted line break: the bad record is on line 4
    assert _first(_rejected(read_table, tmp_path / "q.csv", quoted))[0] == 4


def test_regression_cn_segments_fractional_or_huge_num_probes(tmp_path: Path) -> None:
    """num_probes 1.5 / inf raised TypeError / OverflowError in the Int64 cast; 1e20 a TypeError."""
    head = b"sample_id,chrom,start,end,segment_mean,num_probes\n"
    for cell, message in ((b"1.5", "whole number"), (b"inf", "finite"), (b"99999999999999999999", "too large")):
        err = _rejected(read_cn_segments, tmp_path / "s.csv", head + b"S1,chr1,1,9000,0.3," + cell + b"\n")
        assert _first(err)[:2] == (2, "num_probes") and message in _first(err)[2]


def test_regression_table_whole_numbers_beyond_int64(tmp_path: Path, cohort: Path) -> None:
    """depth 2^63 - 1 became -2^63 in the int64 column, silently."""
    lines = (cohort / "ctdna/variants.csv").read_bytes().split(b"\n")
    fields = lines[1].split(b",")
    fields[6] = b"9223372036854775807"
    lines[1] = b",".join(fields)
    err = _rejected(read_variant_table, tmp_path / "v.csv", b"\n".join(lines))
    assert _first(err)[:2] == (2, "depth") and "too large" in _first(err)[2]


@pytest.mark.parametrize(
    ("read", "content", "column", "says"),
    [
        (read_bed, b"chr1\tNA\t100\n", "start", "whole number"),  # was accepted with a NaN start
        (
            read_bismark_cov,
            b"chr1\t10\t10\t50.0\tNA\t1\n",
            "count_methylated",
            "whole number",
        ),  # was -2^63 methylated reads
        (
            read_fragments,
            b"chr1\t100\t200\t30\t+\nchr1\tnull\t300\t30\t+\n",
            "start",
            "'null'",
        ),  # 'got -9223372036854775808'
        (
            read_fragments,
            b"chr1\t+5\t300\t30\t+\n",
            "start",
            "whole number",
        ),  # pyarrow refuses '+5': was reported without a line
        (read_bismark_cov, b"chr1\t10\t10\t1_0\t1\t1\n", "percent", "a number"),  # '1_0': no line either
        (
            read_bed,
            b"chr1\t9223372036854775808\t9223372036854775809\n",
            "start",
            "out of range",
        ),  # beyond int64: no line
        (read_chrom_sizes, b"chr1\t1_000\n", "size", "whole number"),  # was accepted as 1000
    ],
)
def test_regression_text_numbers_as_pyarrow_reads_them(
    read: Callable[[Path], object], content: bytes, column: str, says: str, tmp_path: Path
) -> None:
    """NA / null were nulls (NaN, or garbage once cast); values Python parses but pyarrow refuses had no line."""
    err = _rejected(read, tmp_path / "x.tsv", content)
    line, col, message = _first(err)
    assert (line, col) == (content.count(b"\n"), column) and says in message, message


def test_regression_nrrd_long_header_line(tmp_path: Path, cohort: Path) -> None:
    """A ~1 KB unparsable NRRD header line overflowed teem's error buffer: SIGSEGV, the whole process died."""
    nrrd = (cohort / "ct/P02_preop.nrrd").read_bytes().replace(b"\nkinds:", b"\n" + b"A" * 5000 + b"\nkinds:", 1)
    path = tmp_path / "x.nrrd"
    path.write_bytes(nrrd)
    with pytest.raises(DataFileError) as exc:
        read_image(path)
    assert exc.value.line == 9 and "5000 bytes" in exc.value.message
    kv = (cohort / "ct/P02_preop.nrrd").read_bytes().replace(b"\nkinds:", b"\nnote:=" + b"A" * 5000 + b"\nkinds:", 1)
    path.write_bytes(kv)  # a long key:=value line is safe for teem and stays allowed
    assert read_image(path).GetSize() == (16, 16, 8)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"NDims = 3", b"NDims = -1"),  # SIGSEGV
        (b"NDims = 3", b"NDims : 1e3"),  # SIGSEGV (MetaIO reads ':' and numbers like atof)
        (b"ElementDataFile = LOCAL", b"ElementDataFile = x%s%s.raw 1 3 1"),  # printf: SIGSEGV
        (b"ElementDataFile = LOCAL", b"ElementDataFile = x%03d.raw 1 10 0"),  # step 0: SIGFPE
    ],
)
def test_regression_metaimage_header_that_crashes_metaio(old: bytes, new: bytes, tmp_path: Path, cohort: Path) -> None:
    data = (cohort / "ct/P04_preop_mask.mha").read_bytes()
    path = tmp_path / "x.mha"
    path.write_bytes(data.replace(old, new, 1))
    with pytest.raises(DataFileError) as exc:
        read_image(path)
    assert exc.value.line == data[: data.index(old)].count(b"\n") + 1


def test_regression_corrupt_deflate_in_nifti_and_fasta(tmp_path: Path, cohort: Path) -> None:
    """Python's gzip raises zlib.error (not OSError) on corrupt deflate data: it escaped read_image and
    reference_chromosomes."""
    for rel, name in (("ct/P01_preop.nii.gz", "x.nii.gz"), ("reference/genome.fa", "x.fa")):
        data = WRAPPERS["gzip"](gunzip_or_raw((cohort / rel).read_bytes()))
        broken = data[:10] + b"\x07" + data[11:]  # reserved deflate block type
        path = tmp_path / name
        path.write_bytes(broken)
        with pytest.raises(DataFileError):
            read_image(path) if name.endswith(".nii.gz") else reference_chromosomes(path, "genome_fasta")


def _damaged_series(cohort: Path, tmp_path: Path, damage: Callable[[Path], None]) -> tuple[Path, Path]:
    """A copy of the cohort's DICOM series with ``damage`` done to its fourth slice: (folder, that slice)."""
    folder = tmp_path / "series"
    shutil.copytree(cohort / DICOM_SERIES, folder)
    victim = sorted(folder.iterdir())[3]
    damage(victim)
    return folder, victim


def _patch_bytes(offset_of: Callable[[bytes], int], new: bytes) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = bytearray(path.read_bytes())
        at = offset_of(bytes(data))
        data[at : at + len(new)] = new
        path.write_bytes(bytes(data))

    return damage


def _set_tags(**values: int) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        import pydicom

        ds = pydicom.dcmread(path)
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        ds.save_as(path)

    return damage


_META_OB_LENGTH = _patch_bytes(lambda b: b.index(b"\x02\x00\x01\x00OB") + 8, (0xB0000000).to_bytes(4, "little"))

_DICOM_DAMAGE = {
    # (0002,0001) OB length -> 0xB0000000: GDCM's folder scan allocated ~3 GB (5.7 GB peak) on this 1.4 KB slice
    "meta_element_length": (_META_OB_LENGTH, "declares 2,952,790,016 bytes"),
    "rows_element_length": (
        _patch_bytes(lambda b: b.index(b"\x28\x00\x10\x00\x02\x00\x00\x00") + 4, (0xB0000000).to_bytes(4, "little")),
        "(0028,0010) declares 2,952,790,016 bytes",
    ),
    "huge_rows_columns": (_set_tags(Rows=65535, Columns=65535), "8,589,672,450 bytes"),
    "huge_frames": (_set_tags(NumberOfFrames=100000), "16 x 16 x 100000 voxels"),
    "bits_allocated": (_set_tags(BitsAllocated=239), "BitsAllocated = 239"),
    "samples_per_pixel": (_set_tags(SamplesPerPixel=200), "SamplesPerPixel = 200"),
    "truncated_pixels": (lambda p: p.write_bytes(p.read_bytes()[:-200]), "(7FE0,0010) declares 512 bytes"),
    "not_dicom": (lambda p: p.write_bytes(b"slices were not exported\n"), "not a DICOM file"),
}


@pytest.mark.parametrize("case", sorted(_DICOM_DAMAGE))
def test_regression_damaged_dicom_slice_is_named_before_gdcm_sees_it(
    case: str, tmp_path: Path, cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import SimpleITK as sitk

    def no_scan(*args: object) -> None:
        raise AssertionError("GDCM scanned a folder holding a damaged slice")

    monkeypatch.setattr(sitk.ImageSeriesReader, "GetGDCMSeriesIDs", staticmethod(no_scan))
    damage, says = _DICOM_DAMAGE[case]
    folder, victim = _damaged_series(cohort, tmp_path, damage)
    with pytest.raises(DataFileError) as exc:
        read_image(folder)
    assert exc.value.issues[0].path == str(victim) and says in exc.value.message, exc.value.message
    assert "move it out" in exc.value.message


def test_regression_damaged_dicom_slice_memory_is_bounded(tmp_path: Path, cohort: Path) -> None:
    """Peak memory of reading the series with the 3 GB slice, in a fresh process, over what the imports take."""
    folder, victim = _damaged_series(cohort, tmp_path, _META_OB_LENGTH)
    code = (
        "import resource, sys\n"
        "import SimpleITK, pydicom\n"
        "from omics_risk.data.readers import DataFileError, read_image\n"
        "floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    read_image(sys.argv[1])\n"
        "except DataFileError as exc:\n"
        "    print(exc.issues[0].path)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - floor) // 1024)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                         text=True, encoding="utf-8", env=env, check=True)
    named, grown_mb = out.stdout.split()
    assert named == str(victim)
    assert int(grown_mb) < 500, f"reading the damaged series grew the peak RSS by {grown_mb} MB"


def test_regression_dicom_folder_file_cap_and_voxel_limit(
    tmp_path: Path, cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Too many files, or more voxels than the limit in the slice headers, are refused before GDCM scans."""
    import SimpleITK as sitk

    from omics_risk.data import readers

    folder = tmp_path / "series"
    shutil.copytree(cohort / DICOM_SERIES, folder)
    monkeypatch.setattr(readers.dicom, "MAX_DICOM_FILES", 5)
    with pytest.raises(DataFileError, match="more than 5 files"):
        read_image(folder)
    monkeypatch.setattr(readers.dicom, "MAX_DICOM_FILES", 4096)
    monkeypatch.setattr(sitk.ImageSeriesReader, "GetGDCMSeriesIDs", None)  # calling it would fail the test
    with pytest.raises(DataFileError, match=r"16 x 16 x 8 = 2,048 voxels, more than the limit of 2,047"):
        read_image(folder, max_voxels=2047)


def _metaimage_case(base: bytes, case: str) -> bytes:
    header_end = base.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    if case == "truncated_raw":
        return base[:-1000]
    if case == "compressed_flag_over_raw":
        return base.replace(b"CompressedData = False", b"CompressedData = True", 1)
    compressed = zlib.compress(base[header_end:])
    head = base[:header_end].replace(
        b"CompressedData = False", b"CompressedData = True\nCompressedDataSize = %d" % len(compressed), 1
    )
    if case == "truncated_compressed":
        return head + compressed[: len(compressed) // 2]
    if case == "short_compressed":  # a complete zlib stream of too few bytes
        short = zlib.compress(base[header_end : header_end + 100])
        return head.replace(b"= %d" % len(compressed), b"= %d" % len(short)) + short
    assert case == "valid_compressed"
    return head + compressed


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("truncated_raw", "bytes of voxel data but the file holds"),
        ("compressed_flag_over_raw", "not a valid zlib stream"),
        ("truncated_compressed", "CompressedDataSize"),
        ("short_compressed", "inflates to 100 bytes"),
        ("valid_compressed", ""),
    ],
)
def test_regression_metaimage_data_that_metaio_misreads(case: str, says: str, tmp_path: Path, cohort: Path) -> None:
    """MetaIO read 'CompressedData = True' over raw data as garbage voxels ("Uncompress failed" on stderr only),
    and refused a truncated file as "No such file or directory"."""
    base = (cohort / "ct/P04_preop.mha").read_bytes()
    assert b"CompressedData = False" in base
    path = tmp_path / "x.mha"
    path.write_bytes(_metaimage_case(base, case))
    if not says:
        expected = read_image(cohort / "ct/P04_preop.mha")
        got = read_image(path)
        assert got.GetSize() == expected.GetSize() and got.GetPixelIDValue() == expected.GetPixelIDValue()
        return
    with pytest.raises(DataFileError) as exc:
        read_image(path)
    assert exc.value.issues[0].path == str(path) and says in exc.value.message, exc.value.message
    assert "No such file" not in exc.value.message


def test_regression_bam_broken_header_and_plain_gzip(tmp_path: Path, cohort: Path) -> None:
    """An unreadable BAM header made pysam print 'Exception ignored ... Traceback' (this module turns that warning
    into a failure); a BAM that is plain gzip, not BGZF, raised NotImplementedError from pysam."""
    bam = (cohort / "cfdna/P03_postop1.bam").read_bytes()
    _rejected(read_fragments, tmp_path / "broken.bam", bam_with_broken_header_block(bam))
    err = _rejected(read_fragments, tmp_path / "gzip.bam", WRAPPERS["gzip"](gunzip_or_raw(bam)))
    assert "BGZF" in err.message


def _spec_problems(tmp_path: Path, text: str) -> list[Problem]:
    path = tmp_path / "cohort.yaml"
    path.write_text(text)
    spec, problems = parse_spec(path)
    _check_problems(problems, "cohort.yaml", text.encode(), usable=spec is not None)
    return problems


VALID_SPEC = "name: x\ntime_unit: days\nendpoints: {rfs: {type: survival, time: t, event: e}}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: 2020-13-45\n", "not valid YAML"),  # ValueError from PyYAML's date constructor
        ("a: !!timestamp x\n", "not valid YAML"),  # AttributeError
        ("a: " + "[" * 3000 + "\n", "not valid YAML"),  # RecursionError
        (VALID_SPEC.replace("days", "[days]"), "'time_unit' must be one of"),  # TypeError: unhashable list
        ("1: x\nfoo: y\n" + VALID_SPEC, "unknown key '1'"),  # TypeError: sorted() of int and str keys
        (VALID_SPEC + "clinical: {stage: {type: ordinal, levels: 5}}\n", "has levels 5"),  # TypeError: not iterable
    ],
)
def test_regression_parse_spec_odd_yaml(text: str, expected: str, tmp_path: Path) -> None:
    assert any(expected in p.message for p in _spec_problems(tmp_path, text))


def test_regression_parse_spec_alias_bomb_is_quoted_briefly(tmp_path: Path) -> None:
    """Messages used repr(): an alias of aliases (10^4 elements from 200 bytes here, 10^8 from 400) was quoted
    whole, taking seconds to minutes. A bounded repr keeps the message short whatever the nesting."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 4):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*{'a' if i == 1 else f'l{i - 1}'}"] * 10) + "]")
    text = "\n".join(lines) + "\n" + VALID_SPEC.replace("days", "*l3")
    problems = _spec_problems(tmp_path, text)
    unit = [p for p in problems if "'time_unit' must be one of" in p.message]
    assert len(unit) == 1 and len(unit[0].message) < 500


def test_regression_contract_table_first_data_line_one_field_too_many(tmp_path: Path, cohort: Path) -> None:
    """pandas made patient_id the index: read_clinical crashed in _duplicates (ValueError: identically-labeled)."""
    text = (cohort / "clinical.csv").read_bytes().replace(b",24.5,1,1\n", b",24.5,1,1,extra\n", 1)
    text += text.split(b"\n")[2] + b"\n"  # and a duplicated patient, which reached the crashing comparison
    (tmp_path / "clinical.csv").write_bytes(text)
    spec, _ = parse_spec(cohort / "cohort.yaml")
    df, problems = read_clinical(tmp_path, spec)
    assert df is None and [(p.line, "more fields than the header" in p.message) for p in problems] == [(2, True)]


def test_watchdog_interrupts_a_runaway_example(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hang guard itself: with its budget shrunk to a fraction of a second, a call that would run for half a
    minute is stopped with a 'possible hang' failure (the real budget is a minute and more, see fuzzing.py)."""
    import time

    import fuzzing

    monkeypatch.setattr(fuzzing, "WATCHDOG_BASE_S", 0.2)
    monkeypatch.setattr(fuzzing, "WATCHDOG_PER_KB_S", 0.0)
    with (
        pytest.raises(fuzzing.PossibleHang, match="possible hang: a sleeping reader"),
        fuzzing.watchdog(1024, "a sleeping reader"),
    ):
        time.sleep(30)

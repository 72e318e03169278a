"""The format readers on small files with known content: exact values, and precise errors on malformed input."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pysam
import pytest
import SimpleITK as sitk

from omics_risk.data import readers
from omics_risk.data.readers import (
    AUTOSOME_RE,
    MAX_IMAGE_VOXELS,
    MAX_IMAGE_VOXELS_ENV,
    DataFileError,
    FileIssue,
    Fragments,
    binned_chromosomes,
    check_image_header,
    check_mask_geometry,
    check_mask_header,
    chromosome_naming_problem,
    format_extension_problem,
    image_voxel_limit,
    read_bed,
    read_bismark_cov,
    read_chrom_sizes,
    read_cn_segments,
    read_fragments,
    read_image,
    read_image_header,
    read_metabolomics,
    read_table,
    read_variant_table,
    reference_chromosomes,
)
from omics_risk.data.validate import validate_cohort


def _error(fn, *args, **kwargs) -> DataFileError:  # type: ignore[no-untyped-def]
    with pytest.raises(DataFileError) as exc:
        fn(*args, **kwargs)
    return exc.value


def _where(err: DataFileError) -> list[tuple[int | None, str | None]]:
    return [(i.line, i.column) for i in err.issues]


# --------------------------------------------------------------------------------------------------- images


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory: pytest.TempPathFactory, data_writers: SimpleNamespace) -> dict[str, Path]:
    """One CT volume (non-trivial direction and origin) written as NIfTI, NRRD, MetaImage and a DICOM series."""
    d = tmp_path_factory.mktemp("ct")
    image, mask = data_writers.ct_volume(3, origin=(-12.5, 40.25, -301.0))
    c, s = np.cos(0.3), np.sin(0.3)
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    image.SetDirection(direction)
    mask.SetDirection(direction)
    files = {"nifti": d / "ct.nii.gz", "nrrd": d / "ct.nrrd", "mha": d / "ct.mha", "nii": d / "ct.nii"}
    for p in files.values():
        sitk.WriteImage(image, str(p))
    data_writers.write_dicom_series(image, d / "dicom")
    files["dicom"] = d / "dicom"
    files["mask"] = d / "mask.nii.gz"
    sitk.WriteImage(mask, str(files["mask"]))
    files["reference"] = d / "reference.mha"
    sitk.WriteImage(image, str(files["reference"]))
    return files


@pytest.mark.parametrize("fmt", ["nifti", "nii", "nrrd", "mha", "dicom"])
def test_image_formats_agree(ct_files: dict[str, Path], fmt: str) -> None:
    ref = sitk.ReadImage(str(ct_files["reference"]))
    img = read_image(ct_files[fmt])
    assert img.GetSize() == ref.GetSize() == (16, 16, 8)
    np.testing.assert_allclose(img.GetSpacing(), ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(img.GetDirection(), ref.GetDirection(), atol=1e-5)
    a = sitk.GetArrayFromImage(img).astype(np.float64)
    np.testing.assert_allclose(a, sitk.GetArrayFromImage(ref), atol=0.5)
    assert check_mask_geometry(img, read_image(ct_files["mask"])) == []


def test_dicom_folder_with_two_series(ct_files: dict[str, Path], data_writers: SimpleNamespace, tmp_path: Path) -> None:
    image = read_image(ct_files["reference"])
    data_writers.write_dicom_series(image, tmp_path / "two", series_uid="1.2.3.1")
    for f in (tmp_path / "two").iterdir():
        f.rename(tmp_path / "two" / f"a_{f.name}")
    data_writers.write_dicom_series(image, tmp_path / "two", series_uid="1.2.3.2")
    err = _error(read_image, tmp_path / "two")
    assert "holds 2 DICOM series" in str(err) and "its own folder" in str(err)
    (tmp_path / "empty").mkdir()
    assert "holds no DICOM series" in str(_error(read_image, tmp_path / "empty"))


def test_image_errors(ct_files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "ct.png"
    bad.write_bytes(b"x")
    err = _error(read_image, bad)
    assert ".nii.gz" in str(err) and ".nrrd" in str(err) and ".mha" in str(err) and "DICOM" in str(err)
    assert isinstance(err, ValueError) and err.path == str(bad)
    assert "file not found" in str(_error(read_image, tmp_path / "missing.nii.gz"))
    for name in ("nifti", "nii", "mha"):
        data = ct_files[name].read_bytes()
        cut = tmp_path / ct_files[name].name
        cut.write_bytes(data[: len(data) * 2 // 3])
        err = _error(read_image, cut)
        assert "truncated" in str(err) or "cannot be read" in str(err), str(err)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"definitely not an image" * 10)
    assert str(garbage) in str(_error(read_image, garbage))


def test_mask_geometry_checks(ct_files: dict[str, Path]) -> None:
    image = read_image(ct_files["reference"])
    mask = read_image(ct_files["mask"])
    assert check_mask_geometry(image, mask) == []

    shifted = sitk.Image(mask)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    why = check_mask_geometry(image, shifted)
    assert why[0].startswith("origin differs") and "resample" in why[-1]

    spaced = sitk.Image(mask)
    spaced.SetSpacing((1.0, 0.8, 2.5))
    assert check_mask_geometry(image, spaced)[0].startswith("spacing differs: mask (1, 0.8, 2.5) mm")

    turned = sitk.Image(mask)
    turned.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    assert check_mask_geometry(image, turned)[0].startswith("direction differs")

    small = sitk.Image([16, 16, 4], sitk.sitkUInt8)
    assert any(
        w.startswith("size differs: mask (16, 16, 4) voxels, image (16, 16, 8)")
        for w in check_mask_geometry(image, small)
    )

    empty = mask * 0
    assert check_mask_geometry(image, empty) == ["mask is empty (no voxel > 0); give the tumour a label > 0"]

    fractional = sitk.Cast(mask, sitk.sitkFloat32) * 0.5
    assert "non-integer" in check_mask_geometry(image, fractional)[0]
    assert check_mask_geometry(image, sitk.Cast(mask, sitk.sitkFloat32)) == []  # float 0/1 labels are fine
    nearly = sitk.Image(mask)
    nearly.SetSpacing(tuple(s + 1e-5 for s in mask.GetSpacing()))
    assert check_mask_geometry(image, nearly) == []


# --------------------------------------------------------------------------------------------------- fragments

FRAG_TEXT = (
    "# chrom start end mapq strand\n"
    "chr1\t100\t266\t60\t+\n"
    "chr1\t150\t300\t12\t-\n"
    "chr2\t10\t40\t0\t+\n"
    "chrX\t5\t205\t255\t-\n"
    "chr1\t500\t650\t37\t-\n"
)


def _write(path: Path, text: str, how: str = "plain") -> Path:
    if how == "bgzf":
        plain = path.with_name(path.name + ".txt")
        plain.write_text(text)
        pysam.tabix_compress(str(plain), str(path), force=True)
    elif how == "gzip":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_fragments_exact_values(tmp_path: Path) -> None:
    f = read_fragments(_write(tmp_path / "a.frag.gz", FRAG_TEXT, "bgzf"))
    assert isinstance(f, Fragments) and len(f) == 5
    assert f.chrom_names == ["chr1", "chr2", "chrX"]
    assert f.chrom.dtype == np.int32 and f.chrom.tolist() == [0, 0, 1, 2, 0]
    assert f.start.dtype == np.int64 and f.start.tolist() == [100, 150, 10, 5, 500]
    assert f.end.dtype == np.int64 and f.end.tolist() == [266, 300, 40, 205, 650]
    assert f.mapq.dtype == np.int16 and f.mapq.tolist() == [60, 12, 0, 255, 37]
    assert f.strand.dtype == np.int8 and f.strand.tolist() == [1, -1, 1, -1, -1]
    assert f.lengths.tolist() == [166, 150, 30, 200, 150]
    frame = f.to_frame()
    assert frame["chrom"].tolist() == ["chr1", "chr1", "chr2", "chrX", "chr1"]


def test_bgzf_gzip_and_plain_agree(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    text = "\n".join(data_writers.fragment_lines(11, n=4000)) + "\n"
    reads = [read_fragments(_write(tmp_path / f"x.{how}.frag.gz", text, how)) for how in ("bgzf", "gzip")]
    reads.append(read_fragments(_write(tmp_path / "x.frag.tsv", text)))
    raw = (tmp_path / "x.bgzf.frag.gz").read_bytes()
    assert raw.count(b"\x1f\x8b\x08\x04") > 1  # really multi-member BGZF
    for other in reads[1:]:
        for k in ("chrom", "start", "end", "mapq", "strand"):
            np.testing.assert_array_equal(getattr(reads[0], k), getattr(other, k))
    assert len(reads[0]) == 4000


def test_fragments_with_crlf_and_blank_lines(tmp_path: Path) -> None:
    text = FRAG_TEXT.replace("\n", "\r\n").replace("chr2\t10", "\r\nchr2\t10")
    f = read_fragments(_write(tmp_path / "crlf.frag", text))
    assert f.start.tolist() == [100, 150, 10, 5, 500] and f.strand.tolist() == [1, -1, 1, -1, -1]
    err = _error(read_fragments, _write(tmp_path / "crlf_bad.frag", text.replace("chrX\t5\t205", "chrX\t500\t205")))
    assert (err.line, err.column) == (6, "end")  # the blank line still counts


def test_fragment_filters_and_layouts(tmp_path: Path) -> None:
    p = _write(tmp_path / "a.frag.gz", FRAG_TEXT, "gzip")
    assert read_fragments(p, min_mapq=30).start.tolist() == [100, 5, 500]
    assert read_fragments(p, min_length=150, max_length=166).start.tolist() == [100, 150, 500]
    bed6 = _write(tmp_path / "b.bed.gz", "chr1\t10\t60\tr1\t30\t+\nchr1\t20\t90\tr2\t7\t.\n", "gzip")
    f = read_fragments(bed6)
    assert f.mapq.tolist() == [30, 7] and f.strand.tolist() == [1, 0]
    bed3 = read_fragments(_write(tmp_path / "c.bed", "chr2\t1\t11\nchr2\t3\t9\n"))
    assert bed3.mapq.tolist() == [-1, -1] and bed3.strand.tolist() == [0, 0] and bed3.chrom_names == ["chr2"]
    assert read_fragments(tmp_path / "c.bed", min_mapq=20).start.tolist() == [1, 3]  # no MAPQ: kept
    assert len(read_fragments(_write(tmp_path / "e.frag.gz", "# only a header\n", "bgzf"))) == 0


def test_fragment_errors_name_line_and_column(tmp_path: Path) -> None:
    lines = FRAG_TEXT.splitlines()
    lines[2] = "chr1\t300\t150\t12\t-"  # start > end, file line 3
    lines.insert(4, "# a comment in the middle")
    lines.insert(5, "")
    lines[6] = "chrX\t5\t205\t255\t*"  # file line 7
    p = _write(tmp_path / "bad.frag.gz", "\n".join(lines) + "\n", "bgzf")
    err = _error(read_fragments, p)
    assert _where(err) == [(3, "end"), (7, "strand")]
    assert "end (150) must be greater than start (300)" in err.issues[0].message
    assert "strand must be '+' or '-', got '*'" in err.issues[1].message
    assert str(err).startswith(f"{p}:3 [end]: ") and "(and 1 more problem(s) in this file)" in str(err)

    cases = {
        "chr1\tabc\t266\t60\t+": ("start", "start must be a whole number, got 'abc'"),
        "chr1\t100\t266.5\t60\t+": ("end", "end must be a whole number"),
        "chr1\t-5\t266\t60\t+": ("start", "start must be >= 0"),
        "chr1\t100\t266\t60": (None, "has 4 tab-separated column(s), expected 5"),
        "chr1\t100\t266\t300\t+": ("mapq", "mapq must be"),
        "chr1\t100\t100\t60\t+": ("end", "must be greater than start"),
        "\t100\t266\t60\t+": ("chrom", "chrom must not be empty"),
    }
    for k, (bad, (column, text)) in enumerate(cases.items()):
        content = FRAG_TEXT.splitlines()
        content[2] = bad  # file line 3: the comment is line 1
        err = _error(read_fragments, _write(tmp_path / f"case{k}.frag", "\n".join(content) + "\n"))
        assert (err.line, err.column) == (3, column), (bad, str(err))
        assert text in err.message, (bad, err.message)


def test_fragment_first_line_with_wrong_columns(tmp_path: Path) -> None:
    err = _error(read_fragments, _write(tmp_path / "w.frag", "# h\nchr1 100 200 30 +\n"))
    assert err.line == 2 and "has 1 tab-separated column(s)" in err.message


def test_fragment_gzip_damage(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    text = "\n".join(data_writers.fragment_lines(5, n=4000)) + "\n"
    for how in ("bgzf", "gzip"):
        p = _write(tmp_path / f"t.{how}.frag.gz", text, how)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
        assert "truncated or corrupt gzip" in _error(read_fragments, p).message
    # A BGZF file cut exactly at a block boundary decompresses cleanly but lacks its EOF marker.
    p = _write(tmp_path / "eof.frag.gz", text, "bgzf")
    p.write_bytes(p.read_bytes()[:-28])
    assert "end-of-file marker" in _error(read_fragments, p).message


def test_bam_fragments_use_finaletoolkit_filters(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    bam = tmp_path / "x.bam"
    data_writers.write_bam(bam)
    f = read_fragments(bam)
    assert f.chrom_names == ["chr1", "chr2"]
    got = list(zip(f.chrom.tolist(), f.start.tolist(), f.end.tolist(), f.mapq.tolist(), f.strand.tolist(), strict=True))
    # pairA [100, 266) +; pairB read 1 reverse at 1130 (end 1180), TLEN -180 -> [1000, 1180) -; pairD MAPQ 5;
    # pairE [5000, 5150) +. Dropped: duplicate pairC, improper pairF, secondary pairG, TLEN-0 pairH, read 2s.
    assert got == [(0, 100, 266, 60, 1), (0, 1000, 1180, 60, -1), (0, 2000, 2200, 5, 1), (0, 5000, 5150, 42, 1)]
    assert read_fragments(bam, min_mapq=30).start.tolist() == [100, 1000, 5000]
    assert read_fragments(bam, min_length=160, max_length=190).start.tolist() == [100, 1000]
    bad = tmp_path / "bad.bam"
    bad.write_bytes(b"not a bam")
    assert "cannot be read as a BAM file" in _error(read_fragments, bad).message


# --------------------------------------------------------------------------------------------------- Bismark


COV_TEXT = "chr1\t10469\t10469\t66.6666666666667\t2\t1\nchr1\t10471\t10471\t0\t0\t4\nchr2\t5\t5\t100\t7\t0\n"


@pytest.mark.parametrize("how", ["plain", "gzip"])
def test_bismark_exact_values(tmp_path: Path, how: str) -> None:
    df = read_bismark_cov(_write(tmp_path / (f"m.{how}.cov" + (".gz" if how == "gzip" else "")), COV_TEXT, how))
    assert list(df.columns) == ["chrom", "start", "end", "percent", "count_methylated", "count_unmethylated"]
    assert isinstance(df["chrom"].dtype, pd.CategoricalDtype) and df["chrom"].tolist() == ["chr1", "chr1", "chr2"]
    assert df["start"].dtype == np.int64 and df["start"].tolist() == [10469, 10471, 5]
    assert df["end"].tolist() == [10469, 10471, 5]
    assert df["percent"].tolist() == [66.6666666666667, 0.0, 100.0]
    assert df["count_methylated"].dtype == np.int64 and df["count_methylated"].tolist() == [2, 0, 7]
    assert df["count_unmethylated"].tolist() == [1, 4, 0]


def test_bismark_errors(tmp_path: Path) -> None:
    cases = {
        "chr1\t10471\t10471\t0\t-1\t4": ("count_methylated", "count_methylated must be >= 0, got -1"),
        "chr1\t10471\t10471\t0\t1.5\t4": ("count_methylated", "count_methylated must be a whole number"),
        "chr1\t10471\t10471\t140\t0\t4": ("percent", "percent must be in [0, 100], got 140.0"),
        "chr1\t10471\t10471\tNaN%\t0\t4": ("percent", "percent must be a number"),
        "chr1\t10471\t10400\t0\t0\t4": ("end", "end (10400) must be >= start (10471)"),
        "chr1\t10471\t10471\t0\t0": (None, "has 5 tab-separated column(s), expected 6"),
    }
    for k, (bad, (column, text)) in enumerate(cases.items()):
        lines = COV_TEXT.splitlines()
        lines[1] = bad
        err = _error(read_bismark_cov, _write(tmp_path / f"b{k}.cov", "\n".join(lines) + "\n"))
        assert (err.line, err.column) == (2, column), (bad, str(err))
        assert text in err.message, (bad, err.message)
    err = _error(read_bismark_cov, _write(tmp_path / "five.cov", "chr1\t1\t1\t0\t0\n"))
    assert err.line == 1 and "a Bismark coverage file has 6" in err.message


# --------------------------------------------------------------------------------------------------- tables


VARIANTS_CSV = """\
patient_id,sample_id,day,gene,variant,vaf,depth,alt_count
P1,S1,30,EGFR,L858R,0.012,1000,12
P1,S1,30,TP53,R273H,0,800,0
P2,S2,-3,EGFR,L858R,0.5,20,10
"""


def test_variant_table_csv_and_parquet(tmp_path: Path) -> None:
    csv_df = read_variant_table(_write(tmp_path / "v.csv", VARIANTS_CSV))
    assert csv_df["vaf"].tolist() == [0.012, 0.0, 0.5]
    assert csv_df["depth"].dtype == np.int64 and csv_df["depth"].tolist() == [1000, 800, 20]
    assert csv_df["day"].tolist() == [30.0, 30.0, -3.0]
    assert csv_df["alt_count"].tolist() == [12, 0, 10]
    assert csv_df["sample_id"].tolist() == ["S1", "S1", "S2"]
    pd.read_csv(tmp_path / "v.csv").to_parquet(tmp_path / "v.parquet")
    pq_df = read_variant_table(tmp_path / "v.parquet")
    pd.testing.assert_frame_equal(csv_df.reset_index(drop=True), pq_df.reset_index(drop=True), check_dtype=False)


def test_variant_table_errors(tmp_path: Path) -> None:
    bad = VARIANTS_CSV.replace("0.012,1000,12", "1.2,1000,12").replace("0.5,20,10", "0.5,-20,10")
    err = _error(read_variant_table, _write(tmp_path / "v.csv", bad))
    assert _where(err) == [(2, "vaf"), (4, "depth")]
    assert "vaf must be <= 1, got '1.2'" in err.issues[0].message
    assert "depth must be >= 0" in err.issues[1].message
    err = _error(read_variant_table, _write(tmp_path / "w.csv", VARIANTS_CSV.replace(",vaf,", ",af,")))
    assert (err.line, err.column) == (1, "vaf") and "required column 'vaf' is missing" in err.message
    dup = VARIANTS_CSV + "P1,S1,30,EGFR,L858R,0.02,900,18\n"
    err = _error(read_variant_table, _write(tmp_path / "d.csv", dup))
    assert (err.line, err.column) == (5, "variant") and "first seen on line 2" in err.message
    over = VARIANTS_CSV.replace("0.5,20,10", "0.5,20,30")
    assert "alt_count (30) exceeds depth (20)" in _error(read_variant_table, _write(tmp_path / "o.csv", over)).message
    df = pd.read_csv(tmp_path / "v.csv")
    df.to_parquet(tmp_path / "v.parquet")
    err = _error(read_variant_table, tmp_path / "v.parquet")
    assert err.line is None and err.column == "vaf" and err.message.startswith("row 1: vaf must be <= 1")


MATRIX_CSV = """\
feature_id,QC1,S1,S2,BL1
M1,100.5,200,,1.5
M2,50,,75.25,
"""
SHEET_CSV = """\
sample_id,sample_type,batch,injection_order
QC1,qc,B1,1
S1,sample,B1,2
S2,sample,B1,3
BL1,blank,B1,4
"""


def test_metabolomics_exact_values(tmp_path: Path) -> None:
    _write(tmp_path / "features.csv", "feature_id,mz,name\nM1,180.06,glucose\nM2,89.02,lactate\n")
    data = read_metabolomics(
        _write(tmp_path / "m.csv", MATRIX_CSV), _write(tmp_path / "s.csv", SHEET_CSV), tmp_path / "features.csv"
    )
    x = data.intensities
    assert x.index.tolist() == ["M1", "M2"] and x.columns.tolist() == ["QC1", "S1", "S2", "BL1"]
    assert x.loc["M1"].tolist()[:2] == [100.5, 200.0] and np.isnan(x.loc["M1", "S2"])
    assert x.loc["M2", "S2"] == 75.25 and np.isnan(x.loc["M2", "BL1"])
    assert data.sheet.loc["BL1", "sample_type"] == "blank" and data.sheet["injection_order"].dtype == np.int64
    assert data.injections("sample") == ["S1", "S2"] and data.injections("qc") == ["QC1"]
    assert data.features is not None and data.features.loc["M2", "name"] == "lactate"


def test_metabolomics_errors(tmp_path: Path) -> None:
    matrix = MATRIX_CSV.replace("M2,50,", "M1,-50,").replace(",S2,", ",S3,")
    sheet = SHEET_CSV.replace("BL1,blank,B1,4", "BL1,solvent,B1,3")
    err = _error(read_metabolomics, _write(tmp_path / "m.csv", matrix), _write(tmp_path / "s.csv", sheet))
    got = {(Path(i.path).name, i.line, i.column) for i in err.issues}
    assert got == {
        ("m.csv", 3, "feature_id"),  # duplicate feature id
        ("m.csv", 3, "QC1"),  # intensity <= 0
        ("m.csv", 1, "S3"),  # matrix column without a sheet row
        ("s.csv", 5, "sample_type"),  # not sample / qc / blank
        ("s.csv", 5, "injection_order"),  # duplicate injection order in batch B1
        ("s.csv", 4, "sample_id"),  # sheet row without a matrix column
    }
    err = _error(read_metabolomics, _write(tmp_path / "n.csv", "id,S1\nM1,1\n"), tmp_path / "s.csv")
    assert (err.line, err.column) == (1, "id") and "first column must be 'feature_id'" in err.message
    err = _error(
        read_metabolomics,
        _write(tmp_path / "t.csv", "feature_id,QC1,S1,S2,BL1\nM1,1,x,2,3\n"),
        _write(tmp_path / "s2.csv", SHEET_CSV),
    )
    assert (err.line, err.column) == (2, "S1") and "S1 must be a number, got 'x'" in err.message


def test_read_table(tmp_path: Path) -> None:
    p = _write(tmp_path / "t.csv", "sample_id,a,b\nS1,1.5,\nS2,-2,3e2\n")
    df = read_table(p)
    assert df.index.name == "sample_id" and df.index.tolist() == ["S1", "S2"]
    assert df["a"].tolist() == [1.5, -2.0] and np.isnan(df.loc["S1", "b"]) and df.loc["S2", "b"] == 300.0
    df.reset_index().to_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(read_table(tmp_path / "t.parquet"), df)
    df.to_parquet(tmp_path / "indexed.parquet")  # sample_id stored as the pandas index
    pd.testing.assert_frame_equal(read_table(tmp_path / "indexed.parquet"), df)
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(p.read_bytes()))
    pd.testing.assert_frame_equal(read_table(tmp_path / "t.csv.gz"), df)
    err = _error(read_table, _write(tmp_path / "bad.csv", "sample_id,a,b\nS1,1.5,x\nS1,2,3\n"))
    assert _where(err) == [(2, "b"), (3, "sample_id")]
    assert "b must be a number, got 'x'" in err.issues[0].message and "duplicate sample_id" in err.issues[1].message
    err = _error(read_table, _write(tmp_path / "dupcol.csv", "sample_id,a,a\nS1,1,2\n"))
    assert (err.line, err.column) == (1, "a") and "more than once" in err.message
    err = _error(read_table, _write(tmp_path / "ragged.csv", "sample_id,a\nS1,1\nS2,1,2,3\n"))
    assert err.line == 3


def test_read_cn_segments(tmp_path: Path) -> None:
    text = "sample_id,chrom,start,end,segment_mean,num_probes\nS1,chr1,1,9000,-0.25,120\nS1,chr2,1,500,0.8,\n"
    df = read_cn_segments(_write(tmp_path / "seg.csv", text))
    assert df["start"].tolist() == [1, 1] and df["end"].dtype == np.int64 and df["end"].tolist() == [9000, 500]
    assert df["segment_mean"].tolist() == [-0.25, 0.8] and df["num_probes"].tolist()[0] == 120
    assert pd.isna(df["num_probes"].iloc[1]) and df["chrom"].tolist() == ["chr1", "chr2"]
    err = _error(read_cn_segments, _write(tmp_path / "bad.csv", text.replace("1,500,0.8", "900,500,high")))
    assert _where(err) == [(3, "end"), (3, "segment_mean")]


def test_chrom_sizes_and_bed(tmp_path: Path) -> None:
    assert read_chrom_sizes(_write(tmp_path / "g.sizes", "chr1\t1000\nchr2\t500\n")) == {"chr1": 1000, "chr2": 500}
    err = _error(read_chrom_sizes, _write(tmp_path / "b.sizes", "chr1\t1000\nchr2\tbig\n"))
    assert (err.line, err.column) == (2, "size")
    bed = read_bed(_write(tmp_path / "r.bed", "track name=x\nchr1\t10\t20\tpromoterA\nchr2\t0\t5\tB\n"))
    assert bed["start"].tolist() == [10, 0] and bed["name"].tolist() == ["promoterA", "B"]
    err = _error(read_bed, _write(tmp_path / "bad.bed", "chr1\t10\t20\nchr1\t30\t25\n"))
    assert (err.line, err.column) == (2, "end")


def test_format_extension_problem(tmp_path: Path) -> None:
    assert format_extension_problem(tmp_path / "x.frag.gz", "fragments") is None
    assert format_extension_problem(tmp_path / "x.bam", "fragments") is None
    assert format_extension_problem(tmp_path / "X.NII.GZ", "image") is None
    assert format_extension_problem(tmp_path, "image") is None
    assert "is a folder" in str(format_extension_problem(tmp_path, "table"))
    assert ".cov.gz" in str(format_extension_problem(tmp_path / "x.txt", "bismark_cov"))


# ------------------------------------------------------------------------------------------- header-first images


@pytest.mark.parametrize("fmt", ["nifti", "nii", "nrrd", "mha", "dicom"])
def test_image_header_is_the_grid_of_the_voxels(ct_files: dict[str, Path], fmt: str) -> None:
    header = read_image_header(ct_files[fmt])
    img = read_image(ct_files[fmt])
    assert header.size == img.GetSize() == (16, 16, 8)
    assert (header.n_voxels, header.dimension, header.components) == (2048, 3, 1)
    np.testing.assert_allclose(header.spacing, img.GetSpacing(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(header.origin, img.GetOrigin(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(header.direction, img.GetDirection(), rtol=0, atol=1e-9)
    assert header.pixel_type == img.GetPixelIDTypeAsString() == "16-bit signed integer"
    assert header.data_bytes == (352 + 2048 * 2 if fmt in ("nifti", "nii") else None)
    assert len(header.files) == (8 if fmt == "dicom" else 1)
    assert check_image_header(header) == []
    assert check_mask_header(header, read_image_header(ct_files["mask"])) == []


def _no_voxel_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every voxel read (file or DICOM series) instead of doing it; the list of what was asked for."""
    asked: list[str] = []

    def read_image_spy(path: object, *args: object, **kwargs: object) -> None:
        asked.append(str(path))
        raise AssertionError(f"voxels of {path} were read")

    def series_spy(self: sitk.ImageSeriesReader) -> None:
        asked.append(str(Path(self.GetFileNames()[0]).parent))
        raise AssertionError("a DICOM series was read")

    monkeypatch.setattr(sitk, "ReadImage", read_image_spy)
    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", series_spy)
    return asked


@pytest.fixture
def plain_mha(tmp_path: Path, data_writers: SimpleNamespace) -> Path:
    """The test volume as MetaImage (identity direction), whose text header is easy to break."""
    image, _ = data_writers.ct_volume(5, origin=(0.0, 0.0, 0.0))
    path = tmp_path / "plain.mha"
    sitk.WriteImage(image, str(path))
    return path


SPACING_ADVICE = "fix the header (pixdim / ElementSpacing / PixelSpacing) or re-export the image"
BAD_MHA_HEADERS = {
    "zero spacing": (
        b"ElementSpacing = 0.75 0.80000000000000004 2.5",
        b"ElementSpacing = 0.75 0 2.5",
        f"voxel spacing (0.75, 0, 2.5) mm must be finite and > 0 on every axis; {SPACING_ADVICE}",
    ),
    "negative spacing": (
        b"ElementSpacing = 0.75 0.80000000000000004 2.5",
        b"ElementSpacing = 0.75 -0.8 2.5",
        f"voxel spacing (0.75, -0.8, 2.5) mm must be finite and > 0 on every axis; {SPACING_ADVICE}",
    ),
    "skewed axes": (
        b"TransformMatrix = 1 0 0 0 1 0 0 0 1",
        b"TransformMatrix = 1 0 0 0.5 1 0 0 0 1",  # MetaImage is column-major: ITK's direction row 0 is (1, 0.5, 0)
        "direction cosines (1, 0.5, 0, 0, 1, 0, 0, 0, 1) are not orthonormal (axes skewed or scaled); re-export the "
        "image with a valid orientation",
    ),
    "scaled axis": (
        b"TransformMatrix = 1 0 0 0 1 0 0 0 1",
        b"TransformMatrix = 1 0 0 0 2 0 0 0 1",
        "direction cosines (1, 0, 0, 0, 2, 0, 0, 0, 1) are not orthonormal (axes skewed or scaled); re-export the "
        "image with a valid orientation",
    ),
    "empty axis": (
        b"DimSize = 16 16 8",
        b"DimSize = 16 0 8",
        "the header declares an empty grid (16 x 0 x 8 voxels); re-export the image",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_MHA_HEADERS))
def test_bad_image_headers_are_refused_before_any_voxel_is_read(
    plain_mha: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new, message = BAD_MHA_HEADERS[case]
    data = plain_mha.read_bytes()
    assert old in data
    plain_mha.write_bytes(data.replace(old, new))
    assert check_image_header(read_image_header(plain_mha)) == [message]
    asked = _no_voxel_reads(monkeypatch)
    err = _error(read_image, plain_mha)
    assert err.issues == [FileIssue(str(plain_mha), message)]
    assert asked == []


@pytest.mark.parametrize("pixdim", [float("nan"), 0.0, -0.5, float("inf")])
@pytest.mark.parametrize("name", ["ct.nii", "ct.nii.gz"])
def test_nifti_spacing_is_judged_on_the_raw_header(
    ct_files: dict[str, Path], tmp_path: Path, pixdim: float, name: str
) -> None:
    """ITK silently reads a zero, NaN or infinite pixdim as 1 (and a negative one as its absolute value)."""
    raw = bytearray(gzip.decompress(ct_files["nifti"].read_bytes()))
    struct.pack_into("<f", raw, 76 + 4 * 2, pixdim)  # pixdim[2], the y voxel size
    path = tmp_path / name
    path.write_bytes(gzip.compress(bytes(raw)) if name.endswith(".gz") else bytes(raw))
    header = read_image_header(path)
    assert header.spacing[0] == pytest.approx(0.75) and header.spacing[2] == pytest.approx(2.5)
    assert str(header.spacing[1]) == str(pixdim)
    (why,) = check_image_header(header)
    assert why.startswith(f"voxel spacing (0.75, {pixdim:.4g}, 2.5) mm must be finite and > 0")
    assert "must be finite and > 0" in _error(read_image, path).message


def test_voxel_limit_from_argument_and_environment(ct_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_IMAGE_VOXELS_ENV, raising=False)
    assert image_voxel_limit() == MAX_IMAGE_VOXELS == 512 * 512 * 2048
    header = read_image_header(ct_files["mha"])
    assert check_image_header(header, 2048) == []
    too_big = (
        "the header declares 16 x 16 x 8 = 2,048 voxels, more than the limit of 2,047; no voxel was read. A corrupt "
        "header needs a re-export; a real scan that large needs cropping or resampling, or a higher limit "
        "(environment variable OMICS_RISK_MAX_IMAGE_VOXELS)"
    )
    assert check_image_header(header, 2047) == [too_big]
    monkeypatch.setenv(MAX_IMAGE_VOXELS_ENV, "2047")
    assert image_voxel_limit() == 2047 and image_voxel_limit(5000) == 5000
    assert _error(read_image, ct_files["dicom"]).message == too_big
    assert read_image(ct_files["dicom"], max_voxels=2048).GetSize() == (16, 16, 8)  # the argument wins
    monkeypatch.setenv(MAX_IMAGE_VOXELS_ENV, "lots")
    with pytest.raises(ValueError, match="OMICS_RISK_MAX_IMAGE_VOXELS='lots' must be a whole number of voxels > 0"):
        image_voxel_limit()
    assert _error(read_image, ct_files["mha"]).message.startswith("cannot check the image size: environment variable")
    with pytest.raises(ValueError, match="max_voxels must be > 0"):
        image_voxel_limit(0)


def test_validate_applies_the_voxel_limit(valid_cohort: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_IMAGE_VOXELS_ENV, raising=False)
    report = validate_cohort(valid_cohort, workers=1, max_image_voxels=2047)
    assert sorted(p.file for p in report.errors) == [
        "ct/P01_preop.nii.gz",
        "ct/P01_preop_mask.nii.gz",
        "ct/P02_preop.nrrd",
        "ct/P02_preop_mask.nrrd",
        "ct/P03_preop_dicom",
        "ct/P03_preop_mask.nii.gz",
        "ct/P04_preop.mha",
        "ct/P04_preop_mask.mha",
    ]
    assert all("= 2,048 voxels, more than the limit of 2,047" in p.message for p in report.errors)
    monkeypatch.setenv(MAX_IMAGE_VOXELS_ENV, "2048")
    assert validate_cohort(valid_cohort, workers=1).ok
    monkeypatch.setenv(MAX_IMAGE_VOXELS_ENV, "-1")
    (err,) = validate_cohort(valid_cohort, workers=1).errors  # reported once, not once per image
    assert (err.file, err.line, err.column) == ("OMICS_RISK_MAX_IMAGE_VOXELS", None, None)
    assert err.message.endswith("fix or unset it; images are checked against the default meanwhile")


def test_mask_on_another_grid_is_found_from_the_headers(
    make_valid_cohort: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from broken_cohorts import mask_geometry_mismatch

    root = make_valid_cohort(tmp_path / "cohort")
    (expected,) = mask_geometry_mismatch(root)  # P01's mask: spacing (1, 1, 2.5) against (0.75, 0.8, 2.5)
    asked: list[str] = []
    real_read = sitk.ReadImage

    def spy(path: object, *args: object, **kwargs: object) -> object:
        asked.append(Path(str(path)).name)
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(sitk, "ReadImage", spy)
    (err,) = validate_cohort(root, workers=1).errors
    assert (err.file, expected.contains) == (expected.file, "spacing differs")
    assert err.message.startswith(
        "is not a usable mask for its image ct/P01_preop.nii.gz: spacing differs: mask (1, 1, 2.5) mm, image "
        "(0.75, 0.8, 2.5) mm; resample the mask onto the image grid"
    )
    assert sorted(asked) == [
        "P02_preop.nrrd",
        "P02_preop_mask.nrrd",
        "P03_preop_mask.nii.gz",
        "P04_preop.mha",
        "P04_preop_mask.mha",
    ]  # every other scan's voxels, none of P01's


def test_huge_image_header_costs_validate_no_memory(make_valid_cohort: Callable[..., Path], tmp_path: Path) -> None:
    """A complete .nii.gz declaring 1024^3 int16 voxels (2 GiB): validate used to decompress and read all of it
    (4.5 GB peak); the header alone now refuses it. Peak memory is measured in a fresh process (ru_maxrss of the
    child itself, after its imports), never time."""
    from broken_cohorts import image_header_declares_huge_grid

    root = make_valid_cohort(tmp_path / "cohort")
    (expected,) = image_header_declares_huge_grid(root)
    assert (root / "ct" / "P01_preop.nii.gz").stat().st_size < 4_000_000
    script = (
        "import json, resource, sys\n"
        "import nibabel, pysam, SimpleITK\n"  # loaded lazily by validate: imported first, so only its own peak counts
        "from omics_risk.data.validate import validate_cohort\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "report = validate_cohort(sys.argv[1], workers=1)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "errors = [[p.file, p.line, p.column, p.message] for p in report.errors]\n"
        "print(json.dumps({'before_kb': before, 'after_kb': after, 'errors': errors}))\n"
    )
    # The timeout only stops a regression from holding the machine; nothing about speed is asserted.
    run = subprocess.run(
        [sys.executable, "-c", script, str(root)], capture_output=True,
            text=True, encoding="utf-8", timeout=900, env=dict(os.environ)
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    ((file, line, column, message),) = out["errors"]
    assert (file, line, column) == ("ct/P01_preop.nii.gz", None, None)
    assert message == (
        "the header declares 1024 x 1024 x 1024 = 1,073,741,824 voxels, more than the limit of 536,870,912; no voxel "
        "was read. A corrupt header needs a re-export; a real scan that large needs cropping or resampling, or a "
        "higher limit (environment variable OMICS_RISK_MAX_IMAGE_VOXELS) (referenced by samples.csv line 2)"
    )
    assert expected.contains in message
    assert (out["after_kb"] - out["before_kb"]) / 1024 < 100, out  # MB; reading the image would add 2,000+


def test_huge_image_header_is_not_decompressed(
    make_valid_cohort: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not even the bounded-memory byte count of the NIfTI completeness check runs on a refused header."""
    from broken_cohorts import write_huge_nifti

    path = tmp_path / "huge.nii.gz"
    write_huge_nifti(path)
    counted: list[Path] = []
    monkeypatch.setattr(readers.images, "_check_nifti_complete", lambda p, need: counted.append(p))
    asked = _no_voxel_reads(monkeypatch)
    header = read_image_header(path)
    assert header.size == (1024, 1024, 1024) and header.data_bytes == 352 + 2 * 1024**3
    assert "1,073,741,824 voxels" in _error(read_image, path).message
    assert (counted, asked) == ([], [])


# --------------------------------------------------------------------------------------------------- Bismark counts


COLUMN_ORDER = "check the column order (chrom, start, end, percent_methylated, count_methylated, count_unmethylated)"


def test_bismark_percent_must_agree_with_the_counts(tmp_path: Path) -> None:
    # 2 of 3 reads methylated is 66.67 %: rounded (67), truncated (66, as MethylDackel) and 0.97 off are accepted.
    for k, pct in enumerate(["66.6666666666667", "67", "66", "65.7", "67.6"]):
        df = read_bismark_cov(_write(tmp_path / f"ok{k}.cov", COV_TEXT.replace("66.6666666666667", pct)))
        assert df["percent"].tolist()[0] == float(pct)
    swapped = COV_TEXT.replace("\t2\t1\n", "\t1\t2\n").replace("\t0\t0\t4\n", "\t0\t4\t0\n")
    err = _error(read_bismark_cov, _write(tmp_path / "swapped.cov", swapped))
    assert _where(err) == [(1, "percent"), (2, "percent")]
    assert (
        err.issues[0].message
        == f"percent_methylated 66.6667 contradicts the counts: 100 x 1 / (1 + 2) = 33.33; {COLUMN_ORDER}"
    )
    assert (
        err.issues[1].message == f"percent_methylated 0 contradicts the counts: 100 x 4 / (4 + 0) = 100; {COLUMN_ORDER}"
    )
    err = _error(read_bismark_cov, _write(tmp_path / "off.cov", COV_TEXT.replace("66.6666666666667", "65.6")))
    assert _where(err) == [(1, "percent")] and "percent_methylated 65.6 contradicts" in err.message
    fraction = COV_TEXT.replace("66.6666666666667", "0.666666666666667").replace("\t100\t7", "\t1\t7")
    assert _where(_error(read_bismark_cov, _write(tmp_path / "fraction.cov", fraction))) == [
        (1, "percent"),
        (3, "percent"),
    ]


def test_bismark_lines_without_reads_are_noted_not_fatal(tmp_path: Path) -> None:
    p = _write(tmp_path / "zero.cov", COV_TEXT + "chr2\t9\t9\t0\t0\t0\n")
    assert len(read_bismark_cov(p)) == 4  # extraction reads it: the line adds nothing to any count
    notes: list[FileIssue] = []
    df = read_bismark_cov(p, notes=notes)
    assert df["count_methylated"].tolist() == [2, 0, 7, 0] and len(notes) == 1
    assert (notes[0].path, notes[0].line, notes[0].column) == (str(p), 4, "count_methylated")
    assert notes[0].message.startswith("no read covers this CpG (count_methylated and count_unmethylated are 0)")
    many = _write(tmp_path / "many.cov", "".join(f"chr1\t{k}\t{k}\t0\t0\t0\n" for k in range(1, 26)))
    notes = []
    read_bismark_cov(many, notes=notes)
    assert [n.line for n in notes[:-1]] == list(range(1, 21))
    assert notes[-1] == FileIssue(str(many), "... and 5 more line(s) without reads")


# --------------------------------------------------------------------------------------------------- chromosome names


def test_autosome_names_are_the_fragmentomics_ones() -> None:
    from omics_risk.features.fragmentomics import AUTOSOME_RE as BINNED

    assert BINNED is AUTOSOME_RE  # validate checks names against the binning's own pattern
    assert [bool(AUTOSOME_RE.match(c)) for c in ("1", "chr22", "chr23", "X", "chrM", "chr1_random")] == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]


def test_binned_chromosomes_follow_reference_and_selection() -> None:
    ref = ["chr1", "chr2", "chrX", "chr1_KI270706v1_random"]
    assert binned_chromosomes(["1"], ref) == ["chr1", "chr2"]
    assert binned_chromosomes(["1"], ref, "all") == ref
    assert binned_chromosomes(["1"], ref, ["chrX", "chr9"]) == ["chrX"]
    assert binned_chromosomes(["2", "1", "MT", "NC_1"], None) == ["2", "1"]  # no reference: the file's own names
    with pytest.raises(ValueError, match="chroms must be 'autosomes', 'all' or a list"):
        binned_chromosomes(["1"], None, "sex")


def test_chromosome_naming_problem_names_both_spellings() -> None:
    ref = ["chr1", "chr2", "chr3", "chrX"]
    label = "references.chrom_sizes, g.sizes"
    assert chromosome_naming_problem(["1", "2", "3", "X"], ref, reference_label=label) == (
        "chromosomes are named '1', '2', '3', ... but the binning uses 'chr1', 'chr2', 'chr3' (the names in "
        "references.chrom_sizes, g.sizes), so no fragment would be counted: add the 'chr' prefix to the file's "
        "chromosome names, or use a reference with the file's names"
    )
    dropped = chromosome_naming_problem(["chr1", "chr2"], ["1", "2"], reference_label=label)
    assert dropped is not None and "drop the 'chr' prefix" in dropped
    other = chromosome_naming_problem(["NC_000001.11"], ref, reference_label=label)
    assert other is not None and "rename the file's chromosomes to the reference's names" in other
    assert chromosome_naming_problem(["chrUn_KN707606v1_decoy", "chr1", "1"], ref) is None  # partial overlap is fine
    assert chromosome_naming_problem([], ref) is None
    assert chromosome_naming_problem(["NC_000001.11", "NC_000002.12"], None, settings_label="S") == (
        "none of the chromosomes ('NC_000001.11', 'NC_000002.12') is one the binning selects with chroms='autosomes' "
        "(the autosomes '1'-'22' or 'chr1'-'chr22'); rename them, or set S to the names used"
    )
    assert chromosome_naming_problem(["NC_000001.11"], None, "all") is None
    assert chromosome_naming_problem(["1"], ["NC_000001.11"], reference_label="R", settings_label="S") == (
        "the binning has no chromosome: R names none that chroms='autosomes' (the autosomes '1'-'22' or "
        "'chr1'-'chr22') selects; use a reference with the usual names, or set S"
    )


FASTA_TEXT = ">chr1 Homo sapiens chromosome 1\nACGTACGTAC\nGTACG\n>chr2\nAAAA\n>chrM\tmito\nCC\n"


@pytest.mark.parametrize("how", ["plain", "gzip", "bgzf"])
def test_reference_chromosomes_of_a_fasta(tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _write(tmp_path / ("g.fa" + (".gz" if how != "plain" else "")), FASTA_TEXT, how)
    assert reference_chromosomes(p, "genome_fasta") == ["chr1", "chr2", "chrM"]
    monkeypatch.setattr(readers.genome, "_FASTA_CHUNK", 3)  # headers cut across chunk boundaries at every offset
    readers.genome._reference_names.cache_clear()
    assert reference_chromosomes(p, "genome_fasta") == ["chr1", "chr2", "chrM"]
    monkeypatch.setattr(readers.genome, "_FASTA_LONG_LINE", 8)  # an unwrapped sequence longer than any header
    readers.genome._reference_names.cache_clear()
    long = _write(tmp_path / ("long.fa" + (".gz" if how != "plain" else "")), ">a\n" + "A" * 50 + "\n>b x\nC\n", how)
    assert reference_chromosomes(long, "genome_fasta") == ["a", "b"]


def test_reference_chromosomes_use_the_index_and_sizes(tmp_path: Path) -> None:
    p = _write(tmp_path / "g.fa", FASTA_TEXT)
    (tmp_path / "g.fa.fai").write_text("chr1\t15\t31\t10\t11\nchr2\t4\t55\t4\t5\n")  # samtools faidx's layout
    assert reference_chromosomes(p, "genome_fasta") == ["chr1", "chr2"]
    sizes = _write(tmp_path / "g.sizes", "chr2\t100\nchr1\t200\n")
    assert reference_chromosomes(sizes, "chrom_sizes") == ["chr2", "chr1"]
    sizes.write_text("2\t100\n1\t200\nMT\t16569\n")  # a new version of the file is read again, not served from cache
    assert reference_chromosomes(sizes, "chrom_sizes") == ["2", "1", "MT"]
    with pytest.raises(ValueError, match="kind must be"):
        reference_chromosomes(sizes, "bed")


def _rename_fragment_chroms(path: Path, names: dict[str, str]) -> None:
    from broken_cohorts import edit_text_lines

    def rename(lines: list[str]) -> None:
        lines[:] = [names.get(ln.split("\t", 1)[0], ln.split("\t", 1)[0]) + ln[ln.find("\t") :] for ln in lines]

    edit_text_lines(path, rename)


def test_validate_checks_fragment_chromosomes_against_the_cohort_settings(
    make_valid_cohort: Callable[..., Path], tmp_path: Path
) -> None:
    root = make_valid_cohort(tmp_path / "cohort")
    frag = root / "cfdna" / "P02_postop1.frag.tsv.gz"
    _rename_fragment_chroms(frag, {"chr1": "1", "chr2": "2"})
    yaml = root / "cohort.yaml"
    text = yaml.read_text()
    # Without chrom_sizes, the FASTA's names are the binned ones (as in FragmentomicsExtractor).
    yaml.write_text(text.replace("  chrom_sizes: reference/genome.chrom.sizes\n", ""))
    (err,) = validate_cohort(root, workers=1).errors
    assert (err.file, err.line, err.column) == ("cfdna/P02_postop1.frag.tsv.gz", None, None)
    assert err.message.startswith(
        "chromosomes are named '1', '2' but the binning uses 'chr1', 'chr2' (the names in references.genome_fasta, "
        "reference/genome.fa), so no fragment would be counted: add the 'chr' prefix"
    )
    assert err.message.endswith("(referenced by samples.csv line 8)")
    # Without a reference the file's own names are binned: '1', '2' are autosomes, RefSeq accessions are not.
    no_refs = text[: text.index("references:")]
    yaml.write_text(no_refs)
    assert validate_cohort(root, workers=1).ok
    _rename_fragment_chroms(frag, {"1": "NC_000001.11", "2": "NC_000002.12"})
    (err,) = validate_cohort(root, workers=1).errors
    assert err.message.startswith(
        "none of the chromosomes ('NC_000001.11', 'NC_000002.12') is one the binning selects with chroms='autosomes'"
    )
    assert "set modalities.cfdna.extract.chroms in cohort.yaml to the names used" in err.message
    # The cohort's own extractor settings are followed.
    yaml.write_text(
        no_refs.replace("  rppa: {format: table}\n", "  rppa: {format: table}\n  cfdna: {extract: {chroms: all}}\n")
    )
    assert validate_cohort(root, workers=1).ok
    yaml.write_text(
        no_refs.replace(
            "  rppa: {format: table}\n", "  rppa: {format: table}\n  cfdna: {extract: {chroms: [chr1, chr2]}}\n"
        )
    )
    (err,) = validate_cohort(root, workers=1).errors
    assert "selects with chroms=['chr1', 'chr2']; rename them" in err.message

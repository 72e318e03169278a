"""Shared fixtures: a tiny cohort written by hand in the data contract (docs/data_format.md), with every format.

``make_valid_cohort(root)`` builds it from fixed, seeded data so that tests can state exact expectations
(line numbers, sample ids, coverage). Six patients: P06 has no sample at all, P05 has no CT, P03 no
methylation, and so on. CT comes as NIfTI (P01), NRRD (P02), a DICOM series folder (P03) and MetaImage (P04);
cfDNA as a BGZF fragment file, a plain-gzip one and a paired-end BAM.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

PATIENTS = ["P01", "P02", "P03", "P04", "P05", "P06"]
CT_SHAPE = (16, 16, 8)  # x, y, z voxels
CT_SPACING = (0.75, 0.8, 2.5)

COHORT_YAML = """\
contract_version: 1
name: tiny-test-cohort
time_unit: months
endpoints:
  rfs: {type: survival, time: rfs_time, event: rfs_event}
  response: {type: binary, column: response}
clinical:
  age: numeric
  sex: categorical
  stage: {type: ordinal, levels: [IA, IB, IIA, IIB, IIIA]}
  egfr_mutant: binary
modalities:
  metabolomics:
    format: metabolomics_matrix
    sample_sheet: metabolomics/sample_sheet.csv
    features: metabolomics/features.csv
  rppa: {format: table}
references:
  genome_fasta: reference/genome.fa
  chrom_sizes: reference/genome.chrom.sizes
"""

CLINICAL_CSV = """\
patient_id,age,sex,stage,egfr_mutant,rfs_time,rfs_event,response
P01,64,M,IB,0,24.5,1,1
P02,71,F,IIA,1,36,0,0
P03,58,M,IIIA,0,12.25,1,
P04,66,F,IA,0,40,0,1
P05,69,M,IIB,1,8,1,0
P06,75,F,IIA,0,30,0,1
"""

#: (patient, modality, timepoint, day, path, mask_path); sample_id is "{patient}-{modality}-{timepoint}".
SAMPLES: list[tuple[str, str, str, int, str, str]] = [
    ("P01", "ct", "preop", -10, "ct/P01_preop.nii.gz", "ct/P01_preop_mask.nii.gz"),
    ("P02", "ct", "preop", -12, "ct/P02_preop.nrrd", "ct/P02_preop_mask.nrrd"),
    ("P03", "ct", "preop", -9, "ct/P03_preop_dicom", "ct/P03_preop_mask.nii.gz"),
    ("P04", "ct", "preop", -14, "ct/P04_preop.mha", "ct/P04_preop_mask.mha"),
    ("P01", "cfdna", "preop", -7, "cfdna/P01_preop.frag.gz", ""),
    ("P01", "cfdna", "postop1", 30, "cfdna/P01_postop1.frag.gz", ""),
    ("P02", "cfdna", "postop1", 31, "cfdna/P02_postop1.frag.tsv.gz", ""),
    ("P03", "cfdna", "postop1", 28, "cfdna/P03_postop1.bam", ""),
    ("P01", "methylation", "postop1", 30, "methylation/P01_postop1.cov.gz", ""),
    ("P02", "methylation", "postop1", 31, "methylation/P02_postop1.cov.gz", ""),
    ("P04", "methylation", "postop1", 29, "methylation/P04_postop1.cov", ""),
    ("P01", "ctdna", "postop1", 30, "ctdna/variants.csv", ""),
    ("P02", "ctdna", "postop1", 31, "ctdna/variants.csv", ""),
    ("P03", "ctdna", "postop1", 28, "ctdna/variants.csv", ""),
    ("P04", "ctdna", "postop1", 29, "ctdna/variants.csv", ""),
    ("P05", "ctdna", "postop1", 33, "ctdna/variants.csv", ""),
    ("P01", "metabolomics", "preop", -7, "metabolomics/matrix.csv", ""),
    ("P02", "metabolomics", "preop", -8, "metabolomics/matrix.csv", ""),
    ("P03", "metabolomics", "preop", -6, "metabolomics/matrix.csv", ""),
    ("P04", "metabolomics", "preop", -7, "metabolomics/matrix.csv", ""),
    ("P01", "rppa", "preop", -10, "rppa/rppa.csv", ""),
    ("P02", "rppa", "preop", -12, "rppa/rppa.csv", ""),
    ("P03", "rppa", "preop", -9, "rppa/rppa.csv", ""),
    ("P05", "rppa", "preop", -11, "rppa/rppa.csv", ""),
    ("P01", "cnv", "preop", -10, "cnv/segments.csv", ""),
    ("P02", "cnv", "preop", -12, "cnv/segments.csv", ""),
    ("P04", "cnv", "preop", -14, "cnv/segments.csv", ""),
]

VARIANTS = [("EGFR", "L858R"), ("TP53", "R273H"), ("KRAS", "G12C")]
CHROM_SIZES = {"chr1": 20000, "chr2": 12000}


def sample_id(patient: str, modality: str, timepoint: str) -> str:
    return f"{patient}-{modality}-{timepoint}"


# --------------------------------------------------------------------------------------------------- CT


def ct_volume(seed: int, origin: tuple[float, float, float]) -> tuple[object, object]:
    """A small CT-like int16 volume with a bright blob, and its uint8 mask, on the same grid."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    nx, ny, nz = CT_SHAPE
    arr = rng.normal(-700, 60, size=(nz, ny, nx)).round().astype(np.int16)
    z, y, x = np.ogrid[:nz, :ny, :nx]
    blob = ((x - 8) / 4.0) ** 2 + ((y - 7) / 3.5) ** 2 + ((z - 4) / 2.0) ** 2 <= 1.0
    arr[blob] = rng.normal(40, 15, size=int(blob.sum())).round().astype(np.int16)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing(CT_SPACING)
    image.SetOrigin(origin)
    mask = sitk.GetImageFromArray(blob.astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


def write_dicom_series(image: object, folder: Path, series_uid: str = "1.2.826.0.1.3680043.10.1001.1") -> None:
    """Write a 3-D image as one CT DICOM series (one file per slice) with the tags a series reader needs."""
    import SimpleITK as sitk

    img = image  # type: ignore[assignment]
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = img.GetDirection()
    orientation = "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0008|0060": "CT",
            "0010|0010": "TEST^PATIENT",
            "0010|0020": folder.name,
            "0020|000d": series_uid + ".0",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in pos),
            "0020|0037": orientation,
            "0018|0050": f"{img.GetSpacing()[2]:.6f}",
            "0028|0030": f"{img.GetSpacing()[1]:.6f}\\{img.GetSpacing()[0]:.6f}",
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(sl)


# --------------------------------------------------------------------------------------------------- cfDNA


def fragment_lines(seed: int, n: int = 200) -> list[str]:
    """Sorted BED3+2 fragment lines (chrom, start, end, mapq, strand) on chr1/chr2."""
    rng = np.random.default_rng(seed)
    out = []
    for chrom in ("chr1", "chr2"):
        k = n // 2
        starts = np.sort(rng.integers(0, CHROM_SIZES[chrom] - 400, size=k))
        lengths = rng.integers(100, 300, size=k)
        mapq = rng.integers(0, 61, size=k)
        strand = rng.choice(["+", "-"], size=k)
        rows = zip(starts, lengths, mapq, strand, strict=True)
        out += [f"{chrom}\t{s}\t{s + ln}\t{q}\t{st}" for s, ln, q, st in rows]
    return out


def write_fragments(path: Path, lines: list[str], *, bgzf: bool) -> None:
    """A ``.frag.gz`` with a comment header, BGZF-compressed (as bgzip does) or plain gzip."""
    import pysam

    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# fragments: chrom start end mapq strand\n" + "\n".join(lines) + "\n"
    if bgzf:
        plain = path.with_name(path.name + ".tmp")
        plain.write_text(text)
        pysam.tabix_compress(str(plain), str(path), force=True)
        plain.unlink()
    else:
        with gzip.open(path, "wt") as fh:
            fh.write(text)


#: Reads of the test BAM: (name, flag, pos, mapq, tlen, cigar length); pos 0-based, all on chr1.
#: Expected fragments (FinaleToolkit filters): pairA [100, 266) +, pairB [1000, 1180) - (read 1 reverse),
#: pairE [5000, 5150) + -- pairC is a duplicate, pairD read 1 has MAPQ 5 (dropped at min_mapq 30), pairF is
#: not a proper pair, pairG read 1 is secondary and pairH has TLEN 0.
BAM_READS: list[tuple[str, int, int, int, int, int]] = [
    ("pairA", 0x1 | 0x2 | 0x20 | 0x40, 100, 60, 166, 50),
    ("pairA", 0x1 | 0x2 | 0x10 | 0x80, 216, 60, -166, 50),
    ("pairB", 0x1 | 0x2 | 0x10 | 0x40, 1130, 60, -180, 50),
    ("pairB", 0x1 | 0x2 | 0x20 | 0x80, 1000, 60, 180, 50),
    ("pairC", 0x1 | 0x2 | 0x20 | 0x40 | 0x400, 100, 60, 166, 50),
    ("pairC", 0x1 | 0x2 | 0x10 | 0x80 | 0x400, 216, 60, -166, 50),
    ("pairD", 0x1 | 0x2 | 0x20 | 0x40, 2000, 5, 200, 50),
    ("pairD", 0x1 | 0x2 | 0x10 | 0x80, 2150, 5, -200, 50),
    ("pairE", 0x1 | 0x2 | 0x20 | 0x40, 5000, 42, 150, 50),
    ("pairE", 0x1 | 0x2 | 0x10 | 0x80, 5100, 42, -150, 50),
    ("pairF", 0x1 | 0x20 | 0x40, 7000, 60, 3000, 50),
    ("pairF", 0x1 | 0x10 | 0x80, 9950, 60, -3000, 50),
    ("pairG", 0x1 | 0x2 | 0x20 | 0x40 | 0x100, 8000, 60, 120, 50),
    ("pairH", 0x1 | 0x2 | 0x20 | 0x40, 9000, 60, 0, 50),
]


def write_bam(path: Path, reads: list[tuple[str, int, int, int, int, int]] = BAM_READS) -> None:
    """A coordinate-sorted, indexed paired-end BAM on chr1 (20 kb) and chr2."""
    import pysam

    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "HD": {"VN": "1.6", "SO": "coordinate"},
        "SQ": [{"SN": name, "LN": size} for name, size in CHROM_SIZES.items()],
    }
    by_name = {}
    for name, flag, pos, _, _, _ in reads:
        by_name.setdefault(name, []).append((flag, pos))
    unsorted = path.with_name(path.stem + ".unsorted.bam")
    with pysam.AlignmentFile(str(unsorted), "wb", header=header) as out:
        for name, flag, pos, mapq, tlen, length in reads:
            seg = pysam.AlignedSegment(out.header)
            seg.query_name = name
            seg.flag = flag
            seg.reference_id = 0
            seg.reference_start = pos
            seg.mapping_quality = mapq
            seg.cigartuples = [(0, length)]
            seg.query_sequence = "A" * length
            seg.query_qualities = pysam.qualitystring_to_array("I" * length)
            mates = [p for f, p in by_name[name] if f != flag]
            seg.next_reference_id = 0
            seg.next_reference_start = mates[0] if mates else pos
            seg.template_length = tlen
            out.write(seg)
    pysam.sort("-o", str(path), str(unsorted))
    unsorted.unlink()
    pysam.index(str(path))


# --------------------------------------------------------------------------------------------------- methylation


def bismark_lines(seed: int, n: int = 40) -> list[str]:
    """Bismark coverage lines (1-based CpG positions, percent as Bismark prints it)."""
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(np.arange(1, CHROM_SIZES["chr1"]), size=n, replace=False))
    meth = rng.integers(0, 20, size=n)
    unmeth = rng.integers(0, 20, size=n)
    unmeth[(meth + unmeth) == 0] = 1
    rows = zip(pos, meth, unmeth, strict=True)
    return [f"chr1\t{p}\t{p}\t{float(100.0 * m / (m + u))!r}\t{m}\t{u}" for p, m, u in rows]


# --------------------------------------------------------------------------------------------------- builder


def make_valid_cohort(root: Path, *, seed: int = 0, with_bam: bool = True) -> Path:
    """Write the tiny valid cohort into ``root`` (created; must not exist or be empty) and return ``root``.

    ``with_bam=False`` replaces P03's BAM by a fragment file (for tests that do not need pysam's writer).
    """
    import SimpleITK as sitk

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "cohort.yaml").write_text(COHORT_YAML)
    (root / "clinical.csv").write_text(CLINICAL_CSV)

    samples = list(SAMPLES)
    if not with_bam:
        samples = [s if not s[4].endswith(".bam") else (*s[:4], "cfdna/P03_postop1.frag.gz", "") for s in samples]
    lines = ["patient_id,sample_id,modality,timepoint,day,path,mask_path"]
    lines += [f"{p},{sample_id(p, m, t)},{m},{t},{d},{path},{mask}" for p, m, t, d, path, mask in samples]
    (root / "samples.csv").write_text("\n".join(lines) + "\n")

    # CT: NIfTI, NRRD, DICOM series (mask as NIfTI on the same grid), MetaImage.
    for i, (_p, m, _t, _d, path, mask_path) in enumerate(samples):
        if m != "ct":
            continue
        image, mask = ct_volume(seed + i, origin=(-6.0 + i, -6.4, 10.0 * i))
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        if path.endswith("dicom"):
            write_dicom_series(image, root / path, series_uid=f"1.2.826.0.1.3680043.10.1001.{i + 1}")
        else:
            sitk.WriteImage(image, str(root / path))
        sitk.WriteImage(mask, str(root / mask_path))

    # cfDNA.
    for i, (_p, m, _t, _d, path, _) in enumerate(samples):
        if m != "cfdna":
            continue
        if path.endswith(".bam"):
            write_bam(root / path)
        else:
            write_fragments(root / path, fragment_lines(seed + i), bgzf=not path.endswith("P01_postop1.frag.gz"))

    # Methylation: gzip and plain.
    for i, (_p, m, _t, _d, path, _) in enumerate(samples):
        if m != "methylation":
            continue
        text = "\n".join(bismark_lines(seed + i)) + "\n"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        if path.endswith(".gz"):
            with gzip.open(root / path, "wt") as fh:
                fh.write(text)
        else:
            (root / path).write_text(text)

    rng = np.random.default_rng(seed)
    # ctDNA: every tracked variant for every sample (vaf 0 when not seen).
    rows = ["patient_id,sample_id,day,gene,variant,vaf,depth,alt_count"]
    for p, m, t, d, _path, _ in samples:
        if m == "ctdna":
            for gene, variant in VARIANTS:
                depth = int(rng.integers(500, 3000))
                alt = int(rng.integers(0, 40)) if gene != "KRAS" else 0
                rows.append(f"{p},{sample_id(p, m, t)},{d},{gene},{variant},{alt / depth:.6f},{depth},{alt}")
    (root / "ctdna").mkdir(exist_ok=True)
    (root / "ctdna" / "variants.csv").write_text("\n".join(rows) + "\n")

    # Metabolomics: 10 features x (4 samples + 2 QC + 1 blank), some below detection.
    injections = ["QC01", *[sample_id(p, m, t) for p, m, t, *_ in samples if m == "metabolomics"], "QC02", "BLANK01"]
    injections.insert(3, injections.pop())  # the blank sits between the study samples, as in a real run
    values = np.exp(rng.normal(10, 1.5, size=(10, len(injections))))
    values[2, 1] = np.nan
    values[7, 4] = np.nan
    rows = ["feature_id," + ",".join(injections)]
    for f in range(10):
        cells = ["" if np.isnan(v) else f"{v:.3f}" for v in values[f]]
        rows.append(f"M{f + 1:03d}," + ",".join(cells))
    (root / "metabolomics").mkdir(exist_ok=True)
    (root / "metabolomics" / "matrix.csv").write_text("\n".join(rows) + "\n")
    sheet = ["sample_id,sample_type,batch,injection_order"]
    for k, inj in enumerate(injections):
        kind = "qc" if inj.startswith("QC") else "blank" if inj.startswith("BLANK") else "sample"
        sheet.append(f"{inj},{kind},B1,{k + 1}")
    (root / "metabolomics" / "sample_sheet.csv").write_text("\n".join(sheet) + "\n")
    feats = ["feature_id,mz,rt,name"] + [
        f"M{f + 1:03d},{100 + 17.5 * f:.4f},{0.5 + 0.7 * f:.2f},metabolite {f + 1}" for f in range(10)
    ]
    (root / "metabolomics" / "features.csv").write_text("\n".join(feats) + "\n")

    # RPPA-like user table (one missing cell).
    rows = ["sample_id,AKT_pS473,EGFR_pY1068,MTOR_pS2448"]
    for k, (p, m, t, *_rest) in enumerate(s for s in samples if s[1] == "rppa"):
        cells = [f"{v:.4f}" for v in rng.normal(0, 1, size=3)]
        if k == 2:
            cells[1] = ""
        rows.append(f"{sample_id(p, m, t)}," + ",".join(cells))
    (root / "rppa").mkdir(exist_ok=True)
    (root / "rppa" / "rppa.csv").write_text("\n".join(rows) + "\n")

    # Copy-number segments, GDC style (1-based, inclusive).
    rows = ["sample_id,chrom,start,end,segment_mean,num_probes"]
    for p, m, t, *_rest in samples:
        if m == "cnv":
            sid = sample_id(p, m, t)
            rows += [
                f"{sid},chr1,1,9000,{rng.normal(0, 0.3):.4f},120",
                f"{sid},chr1,9001,20000,{rng.normal(0, 0.3):.4f},150",
                f"{sid},chr2,1,12000,{rng.normal(0, 0.3):.4f},200",
            ]
    (root / "cnv").mkdir(exist_ok=True)
    (root / "cnv" / "segments.csv").write_text("\n".join(rows) + "\n")

    # References.
    (root / "reference").mkdir(exist_ok=True)
    genome = rng.choice(list("ACGT"), size=sum(CHROM_SIZES.values()))
    fasta, off = [], 0
    for chrom, size in CHROM_SIZES.items():
        seq = "".join(genome[off : off + size])
        off += size
        fasta.append(f">{chrom}")
        fasta += [seq[k : k + 60] for k in range(0, size, 60)]
    (root / "reference" / "genome.fa").write_text("\n".join(fasta) + "\n")
    (root / "reference" / "genome.chrom.sizes").write_text("".join(f"{c}\t{s}\n" for c, s in CHROM_SIZES.items()))
    return root


@pytest.fixture(name="make_valid_cohort", scope="session")
def _make_valid_cohort_fixture(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make_valid_cohort(root, seed=0, with_bam=True)``: a fresh copy of the tiny valid cohort at ``root``.

    Each variant is built once per session and then copied, so a test may freely break its own copy.
    """
    templates: dict[tuple[int, bool], Path] = {}

    def build(root: Path, *, seed: int = 0, with_bam: bool = True) -> Path:
        key = (seed, with_bam)
        if key not in templates:
            templates[key] = make_valid_cohort(
                tmp_path_factory.mktemp("valid_cohort") / "cohort", seed=seed, with_bam=with_bam
            )
        shutil.copytree(templates[key], root, dirs_exist_ok=True)
        return Path(root)

    return build


@pytest.fixture
def valid_cohort(make_valid_cohort: Callable[..., Path], tmp_path: Path) -> Path:
    """A fresh, writable copy of the tiny valid cohort."""
    return make_valid_cohort(tmp_path / "cohort")


@pytest.fixture(scope="session")
def data_writers() -> SimpleNamespace:
    """The writers behind the valid cohort, for tests that need one file in a given format (no conftest import)."""
    return SimpleNamespace(
        ct_volume=ct_volume,
        write_dicom_series=write_dicom_series,
        fragment_lines=fragment_lines,
        write_fragments=write_fragments,
        write_bam=write_bam,
        bam_reads=BAM_READS,
        bismark_lines=bismark_lines,
        chrom_sizes=CHROM_SIZES,
    )


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow database, created once (schema migrations take seconds) and copied per test."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.getbasetemp() / "mlflow_template" / "mlflow.db"
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for the test: float reductions then sum in one order, so values reproduce exactly."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

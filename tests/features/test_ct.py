"""CT preprocessing: the same physical scan gives the same tensor from every format and orientation (Sybil #12),
the cube is centred on the tumour, augmentation is train-only and seeded, and the tensor cache is hit and keyed right.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml
from monai.transforms import Compose, EnsureChannelFirstd, Orientationd
from scipy import ndimage

from omics_risk.data.readers import DataFileError
from omics_risk.features import ct as ct_mod
from omics_risk.features.ct import (
    CTAugmentConfig,
    CTConfig,
    CTDataset,
    CTTensorCache,
    LoadCTd,
    build_ct_transforms,
    itk_to_metatensor,
)

REPO = Path(__file__).resolve().parents[2]
#: Small and fast: 1 mm voxels, a 16 mm cube.
CFG = CTConfig(pixdim=(1.0, 1.0, 1.0), roi_size=(16, 16, 16))

#: A sagittal acquisition in LPS: voxel x runs posterior, y inferior, slices run left; a left-handed frame, which
#: the DICOM reader turns into a right-handed one by reversing the slice order. No obliquity, but every axis is
#: permuted or flipped relative to RAS, and the spacing is anisotropic.
SAGITTAL = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
SIZE = (22, 20, 12)  # x, y, z voxels
SPACING = (0.8, 0.7, 2.5)
ORIGIN = (-14.0, -7.5, 31.25)


def _scan(centre_vox: tuple[float, float, float] = (12.0, 9.0, 6.0), seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """int16 HU volume (smooth lung-like texture, a solid ellipsoidal lesion) and its mask, in the SAGITTAL frame."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = SIZE
    hu = -820 + 60 * ndimage.gaussian_filter(rng.standard_normal((nz, ny, nx)), 1.2) / 0.1
    z, y, x = np.ogrid[:nz, :ny, :nx]
    cx, cy, cz = centre_vox
    r = np.sqrt(
        ((x - cx) * SPACING[0] / 4.5) ** 2 + ((y - cy) * SPACING[1] / 3.5) ** 2 + ((z - cz) * SPACING[2] / 5.0) ** 2
    )
    lesion = r <= 1.0
    hu = np.where(lesion, 35 + 25 * rng.standard_normal(hu.shape), hu)
    image = sitk.GetImageFromArray(np.clip(np.round(hu), -1024, 3071).astype(np.int16))
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(SAGITTAL)
    mask = sitk.GetImageFromArray(lesion.astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory, data_writers: SimpleNamespace) -> dict[str, tuple[Path, Path]]:
    """The same physical scan as NIfTI, NRRD, MetaImage, a DICOM series and two re-oriented NIfTIs: (image, mask)."""
    d = tmp_path_factory.mktemp("ct_formats")
    image, mask = _scan()
    out: dict[str, tuple[Path, Path]] = {}
    for fmt, ext in (("nifti", ".nii.gz"), ("nrrd", ".nrrd"), ("mha", ".mha")):
        sitk.WriteImage(image, str(d / f"ct{ext}"))
        sitk.WriteImage(mask, str(d / f"mask{ext}"))
        out[fmt] = (d / f"ct{ext}", d / f"mask{ext}")
    data_writers.write_dicom_series(image, d / "dicom")
    back = ct_mod.read_image(d / "dicom")
    # the mask an export tool would write for the series as a DICOM reader sees it (slices in reader order)
    mask_on_series = sitk.Resample(mask, back, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    sitk.WriteImage(mask_on_series, str(d / "mask_dicom.nii.gz"))
    out["dicom"] = (d / "dicom", d / "mask_dicom.nii.gz")
    # nibabel re-writes of the NIfTI: one voxel axis reversed, and the axes permuted (data and affine together)
    for name, fn in (("flipped", _flip_axis0), ("permuted", _permute)):
        img_n, msk_n = (nib.load(str(p)) for p in out["nifti"])
        for src, dst in ((img_n, d / f"ct_{name}.nii.gz"), (msk_n, d / f"mask_{name}.nii.gz")):
            data, affine = fn(np.asanyarray(src.dataobj), src.affine)
            nib.save(nib.Nifti1Image(data, affine), str(dst))
        out[name] = (d / f"ct_{name}.nii.gz", d / f"mask_{name}.nii.gz")
    return out


def _flip_axis0(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flip = np.eye(4)
    flip[0, 0] = -1
    flip[0, 3] = data.shape[0] - 1
    return np.ascontiguousarray(data[::-1]), affine @ flip


def _permute(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    perm = np.eye(4)[[2, 0, 1, 3]].T  # new voxel axes (z, x, y) of the old ones
    return np.ascontiguousarray(data.transpose(2, 0, 1)), affine @ perm


def _run(cfg: CTConfig, image: Path, mask: Path, train: bool = False, seed: int | None = None) -> dict:
    return build_ct_transforms(cfg, train=train, seed=seed)({"image": image, "mask": mask})


# --------------------------------------------------------------------------------------------- format parity


def test_dicom_really_reverses_the_slices(scans: dict[str, tuple[Path, Path]]) -> None:
    """Guard for the parity test: the DICOM series is read in another voxel order than the NIfTI holds it."""
    a = sitk.ReadImage(str(scans["nifti"][0]))
    b = ct_mod.read_image(scans["dicom"][0])
    assert np.allclose(a.GetDirection(), SAGITTAL)
    assert not np.allclose(a.GetDirection(), b.GetDirection())
    assert np.allclose(np.asarray(b.GetDirection()).reshape(3, 3)[:, 2], [-1.0, 0.0, 0.0])  # slice order reversed


@pytest.mark.parametrize("fmt", ["nrrd", "mha", "dicom", "flipped", "permuted"])
def test_every_format_and_orientation_gives_the_nifti_tensor(scans: dict[str, tuple[Path, Path]], fmt: str) -> None:
    ref = _run(CFG, *scans["nifti"])
    got = _run(CFG, *scans[fmt])
    assert got["image"].shape == ref["image"].shape == (1, 16, 16, 16)
    assert got["image"].dtype == torch.float32 and got["image"].device.type == "cpu"
    # int16 HU stored identically in every format; DICOM positions are rounded to 1e-6 mm
    np.testing.assert_allclose(got["image"].numpy(), ref["image"].numpy(), rtol=0, atol=1e-5)
    assert torch.equal(got["mask"], ref["mask"])
    assert ref["mask"].sum() > 50  # the lesion is in the cube


def test_ras_orientation_matches_nibabel_canonical(scans: dict[str, tuple[Path, Path]]) -> None:
    """Load + Orientationd("RAS") of the DICOM series equals nibabel's closest-canonical (RAS+) array of the NIfTI."""
    keys = ("image", "mask")
    load = Compose(
        [
            LoadCTd("image", "mask"),
            EnsureChannelFirstd(keys, channel_dim="no_channel"),
            Orientationd(keys, axcodes="RAS", labels=None),
        ]
    )
    ours = load({"image": scans["dicom"][0], "mask": scans["dicom"][1]})
    canon = nib.as_closest_canonical(nib.load(str(scans["nifti"][0])))
    np.testing.assert_array_equal(ours["image"][0].numpy(), canon.get_fdata().astype(np.float32))
    np.testing.assert_allclose(ours["image"].affine.numpy(), canon.affine, atol=1e-5)
    # the sagittal frame: x voxels (0.8 mm, posterior) become the A axis, slices (2.5 mm, left) the R axis
    assert tuple(ours["image"].shape[1:]) == (SIZE[2], SIZE[0], SIZE[1])
    np.testing.assert_allclose(np.abs(np.diag(ours["image"].affine.numpy()[:3, :3])), [2.5, 0.8, 0.7], atol=1e-6)


def test_itk_lps_to_ras_affine() -> None:
    """ITK index (i, j, k) at LPS point origin + D diag(s) ijk is RAS point (-x, -y, z) under the MetaTensor affine."""
    image, _ = _scan()
    mt = itk_to_metatensor(image)
    for ijk in [(0, 0, 0), (3, 5, 7), (21, 19, 11)]:
        lps = np.asarray(image.TransformIndexToPhysicalPoint(ijk))
        ras = mt.affine.numpy() @ np.array([*ijk, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)
    assert tuple(mt.shape) == SIZE


# --------------------------------------------------------------------------------------------- cropping


@pytest.mark.parametrize("centre", ["centroid", "bbox"])
def test_cube_is_centred_on_the_mask(scans: dict[str, tuple[Path, Path]], centre: str) -> None:
    cfg = CTConfig(pixdim=(1.0, 1.0, 1.0), roi_size=(17, 16, 15), crop_centre=centre)
    out = _run(cfg, *scans["nifti"])
    m = out["mask"][0].numpy() > 0.5
    assert m.shape == (17, 16, 15)
    for axis, n in enumerate(m.shape):
        profile = m.sum(axis=tuple(a for a in range(3) if a != axis))
        idx = np.flatnonzero(profile)
        c = (profile * np.arange(n)).sum() / profile.sum() if centre == "centroid" else (idx[0] + idx[-1]) / 2
        assert abs(c - (n - 1) / 2) <= 0.5 + 1e-9, (axis, c)


def test_cube_past_the_scan_edge_is_padded_with_air(tmp_path: Path) -> None:
    image, mask = _scan(centre_vox=(3.0, 2.0, 1.0))  # lesion in a corner: the cube leaves the scan
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    sitk.WriteImage(mask, str(tmp_path / "mask.nrrd"))
    cfg = CTConfig(pixdim=(1.0, 1.0, 1.0), roi_size=(24, 24, 24), window=(-1350.0, 150.0))
    out = _run(cfg, tmp_path / "ct.nrrd", tmp_path / "mask.nrrd")
    air = (-1000.0 + 1350.0) / 1500.0
    img = out["image"][0].numpy()
    outside = np.isclose(img, air, atol=1e-6)
    assert outside.mean() > 0.2  # a good part of the cube lies outside the scan ...
    assert outside[0].all() or outside[-1].all()  # ... including whole faces of it
    assert out["mask"].sum() > 20


def test_precrop_keeps_the_region(tmp_path: Path) -> None:
    """Cropping before resampling (a large scan) keeps the cube where it was; only the resampling grid may shift."""
    rng = np.random.default_rng(5)
    arr = (ndimage.gaussian_filter(rng.normal(size=(40, 96, 96)), 3) * 4000).astype(np.int16)
    z, y, x = np.ogrid[:40, :96, :96]
    m = (((x - 60) / 7) ** 2 + ((y - 30) / 6) ** 2 + ((z - 15) / 2.5) ** 2 <= 1).astype(np.uint8)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.7, 2.5))
    msk = sitk.GetImageFromArray(m)
    msk.CopyInformation(img)
    sitk.WriteImage(img, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(msk, str(tmp_path / "m.nii.gz"))
    loaded = LoadCTd(margin_mm=12.0)({"image": tmp_path / "ct.nii.gz", "mask": tmp_path / "m.nii.gz"})
    assert tuple(loaded["image"].shape) < (96, 96, 40)  # it did crop
    outs = [
        _run(
            CTConfig(pixdim=(1.0, 1.0, 1.0), roi_size=(16, 16, 16), precrop=p),
            tmp_path / "ct.nii.gz",
            tmp_path / "m.nii.gz",
        )
        for p in (True, False)
    ]
    a, b = (o["image"][0].numpy() for o in outs)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
    assert abs(float(outs[0]["mask"].sum() - outs[1]["mask"].sum())) <= 0.1 * float(outs[1]["mask"].sum())


# --------------------------------------------------------------------------------------------- intensity, masks


def test_window_scaling_and_mask_label(tmp_path: Path) -> None:
    image, mask = _scan()
    labels = sitk.GetArrayFromImage(mask).astype(np.uint8) * 3  # the tumour is label 3 ...
    labels[0, 0, 0] = 1  # ... and another structure is label 1
    lab = sitk.GetImageFromArray(labels)
    lab.CopyInformation(image)
    sitk.WriteImage(image, str(tmp_path / "ct.mha"))
    sitk.WriteImage(lab, str(tmp_path / "lab.mha"))
    out = _run(
        CTConfig(pixdim=(1.0, 1.0, 1.0), roi_size=(16, 16, 16), mask_label=3), tmp_path / "ct.mha", tmp_path / "lab.mha"
    )
    img = out["image"].numpy()
    assert img.min() >= 0.0 and img.max() <= 1.0
    assert set(np.unique(out["mask"].numpy())) == {0.0, 1.0}
    inside = img[out["mask"].numpy() > 0.5]
    assert np.median(inside) == pytest.approx((35 + 1000) / 1400, abs=0.05)  # solid lesion ~35 HU
    with pytest.raises(DataFileError, match="no voxel with label 7"):
        _run(
            CTConfig(pixdim=(1.0, 1.0, 1.0), roi_size=(16, 16, 16), mask_label=7),
            tmp_path / "ct.mha",
            tmp_path / "lab.mha",
        )


def test_mask_channel_and_bad_masks(scans: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    cfg = CTConfig(pixdim=(1.0, 1.0, 1.0), roi_size=(16, 16, 16), mask_channel=True)
    out = _run(cfg, *scans["nifti"])
    assert out["image"].shape == (2, 16, 16, 16)
    assert torch.equal(out["image"][1:], out["mask"])
    _, mask = _scan()
    sitk.WriteImage(mask * 0, str(tmp_path / "empty.nii.gz"))
    with pytest.raises(DataFileError, match="no voxel > 0"):
        _run(CFG, scans["nifti"][0], tmp_path / "empty.nii.gz")
    shifted = sitk.Image(mask)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nii.gz"))
    with pytest.raises(DataFileError, match="origin differs"):
        _run(CFG, scans["nifti"][0], tmp_path / "shifted.nii.gz")


# --------------------------------------------------------------------------------------------- augmentation


def test_augmentation_only_in_training_and_seeded(scans: dict[str, tuple[Path, Path]]) -> None:
    always = CTConfig(
        pixdim=(1.0, 1.0, 1.0),
        roi_size=(16, 16, 16),
        augment=CTAugmentConfig(flip_prob=1.0, rotate90_prob=1.0, affine_prob=1.0, shift_prob=1.0, noise_prob=1.0),
    )
    ref = _run(always, *scans["nifti"], train=False)
    for seed in (0, 1):  # scoring never augments, whatever the seed
        assert torch.equal(_run(always, *scans["nifti"], train=False, seed=seed)["image"], ref["image"])
    a0 = _run(always, *scans["nifti"], train=True, seed=0)
    a0_again = _run(always, *scans["nifti"], train=True, seed=0)
    a1 = _run(always, *scans["nifti"], train=True, seed=1)
    assert torch.equal(a0["image"], a0_again["image"]) and torch.equal(a0["mask"], a0_again["mask"])
    assert not torch.allclose(a0["image"], a1["image"])
    assert not torch.allclose(a0["image"], ref["image"])
    assert a0["image"].shape == ref["image"].shape and a0["image"].dtype == torch.float32
    assert set(np.unique(a0["mask"].numpy())) <= {0.0, 1.0}  # nearest-neighbour keeps the mask binary
    # augment.enabled: false turns training into the scoring pipeline
    off = CTConfig(pixdim=(1.0, 1.0, 1.0), roi_size=(16, 16, 16), augment=CTAugmentConfig(enabled=False))
    assert torch.equal(_run(off, *scans["nifti"], train=True, seed=3)["image"], ref["image"])


# --------------------------------------------------------------------------------------------- caching


def test_tensor_cache_hit_miss_and_keys(
    scans: dict[str, tuple[Path, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, mask = scans["dicom"]
    direct = _run(CFG, image, mask)
    direct_affine = ct_mod.ct_preprocessing(CFG)({"image": image, "mask": mask})["image"].affine.numpy()
    cache = CTTensorCache(CFG, tmp_path / "cache")
    first = build_ct_transforms(CFG, cached=True)(cache(image, mask))
    assert (cache.hits, cache.misses) == (0, 1)
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 1

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must not read the scan")

    monkeypatch.setattr(ct_mod, "read_image", no_reading)
    hit = cache(image, mask)
    assert (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_allclose(hit["image"].affine.numpy(), direct_affine, atol=1e-9)
    second = build_ct_transforms(CFG, cached=True)(hit)
    for out in (first, second):
        assert torch.equal(out["image"], direct["image"]) and torch.equal(out["mask"], direct["mask"])
    # a fresh cache object (another epoch, another process) finds the file too
    again = CTTensorCache(CFG, tmp_path / "cache")
    again(image, mask)
    assert (again.hits, again.misses) == (1, 0)
    monkeypatch.undo()
    # another preprocessing setting is another key; augmentation settings are not
    other = CTTensorCache(CTConfig(pixdim=(1.5, 1.5, 1.5), roi_size=(16, 16, 16)), tmp_path / "cache")
    other(image, mask)
    assert other.misses == 1
    aug_only = CTTensorCache(
        CTConfig(pixdim=(1.0, 1.0, 1.0), roi_size=(16, 16, 16), augment=CTAugmentConfig(flip_prob=0.1)),
        tmp_path / "cache",
    )
    assert aug_only.dir == cache.dir


def test_changed_file_content_is_a_cache_miss(tmp_path: Path) -> None:
    image, mask = _scan()
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(mask, str(tmp_path / "m.nii.gz"))
    cache = CTTensorCache(CFG, tmp_path / "cache")
    before = cache(tmp_path / "ct.nii.gz", tmp_path / "m.nii.gz")["image"].clone()
    sitk.WriteImage(sitk.Cast(image + 200, sitk.sitkInt16), str(tmp_path / "ct.nii.gz"))
    after = cache(tmp_path / "ct.nii.gz", tmp_path / "m.nii.gz")["image"]
    assert cache.misses == 2 and not torch.equal(before, after)


def test_dataset_from_cohort_with_cache(valid_cohort: Path, tmp_path: Path) -> None:
    """The tiny contract cohort (CT as NIfTI, NRRD, DICOM and MetaImage): one batch-ready cube per scan."""
    from omics_risk.data.contract import load_cohort

    cohort = load_cohort(valid_cohort)
    ds = CTDataset.from_cohort(
        cohort,
        cfg=CTConfig(pixdim=(1.0, 1.0, 1.0), roi_size=(12, 12, 12)),
        train=True,
        cache_dir=tmp_path / "cache",
        seed=0,
    )
    assert len(ds) == 4
    items = [ds[i] for i in range(len(ds))]
    assert {it["sample_id"] for it in items} == set(cohort.samples_of("ct")["sample_id"])
    assert all(it["image"].shape == (1, 12, 12, 12) and it["image"].dtype == torch.float32 for it in items)
    assert all(it["mask"].sum() > 0 for it in items)
    batch = torch.utils.data.default_collate([{"image": it["image"]} for it in items])
    assert batch["image"].shape == (4, 1, 12, 12, 12)
    ds[0]
    assert ds.cache is not None and (ds.cache.hits, ds.cache.misses) == (1, 4)


def test_one_missing_or_unreadable_scan_fails_only_itself(make_valid_cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Training keys every scan of a cohort before preprocessing: one missing mask must not stop that."""
    from omics_risk.data.contract import load_cohort

    cfg = CTConfig(pixdim=(1.0, 1.0, 1.0), roi_size=(12, 12, 12))
    clean, broken = load_cohort(make_valid_cohort(tmp_path / "clean")), load_cohort(make_valid_cohort(tmp_path / "b"))
    (broken.root / "ct/P02_preop_mask.nrrd").unlink()

    def scans(c):  # type: ignore[no-untyped-def]
        return [(c.path(r.path), c.path(r.mask_path)) for r in c.samples_of("ct").itertuples()]

    cache = CTTensorCache(cfg, tmp_path / "cache_b")
    keys = [cache.key(image, mask) for image, mask in scans(broken)]  # no error for the missing mask
    assert len(set(keys)) == 4
    reference = CTTensorCache(cfg, tmp_path / "cache_clean")
    for (image, mask), (clean_image, clean_mask) in zip(scans(broken), scans(clean), strict=True):
        if mask.name == "P02_preop_mask.nrrd":
            with pytest.raises(DataFileError, match=r"P02_preop_mask\.nrrd: file not found"):
                cache(image, mask)
            continue
        got, want = cache(image, mask), reference(clean_image, clean_mask)
        assert torch.equal(got["image"].as_tensor(), want["image"].as_tensor())
        assert torch.equal(got["mask"].as_tensor(), want["mask"].as_tensor())
    assert (cache.hits, cache.misses) == (0, 3)


# --------------------------------------------------------------------------------------------- settings


def test_yaml_is_the_dataclass_default_and_instantiates() -> None:
    from hydra.utils import instantiate

    path = REPO / "configs" / "features" / "ct.yaml"
    assert CTConfig.from_yaml(path) == CTConfig()
    assert instantiate(yaml.safe_load(path.read_text())) == CTConfig()
    with pytest.raises(ValueError, match=r"unknown ct setting\(s\) \['pixdims'\]"):
        CTConfig.from_mapping({"pixdims": [1, 1, 1]})
    with pytest.raises(ValueError, match="window"):
        CTConfig(window=(400.0, -1000.0))
    assert CTConfig.from_mapping({"augment": {"flip_prob": 0.2}}).augment.flip_prob == 0.2

"""CT preprocessing for the imaging arm: one MONAI dictionary pipeline for training and scoring.

A sample is ``{"image": <CT path>, "mask": <tumour mask path>, ...}``; the pipeline turns it into a float32 cube
centred on the tumour, whatever format and orientation the scan came in:

1. :class:`LoadCTd` reads NIfTI, NRRD, MetaImage or a DICOM series folder with SimpleITK
   (:func:`~omics_risk.data.readers.read_image`), so every format goes through the same reader and the same
   geometry: the ITK (LPS) origin, spacing and direction become a RAS affine on a ``MetaTensor``. It checks that
   the mask is on the image grid, keeps the tumour label, and (``precrop``) cuts both to the tumour plus half a
   cube, so resampling a 512x512x300 scan costs what resampling the crop costs;
2. ``EnsureChannelFirstd`` -> ``Orientationd("RAS")`` -> ``Spacingd(pixdim)`` (the mask linearly, then
   thresholded so that grid ties do not depend on header rounding);
3. :class:`CropAroundMaskd` cuts a ``roi_size`` cube centred on the mask (centroid or bounding-box centre),
   padding with air where the cube leaves the scan;
4. ``ScaleIntensityRanged``: the HU window to [0, 1] (clipped);
5. in training only, augmentations (flips, 90-degree rotations, small affines, intensity shift, noise);
6. ``EnsureTyped``: plain CPU float32 tensors ``(1, X, Y, Z)`` (``(2, X, Y, Z)`` with the mask as a second channel),
   axes in RAS order. Models move them to their device.

Steps 1-4 are deterministic; :class:`CTTensorCache` keeps their output on disk keyed by the input files' content
and the preprocessing settings, so training epochs do not re-read and re-resample scans. Settings come from
``configs/features/ct.yaml`` (:class:`CTConfig`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import (
    AsDiscreted,
    BorderPad,
    Compose,
    ConcatItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialCrop,
)

from omics_risk.atomic import atomic_path
from omics_risk.data.contract import Cohort
from omics_risk.data.readers import DataFileError, check_mask_geometry, read_image
from omics_risk.features.base import settings_hash
from omics_risk.features.ct_config import CT_PREPROCESS_VERSION, CTAugmentConfig, CTConfig
from omics_risk.features.extract import memo_fingerprint

__all__ = [
    "CT_PREPROCESS_VERSION",
    "CTAugmentConfig",
    "CTConfig",
    "CTDataset",
    "CTTensorCache",
    "CropAroundMaskd",
    "LoadCTd",
    "build_ct_transforms",
    "ct_preprocessing",
    "itk_to_metatensor",
]

#: ITK physical space is LPS; MONAI (and NIfTI) are RAS: flip x and y.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# ------------------------------------------------------------------------------------------------ loading


def itk_to_metatensor(image: Any, dtype: np.dtype | type = np.float32, filename: str = "") -> MetaTensor:
    """A SimpleITK image as a ``MetaTensor`` indexed (x, y, z) with its RAS affine.

    ITK's physical point of index ``i`` is ``origin + direction @ diag(spacing) @ i`` in LPS; flipping x and y
    gives the RAS affine MONAI expects, so DICOM, NIfTI, NRRD and MetaImage of one scan get the same geometry.
    """
    arr = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0), dtype=dtype)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(np.asarray(image.GetSpacing(), dtype=np.float64))
    lps[:3, 3] = image.GetOrigin()
    ras = _LPS_TO_RAS @ lps
    meta = {"filename_or_obj": filename, "space": "RAS", "original_affine": ras, "spatial_shape": arr.shape}
    return MetaTensor(torch.from_numpy(arr), affine=torch.from_numpy(ras), meta=meta)


class LoadCTd(MapTransform):
    """Read a CT and its tumour mask (any contract format) into RAS ``MetaTensor`` s, checked and optionally cropped.

    Args:
        image_key, mask_key: the sample keys holding the paths (replaced by the tensors).
        mask_label: the tumour's label; None keeps every voxel > 0. The mask becomes 0/1.
        margin_mm: when set, crop image and mask to the mask's bounding box plus this many mm on every side
            (projected on each voxel axis) before anything else. The output cube covers the same region as long as
            the margin covers half of it, but resampling works on the crop, not the whole scan (its grid is then
            anchored at the crop's corner rather than the scan's: a sub-voxel shift, the same for every format).
    """

    def __init__(
        self,
        image_key: str = "image",
        mask_key: str = "mask",
        mask_label: int | None = None,
        margin_mm: float | None = None,
    ):
        super().__init__([image_key, mask_key])
        self.image_key = image_key
        self.mask_key = mask_key
        self.mask_label = mask_label
        self.margin_mm = margin_mm

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image_path, mask_path = Path(d[self.image_key]), Path(d[self.mask_key])
        image = read_image(image_path)
        mask = read_image(mask_path)
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise DataFileError(
                image_path,
                f"a CT must be one 3-D volume of scalars, got {image.GetDimension()}-D "
                f"with {image.GetNumberOfComponentsPerPixel()} component(s) per voxel",
            )
        problems = [p for p in check_mask_geometry(image, mask) if not p.startswith("mask is empty")]
        if problems:
            raise DataFileError(mask_path, f"not the tumour mask of {image_path.name}: " + "; ".join(problems))
        labels = sitk.GetArrayViewFromImage(mask)
        fg = labels > 0 if self.mask_label is None else labels == self.mask_label
        if not fg.any():
            what = "voxel > 0" if self.mask_label is None else f"voxel with label {self.mask_label}"
            raise DataFileError(mask_path, f"mask has no {what}: there is no tumour to centre the crop on")
        binary = sitk.GetImageFromArray(fg.astype(np.uint8))
        binary.CopyInformation(mask)
        if self.margin_mm is not None:
            image, binary = self._precrop(image, binary, fg)
        d[self.image_key] = itk_to_metatensor(image, np.float32, str(image_path))
        d[self.mask_key] = itk_to_metatensor(binary, np.float32, str(mask_path))
        return d

    def _precrop(self, image: Any, mask: Any, fg: np.ndarray) -> tuple[Any, Any]:
        """Bounding box of the mask (index space) grown by ``margin_mm`` along each voxel axis, clipped to the scan."""
        size = np.asarray(image.GetSize())
        spacing = np.asarray(image.GetSpacing())
        direction = np.asarray(image.GetDirection()).reshape(3, 3)
        # A cube of half-width m (world axes) spans m * sum_i |d_ij| along voxel axis j (= m when not oblique).
        margin = np.ceil(self.margin_mm * np.abs(direction).sum(axis=0) / spacing).astype(int) + 1
        lo, hi = [], []
        for axis in range(3):  # fg is (z, y, x)
            other = tuple(a for a in range(3) if a != 2 - axis)
            idx = np.flatnonzero(fg.any(axis=other))
            lo.append(idx[0])
            hi.append(idx[-1] + 1)
        start = np.maximum(np.asarray(lo) - margin, 0)
        stop = np.minimum(np.asarray(hi) + margin, size)
        if np.all(start == 0) and np.all(stop == size):
            return image, mask
        sl = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
        return image[sl], mask[sl]


class CropAroundMaskd(MapTransform):
    """Cut a fixed-size cube centred on the mask, padding with a per-key constant where it leaves the volume.

    The centre is the mask's centroid (``centre="centroid"``) or the centre of its bounding box (``"bbox"``), in
    voxels of the (already resampled) grid; the cube's middle voxel(s) sit on it, within half a voxel.
    """

    def __init__(
        self,
        keys: Sequence[str],
        source_key: str,
        roi_size: Sequence[int],
        centre: str = "centroid",
        pad_values: Mapping[str, float] | None = None,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.source_key = source_key
        self.roi_size = np.asarray(roi_size, dtype=int)
        self.centre = centre
        self.pad_values = dict(pad_values or {})

    def centre_of(self, mask: torch.Tensor) -> np.ndarray:
        fg = (torch.as_tensor(mask)[0] > 0.5).cpu().numpy()
        if not fg.any():
            raise ValueError(
                "the tumour mask vanished when resampled to pixdim (a lesion smaller than one output "
                "voxel); use a finer pixdim"
            )
        centre = np.empty(3)
        for axis in range(3):
            profile = fg.sum(axis=tuple(a for a in range(3) if a != axis))
            idx = np.flatnonzero(profile)
            if self.centre == "bbox":
                centre[axis] = (idx[0] + idx[-1]) / 2
            else:
                centre[axis] = float((profile * np.arange(profile.size)).sum() / profile.sum())
        return centre

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        centre = self.centre_of(d[self.source_key])
        shape = np.asarray(d[self.source_key].shape[1:])
        start = np.floor(centre - (self.roi_size - 1) / 2 + 0.5).astype(int)
        end = start + self.roi_size
        pad_lo = np.maximum(-start, 0)
        pad_hi = np.maximum(end - shape, 0)
        border = [int(v) for pair in zip(pad_lo, pad_hi, strict=True) for v in pair]
        crop = SpatialCrop(roi_start=(start + pad_lo).tolist(), roi_end=(end + pad_lo).tolist())
        for key in self.key_iterator(d):
            x = d[key]
            if any(border):
                x = BorderPad(spatial_border=border, mode="constant", value=float(self.pad_values.get(key, 0.0)))(x)
            d[key] = crop(x)
        return d


# ------------------------------------------------------------------------------------------------ pipelines

_KEYS = ("image", "mask")


class _Pipeline(Compose):
    """A ``Compose`` that raises the transform's own error (e.g. a :class:`DataFileError` naming the file), not
    MONAI's ``RuntimeError("applying transform ...")`` wrapper around it."""

    def __call__(self, input_: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(input_, *args, **kwargs)
        except RuntimeError as exc:
            root: BaseException = exc
            while (
                isinstance(root, RuntimeError)
                and str(root).startswith("applying transform")
                and root.__cause__ is not None
            ):
                root = root.__cause__
            if root is exc:
                raise
            raise root from None


def ct_preprocessing(cfg: CTConfig) -> Compose:
    """The deterministic part (paths in, cropped and windowed ``MetaTensor`` s out); :class:`CTTensorCache` keeps it."""
    half = max(r * p for r, p in zip(cfg.roi_size, cfg.pixdim, strict=True)) / 2
    margin = half + 2 * max(cfg.pixdim) if cfg.precrop else None
    lo, hi = cfg.window
    return _Pipeline(
        [
            LoadCTd("image", "mask", mask_label=cfg.mask_label, margin_mm=margin),
            EnsureChannelFirstd(_KEYS, channel_dim="no_channel"),
            Orientationd(_KEYS, axcodes="RAS", labels=None),  # labels from the MetaTensor space (RAS)
            # The mask is resampled linearly and thresholded just below 0.5: nearest-neighbour would break the many
            # exact ties of regular grids (0.8 -> 1 mm) by header rounding (NIfTI keeps float32 spacing), so the same
            # scan from two formats would get different masks; here a tie is always tumour.
            Spacingd(_KEYS, pixdim=cfg.pixdim, mode=("bilinear", "bilinear"), padding_mode="border"),
            AsDiscreted("mask", threshold=0.5 - 1e-3),
            CropAroundMaskd(
                _KEYS,
                source_key="mask",
                roi_size=cfg.roi_size,
                centre=cfg.crop_centre,
                pad_values={"image": cfg.air_hu, "mask": 0.0},
            ),
            ScaleIntensityRanged("image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True),
        ]
    )


def _augmentations(cfg: CTConfig) -> list[Any]:
    a = cfg.augment
    rad = math.radians(a.rotate_deg)
    out: list[Any] = [RandFlipd(_KEYS, prob=a.flip_prob, spatial_axis=axis) for axis in a.flip_axes]
    out += [
        RandRotate90d(_KEYS, prob=a.rotate90_prob, max_k=3, spatial_axes=(0, 1)),
        RandAffined(
            _KEYS,
            prob=a.affine_prob,
            rotate_range=(rad, rad, rad),
            scale_range=(a.scale,) * 3,
            mode=("bilinear", "nearest"),
            padding_mode="border",
        ),
        RandShiftIntensityd("image", offsets=a.shift, prob=a.shift_prob),
        RandGaussianNoised("image", prob=a.noise_prob, std=a.noise_std),
    ]
    return out


def build_ct_transforms(
    cfg: CTConfig | Mapping[str, Any] | None = None,
    train: bool = False,
    *,
    cached: bool = False,
    seed: int | None = None,
) -> Compose:
    """The CT pipeline: paths -> ``{"image": float32 (C, X, Y, Z), "mask": float32 (1, X, Y, Z)}`` CPU tensors.

    Args:
        cfg: settings (None: the defaults = configs/features/ct.yaml).
        train: add the random augmentations (when ``cfg.augment.enabled``); scoring uses ``train=False``.
        cached: leave out the deterministic part, for samples that come out of :class:`CTTensorCache`.
        seed: seed every random transform (reproducible augmentation).
    """
    cfg = _as_config(cfg)
    steps: list[Any] = [] if cached else [ct_preprocessing(cfg)]
    if train and cfg.augment.enabled:
        steps += _augmentations(cfg)
    if cfg.mask_channel:
        steps.append(ConcatItemsd(_KEYS, name="image"))
    steps.append(EnsureTyped(_KEYS, data_type="tensor", dtype=torch.float32, track_meta=False))
    out = _Pipeline(steps)
    if seed is not None:
        out.set_random_state(seed=seed)
    return out


def _as_config(cfg: CTConfig | Mapping[str, Any] | None) -> CTConfig:
    if cfg is None:
        return CTConfig()
    if isinstance(cfg, CTConfig):
        return cfg
    return CTConfig.from_mapping(cfg)


# ------------------------------------------------------------------------------------------------ caching


def _content_hash(path: Path) -> str:
    """Content hash of a file or DICOM folder, memoised on (path, size, mtime) so epochs do not re-read inputs.

    A missing or unreadable input gets a marker instead of an error: computing the cache keys of a cohort must not
    stop at one bad scan; reading that scan then fails with a :class:`DataFileError` naming it, for that scan only.
    """
    try:
        return memo_fingerprint(path)
    except OSError as exc:
        return f"unreadable:{path}:{exc.errno}"


class CTTensorCache:
    """Deterministically preprocessed CT tensors on disk, keyed by input content and preprocessing settings.

    ``cache(image, mask)`` returns ``{"image", "mask"}`` ``MetaTensor`` s exactly as :func:`ct_preprocessing` makes
    them, reading ``<cache_dir>/<settings hash>/<content key>.pt`` when present. Changing a file or a setting
    changes the key, so a stale tensor is never served; ``hits`` / ``misses`` count what happened.
    """

    def __init__(self, cfg: CTConfig | Mapping[str, Any] | None, cache_dir: str | Path):
        self.cfg = _as_config(cfg)
        self.dir = Path(cache_dir) / settings_hash(self.cfg.preprocessing_settings())
        self.hits = 0
        self.misses = 0
        self._pre: Compose | None = None

    def key(self, image: str | Path, mask: str | Path) -> str:
        blob = f"{_content_hash(Path(image))}|{_content_hash(Path(mask))}".encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def __call__(self, image: str | Path, mask: str | Path) -> dict[str, MetaTensor]:
        for p in (Path(image), Path(mask)):
            if not p.exists():
                raise DataFileError(p, "file not found")
            if _content_hash(p).startswith("unreadable:"):
                raise DataFileError(p, "cannot be read (check its permissions)")
        file = self.dir / f"{self.key(image, mask)}.pt"
        if file.is_file():
            try:
                blob = torch.load(file, map_location="cpu", weights_only=True)
                self.hits += 1
                return {
                    k: MetaTensor(blob[k], affine=blob["affine"], meta={"filename_or_obj": str(p)})
                    for k, p in (("image", image), ("mask", mask))
                }
            except (OSError, RuntimeError, KeyError, EOFError):  # a torn or foreign file: rebuild it
                pass
        if self._pre is None:
            self._pre = ct_preprocessing(self.cfg)
        out = self._pre({"image": str(image), "mask": str(mask)})
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(file) as tmp:
            torch.save(
                {
                    "image": out["image"].as_tensor().contiguous(),
                    "mask": out["mask"].as_tensor().contiguous(),
                    "affine": out["image"].affine.clone(),
                },
                tmp,
            )
        self.misses += 1
        return {"image": out["image"], "mask": out["mask"]}


class CTDataset(torch.utils.data.Dataset):
    """CT samples for a model: ``{"image": (C, X, Y, Z), "mask": (1, X, Y, Z), **other keys of the item}``.

    ``items`` are mappings with ``image`` and ``mask`` paths plus anything to pass through (sample_id, patient_id,
    labels). With ``cache_dir`` the deterministic part comes from :class:`CTTensorCache`; augmentations (train
    only) run on every access. ``transform`` is the random part, seeded per worker by MONAI's DataLoader.
    """

    def __init__(
        self,
        items: Sequence[Mapping[str, Any]],
        cfg: CTConfig | Mapping[str, Any] | None = None,
        train: bool = False,
        cache_dir: str | Path | None = None,
        seed: int | None = None,
    ):
        self.items = [dict(i) for i in items]
        self.cfg = _as_config(cfg)
        self.train = train
        self.cache = CTTensorCache(self.cfg, cache_dir) if cache_dir is not None else None
        self.preprocess = ct_preprocessing(self.cfg)
        self.transform = build_ct_transforms(self.cfg, train, cached=True, seed=seed)

    @classmethod
    def from_cohort(cls, cohort: Cohort, modality: str = "ct", **kwargs: Any) -> CTDataset:
        """Every sample of an image modality, with sample_id, patient_id, timepoint and day passed through."""
        rows = cohort.samples_of(modality)
        items = [
            {
                "image": cohort.path(r.path),
                "mask": cohort.path(r.mask_path),
                "sample_id": r.sample_id,
                "patient_id": r.patient_id,
                "timepoint": r.timepoint,
                "day": r.day,
            }
            for r in rows.itertuples()
        ]
        return cls(items, **kwargs)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        d = dict(self.items[index])
        if self.cache is not None:
            d.update(self.cache(d["image"], d["mask"]))
        else:
            d.update(self.preprocess({"image": str(d["image"]), "mask": str(d["mask"])}))
        return self.transform(d)

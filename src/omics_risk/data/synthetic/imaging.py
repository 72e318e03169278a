"""Small chest-CT crops (NIfTI, int16 HU) with a tumour or surgical-bed mask on the same grid.

A crop centred on the lesion holds lung parenchyma (~-850 HU, dependent density gradient, emphysema in
smokers), vessels, either the chest wall (pleura, intercostal muscle, ribs, fat, skin and air outside the
body) or the mediastinum (fat, great vessels, nodes), and the lesion. Lesion size follows tumour burden;
boundary irregularity, spiculation, internal heterogeneity and necrosis follow aggressiveness; adenocarcinomas
may be part-solid (ground glass rim). The post-operative scan shows the surgical bed (fibrotic consolidation,
staple line, pleural effusion) and, with residual disease, a residual nodule. Scanner noise and kernel
blur vary per scan. Image geometry is shared by all scans of a cohort, so a 3D CNN can take them as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.special import expit

DEFAULT_SHAPE = (48, 48, 32)
DEFAULT_SPACING = (2.0, 2.0, 3.0)


def _field(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float | tuple[float, ...]) -> np.ndarray:
    """Smooth unit-variance Gaussian random field (texture, noise, tissue inhomogeneity)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="reflect")
    sd = float(f.std())
    return f / (sd if sd > 0 else 1.0)


def _unit_vectors(rng: np.random.Generator, k: int) -> np.ndarray:
    v = rng.normal(size=(k, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class _Grid:
    """Voxel-centre coordinates in mm, centred on the crop."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]):
        self.shape = shape
        self.spacing = spacing
        ax = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
        self.x = ax[0][:, None, None]
        self.y = ax[1][None, :, None]
        self.z = ax[2][None, None, :]
        self.half = min(shape[0] * spacing[0], shape[1] * spacing[1]) / 2
        self.sigma_mm = lambda mm: tuple(mm / s for s in spacing)


def _blob(grid: _Grid, centre: np.ndarray, radius: float, rng_shape: np.random.Generator, irregularity: float,
          spiculation: float, axes: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance-like map (positive inside) of a lumpy, spiculated blob, and the normalised radius.

    The boundary radius is modulated by a few broad lobes (low-order harmonics; irregularity) and by narrow
    spikes (spiculation), both drawn from ``rng_shape`` so that repeat scans of a tumour keep its shape.
    """
    dx = (grid.x - centre[0]) / axes[0]
    dy = (grid.y - centre[1]) / axes[1]
    dz = (grid.z - centre[2]) / axes[2]
    d = np.sqrt(dx**2 + dy**2 + dz**2) + 1e-6
    ux, uy, uz = dx / d, dy / d, dz / d
    lobes = _unit_vectors(rng_shape, 6)
    kappa = rng_shape.uniform(1.5, 5.0, 6)
    amp = rng_shape.normal(0, 0.7, 6)
    spikes = _unit_vectors(rng_shape, 14)
    s_kappa = rng_shape.uniform(40, 160, 14)
    s_amp = rng_shape.uniform(0.4, 1.3, 14)
    n_spikes = round(spiculation * 14)
    f = np.ones_like(d)
    for v, k, a in zip(lobes, kappa, amp, strict=True):
        f += irregularity * a * (np.exp(k * (ux * v[0] + uy * v[1] + uz * v[2] - 1)) - 0.3)
    for v, k, a in zip(spikes[:n_spikes], s_kappa[:n_spikes], s_amp[:n_spikes], strict=True):
        f += a * np.exp(k * (ux * v[0] + uy * v[1] + uz * v[2] - 1))
    r = radius * np.clip(f, 0.45, None)
    return r - d, r


def _vessels(grid: _Grid, rng: np.random.Generator, toward: np.ndarray, n: int) -> np.ndarray:
    """Soft occupancy of tapering pulmonary vessels running from the hilum towards the periphery."""
    rad = np.zeros(grid.shape, dtype=np.float32)
    lo = np.array([grid.x.min(), grid.y.min(), grid.z.min()])
    step = 0.5
    n_steps = int(3 * grid.half / step)
    for _ in range(n):
        p0 = -toward * grid.half * 1.1 + rng.normal(0, grid.half * 0.5, 3)
        p0[2] = rng.uniform(lo[2], -lo[2])
        d0 = toward + rng.normal(0, 0.45, 3)
        direc = d0 / np.linalg.norm(d0) + np.cumsum(rng.normal(0, 0.06, (n_steps, 3)), axis=0)
        direc /= np.linalg.norm(direc, axis=1, keepdims=True)
        pts = p0 + step * np.cumsum(direc, axis=0)
        r = np.linspace(rng.uniform(1.6, 3.2), rng.uniform(0.5, 1.0), n_steps).astype(np.float32)
        idx = np.round((pts - lo) / np.asarray(grid.spacing)).astype(int)
        ok = np.all((idx >= 0) & (idx < np.asarray(grid.shape)), axis=1)
        np.maximum.at(rad, tuple(idx[ok].T), r[ok])
    centre = rad > 0
    if not centre.any():
        return np.zeros(grid.shape, dtype=np.float32)
    dist, ind = ndimage.distance_transform_edt(~centre, sampling=grid.spacing, return_indices=True)
    r_near = rad[tuple(ind)]
    return expit((r_near - dist) / 0.45).astype(np.float32)


def render_ct(params: dict[str, Any], shape: tuple[int, int, int], spacing: tuple[float, float, float],
              anatomy_seed: int, shape_seed: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render one scan; returns (HU volume int16, mask uint8). See the module docstring for the scene."""
    grid = _Grid(shape, spacing)
    anat = np.random.default_rng(anatomy_seed)
    theta = anat.uniform(0, 2 * np.pi)
    toward = np.array([np.cos(theta), np.sin(theta), 0.0])  # towards the chest wall / mediastinum
    centre = np.concatenate([anat.normal(0, 2.5, 2), anat.normal(0, 3.0, 1)])
    radius = float(params.get("radius_mm", 10.0))
    central = params.get("site") == "central"
    postop = bool(params.get("postop", False))
    wall_gap = float(params.get("wall_gap_mm", anat.uniform(1.0, 16.0)))
    r_ref = float(params.get("reference_radius_mm", radius))  # pre-treatment size fixes the anatomy
    if central:  # central tumours abut the mediastinum
        d_wall = min(0.85 * r_ref + anat.uniform(-2.0, 4.0), 0.88 * grid.half)
    else:
        d_wall = min(r_ref + wall_gap, 0.88 * grid.half)

    u = (grid.x - centre[0]) * toward[0] + (grid.y - centre[1]) * toward[1]
    t = -(grid.x - centre[0]) * toward[1] + (grid.y - centre[1]) * toward[0]
    depth = u - (d_wall - t**2 / (2 * anat.uniform(90, 160)))  # > 0 inside the wall / mediastinum
    depth = depth + 0 * grid.z

    # Lung parenchyma: dependent gradient, texture, emphysema.
    hu = -865 + 45 * (grid.y - grid.y.min()) / (2 * grid.half) + 14 * _field(rng, shape, grid.sigma_mm(2.0))
    hu = hu + 0 * grid.z
    emph = float(params.get("emphysema", 0.0))
    if emph > 0.01:
        laa = _field(anat, shape, grid.sigma_mm(3.0))
        thr = np.quantile(laa, 1 - emph)
        hu = np.where(laa > thr, -965 + 10 * _field(rng, shape, 1.0), hu)
    vessel = _vessels(grid, anat, toward, int(anat.integers(5, 10)))
    hu = hu * (1 - vessel) + 40 * vessel

    # Chest wall (peripheral) or mediastinum (central).
    if central:
        wall = np.full(shape, -95.0, dtype=np.float32) + 12 * _field(rng, shape, 1.0)
        for k in range(2):
            vc = centre + toward * (d_wall + anat.uniform(14, 28)) + np.array([*anat.normal(0, 10, 2), 0.0])
            vr = anat.uniform(9, 15)
            dd = np.sqrt((grid.x - vc[0]) ** 2 + (grid.y - vc[1]) ** 2) + 0 * grid.z
            wall = np.where(dd < vr, 42.0 + k * 3, wall)
        for _ in range(int(anat.integers(1, 4))):
            nc = centre + toward * (d_wall + anat.uniform(3, 12)) + anat.normal(0, 8, 3)
            dd = np.sqrt((grid.x - nc[0]) ** 2 + (grid.y - nc[1]) ** 2 + ((grid.z - nc[2]) / 1.5) ** 2)
            wall = np.where(dd < anat.uniform(3, 7), 35.0, wall)
        wall = np.where(depth < 2.0, 30.0, wall)
    else:
        muscle = anat.uniform(9, 16)
        fat = anat.uniform(4, 28)
        wall = np.full(shape, 48.0, dtype=np.float32)
        rib_phase = anat.uniform(0, 24)
        rib = ((grid.z + 0.35 * t + rib_phase) % 24.0 < 9.0) & (depth > 2.5) & (depth < 10.5)
        wall = np.where(rib, 420.0, wall)
        wall = np.where(depth < 2.0, 32.0, wall)
        wall = np.where(depth > muscle, -105.0, wall)
        wall = np.where(depth > muscle + fat, 30.0, wall)
        wall = np.where(depth > muscle + fat + 2.0, -1000.0, wall)
        wall = wall + 8 * _field(rng, shape, 1.0)
    in_wall = expit(depth / 0.5)
    hu = hu * (1 - in_wall) + wall * in_wall

    if postop:
        hu, mask = _surgical_bed(grid, hu, params, anat, rng, centre, toward, depth)
    else:
        hu, mask = _tumour(grid, hu, params, rng, np.random.default_rng(shape_seed), centre, radius)

    blur = float(params.get("blur_vox", 0.7))
    hu = ndimage.gaussian_filter(hu.astype(np.float32), blur)
    hu = hu + float(params.get("noise_hu", 18.0)) * _field(rng, shape, 0.6)
    out = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    return out, mask.astype(np.uint8)


def _tumour(grid: _Grid, hu: np.ndarray, p: dict[str, Any], rng: np.random.Generator,
            rng_shape: np.random.Generator, centre: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    sd, r = _blob(grid, centre, radius, rng_shape, float(p.get("irregularity", 0.2)),
                  float(p.get("spiculation", 0.0)))
    het = float(p.get("heterogeneity", 0.3))
    solid = 36 + 26 * het * _field(rng, grid.shape, grid.sigma_mm(1.0 + 2.5 * (1 - het)))
    necro = float(p.get("necrosis", 0.0))
    if necro > 0.02:
        core = (sd / r) > 1 - necro + 0.15 * _field(rng, grid.shape, grid.sigma_mm(2.0))
        solid = np.where(core, 14 + 8 * _field(rng, grid.shape, 1.0), solid)
        if p.get("cavitation", False):
            cav = (sd / r) > 1 - 0.5 * necro
            solid = np.where(cav, -880.0, solid)
    ggo = float(p.get("ggo", 0.0))
    if ggo > 0.02:
        rim = (sd / r) < ggo
        solid = np.where(rim, -520 + 90 * _field(rng, grid.shape, grid.sigma_mm(1.5)), solid)
    occ = expit(sd / 0.6)
    hu = hu * (1 - occ) + solid * occ
    mask = sd > 0
    if not mask.any():
        mask[tuple(np.array(grid.shape) // 2)] = True
    return hu, mask


def _surgical_bed(grid: _Grid, hu: np.ndarray, p: dict[str, Any], anat: np.random.Generator,
                  rng: np.random.Generator, centre: np.ndarray, toward: np.ndarray,
                  depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Post-lobectomy bed: fibrotic consolidation + staple line, effusion, optional residual nodule."""
    bed = float(p.get("bed_mm", 12.0))
    bc = centre - toward * anat.uniform(0, 5)
    axes = (1.0, anat.uniform(0.4, 0.65), anat.uniform(0.35, 0.6))
    rot = anat.uniform(0, np.pi)
    gx = grid.x - bc[0]
    gy = grid.y - bc[1]
    rx = np.cos(rot) * gx + np.sin(rot) * gy
    ry = -np.sin(rot) * gx + np.cos(rot) * gy
    rgrid = _Grid(grid.shape, grid.spacing)
    rgrid.x, rgrid.y, rgrid.z = rx + 0 * ry, ry + 0 * rx, grid.z - bc[2]
    sd, _ = _blob(rgrid, np.zeros(3), bed, rng, 0.35, 0.25, axes)
    strands = _field(rng, grid.shape, grid.sigma_mm(0.8)) + 0.8 * _field(rng, grid.shape, grid.sigma_mm(3.0))
    consol = -70 + 75 * strands * float(p.get("bed_heterogeneity", 0.6))
    occ = expit(sd / 0.8)
    hu = hu * (1 - occ) + consol * occ
    mask = sd > 0
    # Staple line along the bed's long axis.
    line = (np.abs(ry) < 0.7) & (np.abs(grid.z - bc[2]) < 0.5 * bed) & (np.abs(rx) < 0.6 * bed) & (sd > -2)
    hu = np.where(line, 1600.0, hu)
    res = float(p.get("residual_mm", 0.0))
    if res > 0.5:
        nc = bc + _unit_vectors(rng, 1)[0] * bed * 0.5
        rsd, _ = _blob(grid, nc, res, rng, 0.4, float(p.get("residual_spiculation", 0.2)))
        het = float(p.get("residual_heterogeneity", 0.5))
        solid = 38 + 28 * het * _field(rng, grid.shape, grid.sigma_mm(1.0 + 2 * (1 - het)))
        rocc = expit(rsd / 0.6)
        hu = hu * (1 - rocc) + solid * rocc
        mask |= rsd > 0
    eff = float(p.get("effusion_mm", 0.0))
    if eff > 0.5:
        fluid = (depth > -eff) & (depth < 0.5) & (grid.y > grid.y.mean() - 0.3 * grid.half)
        hu = np.where(fluid, 12 + 6 * _field(rng, grid.shape, 1.0), hu)
    if not mask.any():
        mask[tuple(np.array(grid.shape) // 2)] = True
    return hu, mask


def write_nifti(volume: np.ndarray, spacing: tuple[float, float, float], path: Path,
                origin: tuple[float, float, float] | None = None) -> None:
    """NIfTI-1 with an mm affine (qform = sform), so image and mask share one grid."""
    affine = np.diag([*spacing, 1.0])
    if origin is None:
        origin = tuple(-(n - 1) / 2 * s for n, s in zip(volume.shape, spacing, strict=True))
    affine[:3, 3] = origin
    img = nib.Nifti1Image(volume, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))

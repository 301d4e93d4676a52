"""Procedural demo data: a small, deterministic segmentation problem that looks like a real one.

Used by ``qgseg demo`` (train + evaluate a small network in minutes on a CPU) and by tests.
Every image is drawn from a seeded :class:`numpy.random.Generator`, so the same seed gives
the same data, and :func:`make_demo_dataset` writes it in the layouts the real readers
consume (a PNG folder for 2D, an nnU-Net v2 / MSD-style NIfTI folder for 3D).

What an image contains, and why:

* **Background**: a smooth bias field, a linear gradient and a multi-scale smooth texture,
  so intensity alone is not constant over the background.
* **Lesions** (1-3, labelled 1): ellipses whose radius is perturbed by a few random Fourier
  harmonics plus fine roughness (irregular boundary), with a soft edge. Their mean contrast
  to the background varies per image in sign and strength (sometimes close to zero), and
  they carry a fine **granular speckle** texture, which is the cue a CNN can learn.
* **Distractors** (never labelled), given the *same polarity and similar strength* as the
  lesions of that image so that no global threshold separates them: thin smooth curves
  (vessels / hairs), smooth homogeneous round blobs without speckle and, sometimes, a
  vignetted corner.
* **Core** (``num_classes=3``, labelled 2): a smaller irregular blob inside each lesion
  with a different, coarse and smooth (mottled, non-speckled) texture and its own offset.
* Per-image contrast, brightness and gamma, then Gaussian noise; values clipped to [0, 1].
* ``channels=3`` gives an RGB-like image: background, lesions and distractors each get
  their own random colour tint. ``spatial_dims=3`` gives a ``(D, H, W)`` volume with
  anisotropic voxels (:data:`DEMO_SPACING_3D`), lesions are perturbed ellipsoids whose
  boundary harmonics drift smoothly with depth, so slices change smoothly.

A per-image oracle global threshold (best threshold and polarity chosen with hindsight)
reaches a mean Dice of only about 0.4 on this data (see ``tests/test_demo_data.py``).
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

#: Voxel size (mm) of 3D demo volumes in array order ``(D, H, W)``; the NIfTI header holds
#: it in ``(X, Y, Z)`` order, i.e. ``(1.0, 1.0, 2.5)``.
DEMO_SPACING_3D: tuple[float, float, float] = (2.5, 1.0, 1.0)
#: Bumped whenever the generator changes, so cached datasets are regenerated.
GENERATOR_VERSION = 1
CLASS_NAMES = ("background", "lesion", "core")
_PARAMS_FILE = "demo_params.json"
# Everything make_demo_dataset may write: removed before regenerating, nothing else is.
_OWNED = ("images", "masks", "unlabeled", "splits", "imagesTr", "labelsTr", "imagesTs",
          "dataset.yaml", "dataset.json", _PARAMS_FILE)


# ----------------------------------------------------------------------------- fields
def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...],
                  sigma: float | Sequence[float]) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit std."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    field -= field.mean()
    return field / (field.std() + 1e-8)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class _Geometry:
    """Pixel/voxel grid in physical units (pixels for 2D, mm for 3D)."""

    def __init__(self, shape: tuple[int, ...], spacing: tuple[float, ...]) -> None:
        self.shape = shape
        self.spacing = spacing
        self.coords = np.meshgrid(
            *[np.arange(n, dtype=np.float64) * s for n, s in zip(shape, spacing)], indexing="ij"
        )
        self.extent = np.array([n * s for n, s in zip(shape, spacing)])
        self.plane = float(min(self.extent[-2:]))  # in-plane size, sets the scale of things

    def sigma(self, phys: float, z_min: float = 0.6) -> tuple[float, ...]:
        """Per-axis Gaussian sigma (in voxels) for an isotropic physical sigma."""
        sig = [phys / s for s in self.spacing]
        if len(sig) == 3:
            sig[0] = max(sig[0], z_min)  # keep a little smoothing across thick slices
        return tuple(sig)

    def random_point(self, rng: np.random.Generator, margin: float) -> np.ndarray:
        lo = np.full(len(self.shape), margin)
        hi = self.extent - margin
        if len(self.shape) == 3:  # in depth, keep the centre in the middle part of the volume
            lo[0], hi[0] = 0.3 * self.extent[0], 0.7 * self.extent[0]
        return rng.uniform(lo, np.maximum(hi, lo + 1e-3))


def _blob(geo: _Geometry, rng: np.random.Generator, radius: float, *, irregular: bool,
          centre: np.ndarray | None = None, margin: float | None = None) -> tuple[np.ndarray, float]:
    """Normalised distance ``rho`` of a (perturbed) ellipse/ellipsoid: inside where rho < 1.

    Returns ``(rho, effective radius)``; the radius converts ``1 - rho`` to physical units
    for soft edges.
    """
    if centre is None:
        centre = geo.random_point(rng, radius * 0.8 if margin is None else margin)
    aspect = rng.uniform(0.55, 1.0) if irregular else rng.uniform(0.75, 1.0)
    a, b = radius / np.sqrt(aspect), radius * np.sqrt(aspect)  # same area as the circle
    ang = rng.uniform(0, np.pi)
    dy = geo.coords[-2] - centre[-2]
    dx = geo.coords[-1] - centre[-1]
    u = np.cos(ang) * dx + np.sin(ang) * dy
    v = -np.sin(ang) * dx + np.cos(ang) * dy
    rho2 = (u / a) ** 2 + (v / b) ** 2
    zn = 0.0
    if len(geo.shape) == 3:
        # Depth half-extent: a fraction of the volume's depth so the blob spans many slices.
        rz = rng.uniform(0.25, 0.42) * geo.extent[0]
        zn = (geo.coords[0] - centre[0]) / rz
        rho2 = rho2 + zn ** 2
    rho = np.sqrt(rho2)
    if irregular:
        theta = np.arctan2(v / b, u / a)
        r_mod = np.ones_like(rho)
        for k in range(2, 7):
            amp = rng.uniform(0.0, 0.22) / k ** 0.6
            # The phase drifts with depth (zn) so 3D slices deform smoothly.
            r_mod += amp * np.cos(k * theta + rng.uniform(0, 2 * np.pi) + rng.normal(0, 1.2) * zn)
        rho = rho / np.maximum(r_mod, 0.35)
        # Fine boundary roughness in physical units.
        rho = rho + 0.06 * _smooth_noise(rng, geo.shape, geo.sigma(2.0, z_min=1.0))
    return rho, radius


def _soft(rho: np.ndarray, radius: float, edge: float) -> np.ndarray:
    """Soft mask from a normalised distance: 0.5 exactly on the boundary rho == 1."""
    return _sigmoid((1.0 - rho) * radius / edge)


def _curves(geo: _Geometry, rng: np.random.Generator, n: int, width: float) -> np.ndarray:
    """Soft mask of ``n`` smooth random curves (vessels / hairs) of the given width."""
    centre = np.zeros(geo.shape, dtype=bool)
    nd = len(geo.shape)
    step = 0.5 * min(geo.spacing[-2:])
    for _ in range(n):
        p = rng.uniform(np.zeros(nd), geo.extent)
        heading = rng.uniform(0, 2 * np.pi)
        turn = 0.0
        dz = rng.normal(0, 0.08) if nd == 3 else 0.0
        length = rng.uniform(0.5, 1.3) * geo.plane
        for _ in range(int(length / step)):
            turn = 0.9 * turn + rng.normal(0, 0.02)  # smooth curvature
            heading += turn
            p = p.copy()
            p[-2] += step * np.sin(heading)
            p[-1] += step * np.cos(heading)
            if nd == 3:
                p[0] += step * dz
            idx = np.round(p / np.asarray(geo.spacing)).astype(int)
            if np.all(idx >= 0) and np.all(idx < geo.shape):
                centre[tuple(idx)] = True
    if not centre.any():
        return np.zeros(geo.shape)
    dist = ndimage.distance_transform_edt(~centre, sampling=geo.spacing)
    return _sigmoid((width / 2 - dist) / 0.5)


def _tint(rng: np.random.Generator, channels: int, spread: float) -> np.ndarray:
    if channels == 1:
        return np.ones(1)
    return rng.uniform(1 - spread, 1 + spread, size=channels)


# ----------------------------------------------------------------------------- one case
def make_demo_case(
    rng: np.random.Generator,
    size: tuple[int, int] = (96, 96),
    num_classes: int = 2,
    spatial_dims: int = 2,
    depth: int = 16,
    channels: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one demo image and its label map.

    Args:
        rng: source of all randomness (same state -> same case).
        size: in-plane ``(H, W)``.
        num_classes: 2 (background, lesion) or 3 (+ core inside lesions).
        spatial_dims: 2 for an image, 3 for a ``(depth, H, W)`` volume with voxel size
            :data:`DEMO_SPACING_3D`.
        depth: number of slices when ``spatial_dims == 3``.
        channels: 1 (grey) or 3 (RGB-like).

    Returns:
        ``(image, label)``: float32 ``(C, *spatial)`` in [0, 1] and int64 ``(*spatial)``.
    """
    if num_classes not in (2, 3):
        raise ValueError(f"demo data has 2 or 3 classes, got num_classes={num_classes}")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    shape = tuple(int(s) for s in size)
    spacing: tuple[float, ...] = (1.0, 1.0)
    if spatial_dims == 3:
        shape = (int(depth), *shape)
        spacing = DEMO_SPACING_3D
    geo = _Geometry(shape, spacing)
    plane_area = geo.extent[-1] * geo.extent[-2]

    # --- background: base level + bias field + gradient + multi-scale smooth texture
    background = (
        rng.uniform(0.35, 0.65)
        + rng.uniform(0.04, 0.12) * _smooth_noise(rng, shape, geo.sigma(geo.plane / 5))
        + sum(rng.uniform(-0.08, 0.08) * (geo.coords[ax] / geo.extent[ax] - 0.5)
              for ax in (-2, -1))
        + rng.uniform(0.01, 0.03) * _smooth_noise(rng, shape, geo.sigma(8.0))
        + rng.uniform(0.01, 0.03) * _smooth_noise(rng, shape, geo.sigma(3.5))
        + rng.uniform(0.004, 0.012) * _smooth_noise(rng, shape, geo.sigma(1.5))
    )

    # --- lesion appearance of this image: polarity and strength vary, speckle always there
    polarity = -1.0 if rng.random() < 0.65 else 1.0
    strength = rng.uniform(0.02, 0.22)
    speckle_amp = rng.uniform(0.08, 0.13)
    edge = rng.uniform(1.0, 2.5)

    # --- lesion geometry, redrawn until the foreground fraction is reasonable
    for _ in range(30):
        n_lesions = int(rng.integers(1, 4))
        frac = rng.uniform(0.09, 0.26) if spatial_dims == 2 else rng.uniform(0.16, 0.34)
        shares = rng.dirichlet(np.full(n_lesions, 2.0))
        rhos, radii = [], []
        for share in shares:
            radius = float(np.sqrt(max(share, 0.15) * frac * plane_area / np.pi))
            rho, r = _blob(geo, rng, radius, irregular=True)
            rhos.append(rho)
            radii.append(r)
        lesion_mask = np.any([r < 1 for r in rhos], axis=0)
        if 0.06 <= lesion_mask.mean() <= 0.36:
            break
    lesion_alpha = np.max([_soft(rho, r, edge) for rho, r in zip(rhos, radii)], axis=0)
    # Boundary roughness can pinch off specks: drop them from the label and fade them out,
    # so a label never holds fragments a few pixels big that no annotator would draw.
    comps, n_comps = ndimage.label(lesion_mask)
    sizes = np.bincount(comps.ravel(), minlength=n_comps + 1)
    specks = (sizes < 0.002 * lesion_mask.size)[comps] & lesion_mask
    lesion_mask &= ~specks
    lesion_alpha = np.where(specks, 0.3 * lesion_alpha, lesion_alpha)
    label = lesion_mask.astype(np.int64)

    speckle = _smooth_noise(rng, shape, geo.sigma(0.9, z_min=0.5))
    lesion_delta = (
        polarity * strength
        + speckle_amp * speckle
        + 0.02 * _smooth_noise(rng, shape, geo.sigma(4.0))
    )

    core_alpha = np.zeros(shape)
    core_delta = np.zeros(shape)
    if num_classes == 3:
        core_rhos = []
        for rho_l, r_l in zip(rhos, radii):
            inside = np.argwhere(rho_l < 0.45)  # centre well inside the lesion
            if len(inside) == 0:
                inside = np.argwhere(rho_l == rho_l.min())
            c = inside[rng.integers(len(inside))] * np.asarray(spacing)
            rho_c, r_c = _blob(geo, rng, r_l * rng.uniform(0.35, 0.55), irregular=True, centre=c)
            core_rhos.append(rho_c)
            core_alpha = np.maximum(core_alpha, _soft(rho_c, r_c, 1.0))
        core_mask = np.any([r < 1 for r in core_rhos], axis=0) & lesion_mask
        label[core_mask] = 2
        core_alpha = core_alpha * lesion_alpha  # the core never leaks outside its lesion
        # Core: its own offset and a coarse smooth mottle instead of the fine speckle.
        core_delta = (
            polarity * strength + rng.choice([-1.0, 1.0]) * rng.uniform(0.10, 0.18)
            + 0.05 * _smooth_noise(rng, shape, geo.sigma(2.5))
        )

    # --- distractors with the lesions' polarity and a similar strength
    d_strength = max(strength, 0.08)
    blob_alpha = np.zeros(shape)
    blob_delta = np.zeros(shape)
    for _ in range(int(rng.integers(1, 4))):
        radius = float(np.sqrt(rng.uniform(0.015, 0.05) * plane_area / np.pi))
        for _try in range(10):
            rho, r = _blob(geo, rng, radius, irregular=False, margin=0.5 * radius)
            a = _soft(rho, r, rng.uniform(0.8, 2.0))
            if (a * lesion_alpha).sum() < 0.05 * a.sum():  # keep blobs off the lesions
                break
        blob_alpha = np.maximum(blob_alpha, a)
        blob_delta = np.where(a > 0.01, polarity * d_strength * rng.uniform(0.9, 1.4), blob_delta)
    curve_alpha = _curves(geo, rng, int(rng.integers(1, 5)), rng.uniform(1.5, 3.2))
    curve_delta = polarity * d_strength * rng.uniform(1.0, 1.6)
    vignette = np.zeros(shape)
    if rng.random() < 0.5:
        corner = np.array([rng.choice([0.0, e]) for e in geo.extent[-2:]])
        d2 = (geo.coords[-2] - corner[0]) ** 2 + (geo.coords[-1] - corner[1]) ** 2
        vignette = np.exp(-d2 / (2 * (rng.uniform(0.25, 0.4) * geo.plane) ** 2))
        vignette *= polarity * d_strength * rng.uniform(1.0, 1.5)

    # --- compose per channel (tints differ per structure for RGB-like images)
    bg_tint = _tint(rng, channels, 0.15)
    les_tint = _tint(rng, channels, 0.35)
    core_tint = _tint(rng, channels, 0.35)
    dis_tint = _tint(rng, channels, 0.35)
    gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
    contrast = rng.uniform(0.75, 1.3)
    brightness = rng.uniform(-0.08, 0.08)
    noise_sd = rng.uniform(0.01, 0.03)
    out = np.empty((channels, *shape), dtype=np.float32)
    for c in range(channels):
        img = (
            background * bg_tint[c]
            + dis_tint[c] * (vignette + blob_alpha * blob_delta)
            + lesion_alpha * (1 - core_alpha) * lesion_delta * les_tint[c]
            + core_alpha * core_delta * core_tint[c]
            + curve_alpha * curve_delta * dis_tint[c]  # hairs/vessels lie on top of everything
        )
        img = np.clip(img, 0.0, 1.0) ** gamma
        img = contrast * (img - 0.5) + 0.5 + brightness
        img = img + noise_sd * rng.standard_normal(shape)
        out[c] = np.clip(img, 0.0, 1.0)
    return out, label


# ----------------------------------------------------------------------------- dataset
def _params(seed: int, n_labeled: int, n_unlabeled: int, n_val: int, n_test: int,
            size: Sequence[int], num_classes: int, spatial_dims: int, channels: int,
            depth: int) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION, "seed": int(seed),
        "n_labeled": int(n_labeled), "n_unlabeled": int(n_unlabeled), "n_val": int(n_val),
        "n_test": int(n_test), "size": [int(s) for s in size], "num_classes": int(num_classes),
        "spatial_dims": int(spatial_dims), "channels": int(channels),
        "depth": int(depth) if spatial_dims == 3 else None,
    }


def _split_ids(p: dict[str, Any]) -> dict[str, list[str]]:
    counts = [("train", p["n_labeled"]), ("val", p["n_val"]), ("test", p["n_test"]),
              ("unlabeled", p["n_unlabeled"])]
    ids: dict[str, list[str]] = {}
    start = 0
    for split, n in counts:
        ids[split] = [f"demo_{i:04d}" for i in range(start, start + n)]
        start += n
    return ids


def _expected_files(out: Path, p: dict[str, Any]) -> list[Path]:
    ids = _split_ids(p)
    labeled = ids["train"] + ids["val"] + ids["test"]
    files = [out / "splits" / f"{s}.txt" for s in ("train", "val", "test")]
    if p["spatial_dims"] == 2:
        files.append(out / "dataset.yaml")
        files += [out / d / f"{i}.png" for i in labeled for d in ("images", "masks")]
        files += [out / "unlabeled" / "images" / f"{i}.png" for i in ids["unlabeled"]]
    else:
        files.append(out / "dataset.json")
        chans = range(p["channels"])
        files += [out / "imagesTr" / f"{i}_{c:04d}.nii.gz" for i in labeled for c in chans]
        files += [out / "labelsTr" / f"{i}.nii.gz" for i in labeled]
        files += [out / "imagesTs" / f"{i}_{c:04d}.nii.gz" for i in ids["unlabeled"]
                  for c in chans]
    return files


def _is_complete(out: Path, p: dict[str, Any]) -> bool:
    try:
        stored = json.loads((out / _PARAMS_FILE).read_text())
    except (OSError, ValueError):
        return False
    return stored == p and all(f.is_file() for f in _expected_files(out, p))


def _write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG")


def _write_nifti(path: Path, arr_dhw: np.ndarray) -> None:
    import nibabel as nib

    # Array (D, H, W) -> NIfTI (X=W, Y=H, Z=D); the voxel size goes into the affine/zooms.
    sz, sy, sx = DEMO_SPACING_3D
    affine = np.diag([sx, sy, sz, 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(arr_dhw.transpose(2, 1, 0)), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    # nibabel writes .gz with mtime 0, so identical data gives identical bytes.
    nib.save(img, str(path))


def make_demo_dataset(
    out_dir: str | Path,
    seed: int = 0,
    n_labeled: int = 16,
    n_unlabeled: int = 64,
    n_val: int = 8,
    n_test: int = 16,
    size: tuple[int, int] = (96, 96),
    num_classes: int = 2,
    spatial_dims: int = 2,
    channels: int = 1,
    depth: int = 16,
) -> Path:
    """Write a demo dataset to ``out_dir`` and return ``out_dir``.

    2D layout (``format: folder``)::

        dataset.yaml  images/<id>.png  masks/<id>.png  unlabeled/images/<id>.png
        splits/{train,val,test}.txt

    Masks are {0, 255} for 2 classes, class indices for 3. 3D layout (nnU-Net v2)::

        dataset.json  imagesTr/<id>_0000.nii.gz  labelsTr/<id>.nii.gz
        imagesTs/<id>_0000.nii.gz (unlabeled)  splits/{train,val,test}.txt

    Ids are ``demo_0000``, ... numbered over train, val, test, then unlabeled. Each case
    has its own seed spawned from ``seed``, so the files are byte-identical for a seed.
    If ``out_dir`` already holds a complete dataset made with the same parameters
    (``demo_params.json``), nothing is regenerated; otherwise the files this function
    owns are removed and written anew (other files in ``out_dir`` are left alone).
    """
    out = Path(out_dir)
    p = _params(seed, n_labeled, n_unlabeled, n_val, n_test, size, num_classes,
                spatial_dims, channels, depth)
    if _is_complete(out, p):
        return out
    if min(n_labeled, n_unlabeled, n_val, n_test) < 0:
        raise ValueError("split sizes must be >= 0")
    out.mkdir(parents=True, exist_ok=True)
    for name in _OWNED:  # stale files of another parameter set must not leak into this one
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    ids = _split_ids(p)
    order = [(s, i) for s in ("train", "val", "test", "unlabeled") for i in ids[s]]
    seeds = np.random.SeedSequence(seed).spawn(len(order))
    names = list(CLASS_NAMES[:num_classes])
    if spatial_dims == 2:
        for d in ("images", "masks", "unlabeled/images"):
            (out / d).mkdir(parents=True, exist_ok=True)
    else:
        for d in ("imagesTr", "labelsTr", "imagesTs"):
            (out / d).mkdir(parents=True, exist_ok=True)

    for (split, case_id), ss in zip(order, seeds):
        image, label = make_demo_case(np.random.default_rng(ss), size=tuple(size),
                                      num_classes=num_classes, spatial_dims=spatial_dims,
                                      depth=depth, channels=channels)
        if spatial_dims == 2:
            pix = np.round(image * 255).astype(np.uint8)
            pix = pix[0] if channels == 1 else np.moveaxis(pix, 0, -1)
            img_dir = out / ("unlabeled/images" if split == "unlabeled" else "images")
            _write_png(img_dir / f"{case_id}.png", pix)
            if split != "unlabeled":
                mask = label * 255 if num_classes == 2 else label
                _write_png(out / "masks" / f"{case_id}.png", mask.astype(np.uint8))
        else:
            img_dir = out / ("imagesTs" if split == "unlabeled" else "imagesTr")
            for c in range(channels):
                _write_nifti(img_dir / f"{case_id}_{c:04d}.nii.gz", image[c])
            if split != "unlabeled":
                _write_nifti(out / "labelsTr" / f"{case_id}.nii.gz", label.astype(np.uint8))

    (out / "splits").mkdir(exist_ok=True)
    for split in ("train", "val", "test"):
        (out / "splits" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids[split]))
    if spatial_dims == 2:
        (out / "dataset.yaml").write_text(
            "# qgseg procedural demo dataset (qgseg.data.demo)\n"
            "format: folder\n"
            f"classes: [{', '.join(names)}]\n"
        )
    else:
        channel_names = {"0": "demo"} if channels == 1 else {"0": "R", "1": "G", "2": "B"}
        meta = {
            "name": "qgseg-demo",
            "channel_names": channel_names,
            "labels": {n: i for i, n in enumerate(names)},
            "numTraining": n_labeled + n_val + n_test,
            "file_ending": ".nii.gz",
        }
        (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    # Written last: its presence (with matching content) marks a complete dataset.
    (out / _PARAMS_FILE).write_text(json.dumps(p, indent=2) + "\n")
    return out

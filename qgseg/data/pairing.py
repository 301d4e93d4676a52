"""Pair image files with their mask files by file-name conventions."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from qgseg.data.io import strip_ext

# Mask-name conventions seen in public datasets (PH2 "_lesion", ISIC "_segmentation"/"_Segmentation",
# Kvasir-style identical names, "-mask"). Matching is case-insensitive.
MASK_SUFFIXES: tuple[str, ...] = (
    "_lesion", "_mask", "_masks", "_segmentation", "_seg", "_label", "_labels", "_gt", "_contour",
    "_annotation", "-mask", "-seg", "-label", "-gt",
)
AUTO_PATTERNS: tuple[str, ...] = ("{stem}",) + tuple("{stem}" + s for s in MASK_SUFFIXES)
# Image-name suffixes some datasets add ("X_orig.jpg" + "X_contour.png"); stripped for the case id
# when the mask is named after the stripped stem.
IMAGE_SUFFIXES: tuple[str, ...] = ("_orig", "_image", "_img", "_original", "_raw")
# Second and further masks of one image: "X_mask_1", "X_mask-2", "X_mask (3)".
_INDEX_RE = re.compile(r"^(.*?)(?:[_-]\d+| ?\(\d+\))$")
_MASK_NAME_RE = re.compile(
    "(" + "|".join(re.escape(s) for s in MASK_SUFFIXES) + r")(?:[_-]\d+| ?\(\d+\))?$", re.IGNORECASE
)
# CVC-ColonDB names masks "pN" for frame "N"; only applied to numeric stems to avoid false matches.
NUMERIC_PATTERNS: tuple[str, ...] = ("p{stem}",)


@dataclass
class PairingResult:
    """Outcome of :func:`pair_files`.

    Attributes:
        pairs: ``(case_id, image, mask)`` with case_id the image stem, in image order.
        unpaired_images: images with no matching mask.
        unpaired_masks: masks matched by no image.
        ambiguous: images with several candidate masks, or sharing a stem with another image;
            they are neither paired nor counted as unpaired.
    """

    pairs: list[tuple[str, Path, Path]] = field(default_factory=list)
    unpaired_images: list[Path] = field(default_factory=list)
    unpaired_masks: list[Path] = field(default_factory=list)
    ambiguous: list[tuple[Path, list[Path]]] = field(default_factory=list)
    extra_masks: dict[Path, list[Path]] = field(default_factory=dict)

    def notes(self) -> list[str]:
        """Non-fatal information: images whose several masks are merged."""
        return [f"{img.name}: {1 + len(extra)} masks merged ({', '.join(m.name for m in [mask, *extra])})"
                for _, img, mask in self.pairs if (extra := self.extra_masks.get(img))]

    def problems(self) -> list[tuple[Path, str]]:
        """Human-readable ``(path, message)`` for every file that could not be paired."""
        out: list[tuple[Path, str]] = []
        for img in self.unpaired_images:
            out.append((img, "image has no matching mask"))
        for m in self.unpaired_masks:
            out.append((m, "mask has no matching image"))
        for img, candidates in self.ambiguous:
            names = ", ".join(c.name for c in candidates)
            out.append((img, f"ambiguous pairing: several files match ({names}); rename or remove all but one"))
        return out


def _check_pattern(name: str, pattern: str | None) -> None:
    if pattern is not None and "{stem}" not in pattern:
        raise ValueError(f"{name} must contain '{{stem}}', got {pattern!r}")


def image_base(stem: str, image_pattern: str | None = None) -> str | None:
    """Case stem of an image named with an image suffix (``X_orig`` -> ``X``), else ``None``.

    ``image_pattern`` (e.g. ``"{stem}_orig"``) replaces the automatic :data:`IMAGE_SUFFIXES`.
    """
    if image_pattern is not None:
        m = re.fullmatch(re.escape(image_pattern).replace(re.escape("{stem}"), "(.+)"), stem, re.IGNORECASE)
        return m.group(1) if m else None
    low = stem.lower()
    for suffix in IMAGE_SUFFIXES:
        if low.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return None


def mask_base(stem: str) -> str | None:
    """Stem of the image a mask-named file belongs to (``X_mask_2`` -> ``X``), else ``None``."""
    m = _MASK_NAME_RE.search(stem)
    return stem[: m.start()] if m and m.start() > 0 else None


def split_mask_named(files: list[Path], mask_pattern: str | None = None,
                     image_pattern: str | None = None) -> tuple[list[Path], list[Path]]:
    """Split one folder's files into ``(images, masks)``: a mask is a file named like a mask of
    another file of the folder (``X_mask.png`` beside ``X.png`` or ``X_orig.jpg``).

    ``mask_pattern`` (``"{stem}_contour"``) states the mask naming explicitly: every file that
    matches it is a mask, whether or not its image is present.
    """
    _check_pattern("mask_pattern", mask_pattern)
    _check_pattern("image_pattern", image_pattern)
    stems = {strip_ext(p).lower() for p in files}
    bases = stems | {b.lower() for p in files if (b := image_base(strip_ext(p), image_pattern))}
    masks: list[Path] = []
    for p in files:
        stem = strip_ext(p)
        if mask_pattern is not None:
            rx = re.escape(mask_pattern).replace(re.escape("{stem}"), "(.+)")
            if re.fullmatch(rx + r"(?:[_-]\d+| ?\(\d+\))?", stem, re.IGNORECASE):
                masks.append(p)
            continue
        base = mask_base(stem)
        if base is not None and base.lower() in bases and base.lower() != stem.lower():
            masks.append(p)
    chosen = set(masks)
    return [p for p in files if p not in chosen], masks


def pair_files(images: list[Path], masks: list[Path], mask_pattern: str | None = None,
               image_pattern: str | None = None, merge_numbered: bool = False) -> PairingResult:
    """Match each image with its mask by stem.

    ``mask_pattern`` (e.g. ``"{stem}_seg"``, ``"mask_{stem}"``) replaces the automatic patterns.
    An image named ``X_orig`` (:data:`IMAGE_SUFFIXES`, or ``image_pattern``) also matches the
    masks of ``X`` and then has case id ``X``. Two masks matching one image, or one mask
    matching two images, are reported as ambiguous rather than silently resolved. With
    ``merge_numbered``, numbered further masks (``X_mask_1``, ``X_mask_2`` beside or instead of
    ``X_mask``) are ``extra_masks`` of that image, for a caller that merges them; without it
    they stay unpaired masks.
    """
    images = [Path(p) for p in images]
    masks = [Path(p) for p in masks]
    _check_pattern("mask_pattern", mask_pattern)
    _check_pattern("image_pattern", image_pattern)

    by_stem: dict[str, list[Path]] = {}
    for m in masks:
        by_stem.setdefault(strip_ext(m).lower(), []).append(m)

    image_stems: dict[str, list[Path]] = {}
    for img in images:
        image_stems.setdefault(strip_ext(img), []).append(img)

    result = PairingResult()
    candidates_of: dict[Path, list[Path]] = {}
    claimed_by: dict[Path, list[Path]] = {}
    case_id: dict[Path, str] = {}
    numbered: dict[str, Path] = {}  # "x_mask" (a mask name, lower case) -> image, for numbered extra masks
    for img in images:
        stem = strip_ext(img)
        if len(image_stems[stem]) > 1:
            # x.png and x.jpg in one folder would give two cases with one id
            others = [p for p in image_stems[stem] if p != img]
            result.ambiguous.append((img, others))
            continue
        if mask_pattern is not None:
            patterns: tuple[str, ...] = (mask_pattern,)
        else:
            patterns = AUTO_PATTERNS + (NUMERIC_PATTERNS if stem.isdigit() else ())
        found: list[Path] = []
        base = image_base(stem, image_pattern)
        case_id[img] = stem
        for key in [stem] + ([base] if base else []):
            for pat in patterns:
                name = pat.format(stem=key).lower()
                if pat != "{stem}":  # a numbered plain stem ("x_1") is another image's name, not a mask
                    numbered.setdefault(name, img)
                hits = [m for m in by_stem.get(name, []) if m not in found and m != img]
                if hits and key != stem:
                    case_id[img] = key
                found.extend(hits)
        candidates_of[img] = found
        for m in found:
            claimed_by.setdefault(m, []).append(img)

    used: set[Path] = set()
    for img in images:
        if img not in candidates_of:
            continue
        found = candidates_of[img]
        if not found:
            result.unpaired_images.append(img)
        elif len(found) > 1:
            result.ambiguous.append((img, found))
            used.update(found)
        elif len(claimed_by[found[0]]) > 1:
            others = [p for p in claimed_by[found[0]] if p != img]
            result.ambiguous.append((img, [found[0], *others]))
            used.add(found[0])
        else:
            result.pairs.append((case_id[img], img, found[0]))
            used.add(found[0])
    if merge_numbered:
        _attach_numbered(result, masks, used, numbered, case_id)
    result.unpaired_masks = [m for m in masks if m not in used]
    return result


def _attach_numbered(result: PairingResult, masks: list[Path], used: set[Path], numbered: dict[str, Path],
                     case_id: dict[Path, str]) -> None:
    """Give numbered masks (``X_mask_2``) to the image whose mask name they extend."""
    paired = {img: k for k, (_, img, _) in enumerate(result.pairs)}
    unpaired = set(result.unpaired_images)
    for m in masks:
        if m in used:
            continue
        hit = _INDEX_RE.match(strip_ext(m))
        img = numbered.get(hit.group(1).lower()) if hit else None
        if img is None:
            continue
        if img in paired:
            result.extra_masks.setdefault(img, []).append(m)
        elif img in unpaired:  # only numbered masks (X_mask_1, X_mask_2): the first is the main one
            unpaired.discard(img)
            result.unpaired_images.remove(img)
            paired[img] = len(result.pairs)
            result.pairs.append((case_id[img], img, m))
        else:
            continue  # ambiguous images stay reported as such
        used.add(m)

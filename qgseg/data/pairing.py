"""Pair image files with their mask files by file-name conventions."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qgseg.data.io import strip_ext

# Mask-name conventions seen in public datasets (PH2 "_lesion", ISIC "_segmentation"/"_Segmentation",
# Kvasir-style identical names, "-mask"). Matching is case-insensitive.
AUTO_PATTERNS: tuple[str, ...] = (
    "{stem}",
    "{stem}_lesion",
    "{stem}_mask",
    "{stem}_segmentation",
    "{stem}-mask",
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


def pair_files(images: list[Path], masks: list[Path], mask_pattern: str | None = None) -> PairingResult:
    """Match each image with its mask by stem.

    ``mask_pattern`` (e.g. ``"{stem}_seg"``, ``"mask_{stem}"``) replaces the automatic patterns.
    Two masks matching one image, or one mask matching two images, are reported as ambiguous
    rather than silently resolved.
    """
    images = [Path(p) for p in images]
    masks = [Path(p) for p in masks]
    if mask_pattern is not None and "{stem}" not in mask_pattern:
        raise ValueError(f"mask_pattern must contain '{{stem}}', got {mask_pattern!r}")

    by_stem: dict[str, list[Path]] = {}
    for m in masks:
        by_stem.setdefault(strip_ext(m).lower(), []).append(m)

    image_stems: dict[str, list[Path]] = {}
    for img in images:
        image_stems.setdefault(strip_ext(img), []).append(img)

    result = PairingResult()
    candidates_of: dict[Path, list[Path]] = {}
    claimed_by: dict[Path, list[Path]] = {}
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
        for pat in patterns:
            for m in by_stem.get(pat.format(stem=stem).lower(), []):
                if m not in found and m != img:
                    found.append(m)
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
            result.pairs.append((strip_ext(img), img, found[0]))
            used.add(found[0])
    result.unpaired_masks = [m for m in masks if m not in used]
    return result

"""Variable-quality mask sampler: turns ground-truth masks into training targets for the
quality predictor, i.e. pairs (corrupted mask, true per-class Dice) with a wide Dice spread.

Each sample of a batch independently draws a *category* (identity, single corruption,
chain, swap with another case, heavy corruption, catastrophic, early-network blob, or a
weak network's prediction), then the samples are grouped by corruption name so every
corruption runs once per batch on its subset (fast; no per-sample Python work).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import torch
from torch import Tensor

from qgseg.quality.corruptions import (
    CORRUPTIONS,
    _rand,
    apply_corruption,
    chain_pool,
    dice_per_class,
    list_corruptions,
    swap_indices,
)

CATEGORY_NAMES: tuple[str, ...] = ("identity", "single", "chained", "swap", "heavy", "catastrophic", "blob", "weak")


@dataclass
class SamplerConfig:
    """Category probabilities (normalised to sum 1 in ``__post_init__``) and options.

    ``soft_fraction``: probability that a non-catastrophic, non-weak output is turned into
    a probability map. ``balance_bins``: default number of Dice bins for
    :meth:`VariableQualitySampler.balanced_sample` (None = no balancing configured).
    """

    identity: float = 0.20
    single: float = 0.28
    chained: float = 0.18
    swap: float = 0.10
    heavy: float = 0.12
    catastrophic: float = 0.05
    blob: float = 0.07
    weak: float = 0.0
    soft_fraction: float = 0.15
    balance_bins: int | None = None

    def __post_init__(self) -> None:
        probs = {c: float(getattr(self, c)) for c in CATEGORY_NAMES}
        for c, p in probs.items():
            if not p >= 0 or p == float("inf"):
                raise ValueError(f"probability of category {c!r} must be finite and >= 0, got {p}")
        total = sum(probs.values())
        if total <= 0:
            raise ValueError("at least one category probability must be > 0")
        for c, p in probs.items():
            setattr(self, c, p / total)
        if not 0.0 <= float(self.soft_fraction) <= 1.0:
            raise ValueError(f"soft_fraction must be in [0, 1], got {self.soft_fraction}")
        if self.balance_bins is not None and int(self.balance_bins) < 2:
            raise ValueError(f"balance_bins must be >= 2 or None, got {self.balance_bins}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SamplerConfig":
        """Build from a config mapping; unknown keys (e.g. misspelt categories) are rejected."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown sampler config keys {unknown}; known: {sorted(known)}")
        return cls(**dict(d))

    def probabilities(self, weak_available: bool) -> dict[str, float]:
        """Category probabilities; without weak predictions their mass is spread proportionally."""
        probs = {c: float(getattr(self, c)) for c in CATEGORY_NAMES}
        if not weak_available:
            probs["weak"] = 0.0
        total = sum(probs.values())
        if total <= 0:  # only "weak" was configured and none given: fall back to single
            return {c: float(c == "single") for c in CATEGORY_NAMES}
        return {c: p / total for c, p in probs.items()}


@dataclass
class SampleBatch:
    """Corrupted masks with their targets.

    ``index[i]`` is the row of the input batch that sample ``i`` was made from (identity
    for :meth:`~VariableQualitySampler.sample`, repeated for ``sample_k``).
    """

    masks: Tensor
    dice: Tensor
    category: list[str]
    names: list[str]
    index: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.masks.shape[0]


class VariableQualitySampler:
    """Draws corrupted masks with a configurable mix of quality categories."""

    def __init__(self, config: SamplerConfig | None = None, spatial_dims: int = 2, num_classes: int = 1) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.config = config or SamplerConfig()
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        self.single_pool = chain_pool(spatial_dims, num_classes)
        self.catastrophic_pool = list_corruptions(spatial_dims, num_classes, ("catastrophic",))
        self.blob_pool = list_corruptions(spatial_dims, num_classes, ("blob",))
        self.soft_pool = list_corruptions(spatial_dims, num_classes, ("soft",))

    # ------------------------------------------------------------------ helpers
    def _check(self, masks: Tensor) -> None:
        if masks.dim() != self.spatial_dims + 2 or masks.shape[1] != self.num_classes:
            raise ValueError(f"expected (B, {self.num_classes}, <{self.spatial_dims} spatial dims>) masks, "
                             f"got {tuple(masks.shape)}")

    @staticmethod
    def _apply_grouped(out: Tensor, rows: list[int], names: list[str], strength: Tensor,
                       gen: torch.Generator) -> None:
        """In place: ``out[rows[j]] = corruption names[j]`` at ``strength[rows[j]]``, one call per name."""
        groups: dict[str, list[int]] = {}
        for r, nm in zip(rows, names):
            if nm != "none":
                groups.setdefault(nm, []).append(r)
        for nm in sorted(groups):  # sorted: deterministic order of generator draws
            idx = torch.tensor(groups[nm], device=out.device)
            # index_select and per-row copy_: same as out[idx] (=) but ~3x cheaper on CPU than
            # advanced indexing (this runs ~50 times a batch; groups hold 1-3 rows)
            res = apply_corruption(nm, out.index_select(0, idx), gen, strength[idx])
            for j, r in enumerate(groups[nm]):
                out[r].copy_(res[j])

    @staticmethod
    def _choice(gen: torch.Generator, n: int, k: int) -> list[int]:
        return torch.randint(k, (n,), generator=gen, device=gen.device).tolist() if n else []

    # ------------------------------------------------------------------ sampling
    def sample(self, masks: Tensor, gen: torch.Generator, weak: Tensor | None = None,
               groups: Tensor | None = None) -> SampleBatch:
        """Corrupt each mask of ``masks`` (B, K, *spatial) according to a random category.

        ``weak`` (B, S, K, *spatial): S candidate predictions of weak networks per sample; the
        "weak" category picks one of them. Without it, its probability is redistributed.
        ``groups`` (B,): the source image of each row, when a batch holds several rows of one
        image (``sample_k``, batches drawn with replacement). A swap never takes its mask from
        a row of the same image; when no other image is in the batch it mirrors the mask.
        """
        self._check(masks)
        truth = masks.float()
        b, dev = truth.shape[0], truth.device
        use_weak = weak is not None and weak.shape[1] > 0 and weak.shape[0] == b
        probs = self.config.probabilities(use_weak)
        p = torch.tensor([probs[c] for c in CATEGORY_NAMES], dtype=torch.float64)
        cat_idx = torch.multinomial(p, b, replacement=True, generator=_cpu(gen)).tolist() if b else []
        cats = [CATEGORY_NAMES[i] for i in cat_idx]
        names = ["identity"] * b
        out = truth.clone()
        # every per-sample random number is drawn up front for the whole batch (reproducible)
        u_strength = _rand(gen, (b,), dev)

        def rows_of(c: str) -> list[int]:
            return [i for i, cc in enumerate(cats) if cc == c]

        # single / heavy / catastrophic / blob: one named corruption per sample
        for cat, pool, strength in (
            ("single", self.single_pool, u_strength),
            ("heavy", self.single_pool, 0.6 + 0.4 * u_strength),
            ("catastrophic", self.catastrophic_pool, u_strength),
            ("blob", self.blob_pool, u_strength),
        ):
            rows = rows_of(cat)
            if not rows:
                continue
            picked = [pool[j] for j in self._choice(gen, len(rows), len(pool))]
            self._apply_grouped(out, rows, picked, strength, gen)
            for r, nm in zip(rows, picked):
                names[r] = nm

        # chained: per-sample sequences of 2-3 links, applied link by link grouped by name
        rows = rows_of("chained")
        if rows:
            lengths = [2 + j for j in self._choice(gen, len(rows), 2)]
            seqs = [[self.single_pool[j] for j in self._choice(gen, 3, len(self.single_pool))] for _ in rows]
            seqs = [s[:n] + ["none"] * (3 - n) for s, n in zip(seqs, lengths)]
            for step in range(3):
                st = 0.7 * _rand(gen, (b,), dev)  # mild links, see corruptions.chain
                self._apply_grouped(out, rows, [s[step] for s in seqs], st, gen)
            for r, s in zip(rows, seqs):
                names[r] = "+".join(n for n in s if n != "none")

        # swap: most similar-area mask of another image in the batch (mirrored mask if there is none)
        rows = rows_of("swap")
        if rows:
            idx_rows = torch.tensor(rows, device=dev)
            group = torch.arange(b, device=dev) if groups is None else torch.as_tensor(groups, device=dev)
            src = swap_indices(truth[idx_rows], truth, gen, exclude=idx_rows, query_groups=group[idx_rows],
                               pool_groups=group)
            found = src >= 0
            out[idx_rows[found]] = truth[src[found]]
            out[idx_rows[~found]] = truth[idx_rows[~found]].flip(-1)
            for r, j in zip(rows, src.tolist()):
                names[r] = f"swap:{j}" if j >= 0 else "swap:mirror"

        # weak network predictions
        rows = rows_of("weak")
        if rows and weak is not None:
            idx_rows = torch.tensor(rows, device=weak.device)
            pick = torch.tensor(self._choice(gen, len(rows), weak.shape[1]), device=weak.device)
            out[idx_rows.to(dev)] = weak[idx_rows, pick].float().to(dev)
            for r, s in zip(rows, pick.tolist()):
                names[r] = f"weak:{s}"

        # optional softening (not for catastrophic outputs or weak predictions)
        if self.config.soft_fraction > 0 and b:
            coin = _rand(gen, (b,), dev).tolist()
            rows = [i for i in range(b) if cats[i] not in ("catastrophic", "weak")
                    and coin[i] < self.config.soft_fraction]
            if rows:
                picked = [self.soft_pool[j] for j in self._choice(gen, len(rows), len(self.soft_pool))]
                self._apply_grouped(out, rows, picked, _rand(gen, (b,), dev), gen)
                for r, nm in zip(rows, picked):
                    names[r] = f"{names[r]}+{nm}"

        # rows last written by apply_corruption are clean already; the others hold input values
        # (truth, swapped truth, weak predictions): clean just those, in place (2 full passes saved)
        for r in (i for i, c in enumerate(cats) if c in ("identity", "swap", "weak")):
            out[r].nan_to_num_(nan=0.0).clamp_(0, 1)
        return SampleBatch(out, dice_per_class(out, truth), cats, names, torch.arange(b, device=dev))

    def sample_k(self, masks: Tensor, gen: torch.Generator, k: int, weak: Tensor | None = None,
                 groups: Tensor | None = None) -> SampleBatch:
        """``k`` corrupted masks per image: output (B*k, ...); rows ``i*k .. i*k+k-1`` come from image ``i``.

        ``groups`` (B,): source image ids when ``masks`` itself repeats images (see :meth:`sample`).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        rep = masks.repeat_interleave(k, 0)
        wrep = weak.repeat_interleave(k, 0) if weak is not None else None
        base = torch.arange(masks.shape[0], device=masks.device) if groups is None else torch.as_tensor(groups)
        sb = self.sample(rep, gen, wrep, groups=base.to(masks.device).repeat_interleave(k))
        sb.index = torch.arange(masks.shape[0], device=masks.device).repeat_interleave(k)
        return sb

    def balanced_sample(self, masks: Tensor, gen: torch.Generator, bins: int | None = None, oversample: int = 3,
                        weak: Tensor | None = None, groups: Tensor | None = None) -> SampleBatch:
        """Flatten the distribution of mean target Dice over ``bins`` equal-width bins.

        Draws ``oversample`` candidates per image (``oversample * B`` in all) and keeps one per
        image, chosen with probability proportional to 1 / (global count of its Dice bin). Keeping
        one candidate per image keeps outputs aligned with the input batch (image i <-> mask i)
        while rare Dice ranges (typically 0.2-0.7) are over-represented.
        """
        bins = int(bins or self.config.balance_bins or 10)
        b = masks.shape[0]
        cand = self.sample_k(masks, gen, oversample, weak, groups=groups)
        mean_d = cand.dice.mean(1)
        bin_id = (mean_d * bins).long().clamp(0, bins - 1)
        counts = torch.bincount(bin_id, minlength=bins).float()
        w = (1.0 / counts[bin_id]).reshape(b, oversample).cpu()
        pick = torch.multinomial(w, 1, generator=_cpu(gen)).squeeze(1)
        rows = (torch.arange(b) * oversample + pick).tolist()
        rows_t = torch.tensor(rows, device=cand.masks.device)
        return SampleBatch(cand.masks[rows_t], cand.dice[rows_t], [cand.category[r] for r in rows],
                           [cand.names[r] for r in rows], torch.arange(b, device=masks.device))

    def fixed_masks(self, masks: Tensor, seed: int, k: int = 1, weak: Tensor | None = None) -> SampleBatch:
        """Deterministic validation/test masks: own CPU generator seeded with ``seed`` (the
        global RNG is never touched), ``k`` per image as in :meth:`sample_k`."""
        gen = torch.Generator(device="cpu")
        gen.manual_seed(int(seed))
        return self.sample_k(masks, gen, k, weak)


def _cpu(gen: torch.Generator) -> torch.Generator:
    """torch.multinomial on CPU tensors needs a CPU generator; derive one from a CUDA generator."""
    if gen.device.type == "cpu":
        return gen
    seed = int(torch.randint(2**62, (1,), generator=gen, device=gen.device))
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return g


__all__ = ["CATEGORY_NAMES", "SamplerConfig", "SampleBatch", "VariableQualitySampler", "CORRUPTIONS"]

"""The 3D path at clinical size, on tiny data: foreground-oversampled patches, sliding-window
validation on whole volumes, a 3D quality predictor trained on patches, memory-bounded scoring,
and guided 3D semi-supervised training (mean teacher + quality weighting) end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config, tiny_dataset

from qgseg.config import ConfigError
from qgseg.data.case import Case
from qgseg.data.preprocess import TensorBank, _random_crop, resize_label
from qgseg.quality.predictor import QualityPredictor
from qgseg.quality.scoring import QualityScorer, label_to_fg, resize_masks


def _tiny_structure_bank(dims: int) -> TensorBank:
    """Two samples of 40^dims with a 2-voxel structure (class 1 in one, class 2 in the other)."""
    shape = (40,) * dims
    cases = []
    for i in range(2):
        label = np.zeros(shape, np.int64)
        label[(slice(30, 32),) * dims] = i + 1
        cases.append(Case(f"c{i}", np.random.default_rng(i).random((1, *shape), dtype=np.float32), label))
    return TensorBank.from_cases(cases, [8] * dims, "zscore", resize=False, model_dims=dims)


@pytest.mark.parametrize("dims", [2, 3])
def test_foreground_oversampling_puts_foreground_in_every_forced_patch(dims):
    bank = _tiny_structure_bank(dims)
    idx = torch.tensor([0, 1] * 6)
    _, y = bank.batch(idx, [8] * dims, torch.Generator().manual_seed(0), fg_oversample=1.0)
    assert all(int(y[i].max()) == int(idx[i]) + 1 for i in range(len(idx)))  # its own class, every patch
    # a share: the last round(n * share) samples of the batch are forced (nnU-Net's rule)
    _, y = bank.batch(idx, [8] * dims, torch.Generator().manual_seed(1), fg_oversample=0.5)
    assert all(int(y[i].max()) > 0 for i in range(6, 12))
    # 0: exactly the uniform random crops of before, with the same draws from the generator
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    x, y = bank.batch(idx, [8] * dims, g1, fg_oversample=0.0)
    ref = [_random_crop(bank.images[i], bank.labels[i], [8] * dims, g2) for i in idx.tolist()]
    assert torch.equal(x, torch.stack([r[0] for r in ref])) and torch.equal(y, torch.stack([r[1] for r in ref]))
    assert torch.equal(g1.get_state(), g2.get_state())


def test_forced_patch_of_an_image_smaller_than_the_patch_is_padded_around_it():
    label = np.zeros((4, 6, 5), np.int64)
    label[3, 5, 4] = 1
    bank = TensorBank.from_cases([Case("s", np.ones((1, 4, 6, 5), np.float32), label)], [8, 8, 8], "none", False, 3)
    x, y = bank.batch(torch.tensor([0]), [8, 8, 8], torch.Generator().manual_seed(0), fg_oversample=1.0)
    assert x.shape == (1, 1, 8, 8, 8) and int(y.sum()) == 1 and float(x.sum()) == 4 * 6 * 5


def test_predictor_patches_are_normalised_as_the_critic_normalises_the_segmenters_patches():
    """Training patches of z-scored samples are z-scored over the patch, like the critic's input and the
    scorer's box (unit-normalised 8-bit samples need nothing: x/255 is the same on any crop)."""
    from qgseg.guidance.critic import QualityCritic
    from qgseg.quality.training import draw_patches
    from qgseg.ssl.base import Batch

    rng = np.random.default_rng(0)
    raw = (rng.random((1, 40, 40, 40)) * 500 - 200).astype(np.float32)
    label = np.zeros((40, 40, 40), np.int64)
    label[5:9, 30:34, 10:14] = 1
    bank = TensorBank.from_cases([Case("ct", raw, label, meta={"dtype": "int16"})], [8, 8, 8], "auto", False, 3)
    assert bank.modes == ["zscore"]
    x, truth = draw_patches(bank, torch.tensor([0]), [8, 8, 8], torch.Generator().manual_seed(0), 1.0, 2)
    assert truth.shape == (1, 1, 8, 8, 8) and truth.sum() > 0
    x_vol, _ = bank.batch(torch.tensor([0]), [8, 8, 8], torch.Generator().manual_seed(0), 1.0)  # as the segmenter
    critic = QualityCritic(QualityPredictor(3, 1, 1, depth=10, width=[4, 4, 8, 8], no_max_pool=True),
                           {"classes": ["bg", "a"], "image_size": [8, 8, 8], "spatial_dims": 3, "normalize": "auto"})
    assert torch.allclose(critic.prepare_image(x_vol, Batch(x_vol)), x, atol=1e-4)
    scorer = _scorer(resize=False)
    box = scorer.patch_box(Case("ct", raw), label)
    crop = scorer.prepare_image(Case("ct", raw, meta={"dtype": "int16"}), box)
    assert abs(float(crop.mean())) < 0.05 and abs(float(crop.std()) - 1) < 0.1  # the box normalised on its own


def test_fg_oversample_is_validated():
    with pytest.raises(ConfigError, match="data.fg_oversample"):
        from qgseg.config import load_config

        load_config(None, ["data.fg_oversample=1.5"])


def test_label_maps_shrink_before_they_become_channels():
    """Nearest resizing by indexing picks F.interpolate's voxels, so one-hot after shrinking equals the old
    one-hot-then-resize path exactly, without K full-size float channels of the volume."""
    lab = torch.from_numpy(np.random.default_rng(0).integers(0, 4, (2, 37, 50, 29)))
    ref = F.interpolate(lab[:, None].float(), size=(16, 96, 8), mode="nearest")[:, 0].long()
    assert torch.equal(resize_label(lab, (16, 96, 8)), ref)
    case = Case("v", np.random.rand(1, 37, 50, 29).astype(np.float32), lab[0].numpy())
    scorer = _scorer(resize=True)
    expected = resize_masks(label_to_fg(lab[0], 4)[None], scorer.image_size)
    assert torch.equal(scorer.prepare_mask(lab[0].numpy(), case), expected)


def _scorer(resize: bool) -> QualityScorer:
    model = QualityPredictor(3, 1, 3, depth=10, width=[4, 4, 8, 8], no_max_pool=True)
    meta = {"classes": ["bg", "a", "b", "c"], "image_size": [16, 16, 8], "spatial_dims": 3, "normalize": "zscore",
            "image_channels": 1, "resize": resize}
    return QualityScorer(model, meta)


def test_patch_predictor_scores_a_box_around_the_mask_not_the_resampled_volume():
    scorer = _scorer(resize=False)
    shape = (120, 100, 60)
    mask = np.zeros(shape, np.uint8)
    mask[70:76, 20:26, 40:43] = 2  # small: with its context, fits a patch at native resolution
    case = Case("big", np.random.default_rng(0).random((1, *shape), dtype=np.float32))
    box = scorer.patch_box(case, mask)
    assert [b.stop - b.start for b in box] == [16, 16, 8]  # the patch size: native resolution
    assert all(b.start <= lo and hi <= b.stop for b, (lo, hi) in zip(box, [(70, 76), (20, 26), (40, 43)]))
    mask[10:110, 5:95, 2:58] = 1  # large: the box grows with the patch's aspect, inside the volume
    box = scorer.patch_box(case, mask)
    sides = [b.stop - b.start for b in box]
    assert sides[0] == 120 and sides[1] == 100 and 0 <= box[2].start and box[2].stop <= 60
    assert scorer.prepare_image(case, box).shape == (1, 1, 16, 16, 8)
    assert scorer.prepare_mask(mask, case, box).shape == (1, 3, 16, 16, 8)
    dice = scorer.score(case, mask)
    assert dice.shape == (3,) and np.isfinite(dice).all()
    assert scorer.patch_box(case, np.zeros(shape, np.uint8)) == (slice(52, 68), slice(42, 58), slice(26, 34))
    assert _scorer(resize=True).patch_box(case, mask) is None  # whole-image predictors: unchanged


def test_guided_3d_path_end_to_end(tmp_path, monkeypatch):
    """3D demo data: a 3D predictor trained on patches, then mean teacher with quality weighting on
    foreground-oversampled patches, validated and tested on whole volumes with sliding windows."""
    import monai.inferers

    from qgseg.data.run_data import prepare_run_data
    from qgseg.pipeline import train_and_evaluate
    from qgseg.quality.scoring import load_quality_predictor
    from qgseg.quality.training import train_quality_predictor

    data = tiny_dataset(tmp_path / "d3", spatial_dims=3, size=(32, 32), depth=16, n_labeled=3, n_val=1, n_test=1,
                        n_unlabeled=2, num_classes=3)
    common = {"data__image_size": "[16,16,16]", "data__resize": "false", "data__fg_oversample": 0.5,
              "train__batch_size": 2, "quality__depth": 10, "quality__width": "[4,4,8,8]",
              "quality__masks_per_image": 1, "quality__epochs": 1, "quality__batch_size": 2,
              "quality__eval_real_networks": "false"}
    cfg = tiny_config(data, tmp_path, **common)
    # weak snapshots are skipped on patches, with a note; evaluated on boxes around the test cases' structures
    q = train_quality_predictor(cfg, tmp_path / "quality", data=prepare_run_data(cfg.data, cfg.output_dir))
    scorer = load_quality_predictor(q["checkpoint"])
    assert scorer.patches and scorer.spatial_dims == 3 and q["weak_snapshots"] == []
    assert 0 <= q["eval"]["synthetic"]["all"]["mae"] <= 1

    windows: list[tuple[int, ...]] = []
    real = monai.inferers.sliding_window_inference

    def counting(inputs, *args, **kwargs):
        windows.append(tuple(inputs.shape[2:]))
        return real(inputs, *args, **kwargs)

    monkeypatch.setattr(monai.inferers, "sliding_window_inference", counting)
    cfg = tiny_config(data, tmp_path, **common, ssl__method="mt", guidance__qw="true",
                      guidance__predictor=q["checkpoint"], ssl__unlabeled_batch_size=2, train__iterations=2,
                      data__unlabeled_split="test_unlabeled",  # nnU-Net layout: imagesTs
                      train__val_every=2)
    result = train_and_evaluate(cfg, tmp_path / "mtqw")
    # validation (1 case) and test (1 case) both predict whole volumes with sliding windows of the patch size
    assert len(windows) >= 2 and all(w == (32, 32, 16) for w in windows)
    assert 0.0 <= result["test"]["mean_foreground"]["dice"]["mean"] <= 1.0
    last = json.loads((tmp_path / "mtqw" / "train_history.json").read_text())["history"][-1]
    assert 0 <= last["guidance/q_pseudo"] <= 1 and 0 <= last["guidance/g_mae_val"] <= 1  # g scored patches + volumes
